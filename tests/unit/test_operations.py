"""What an operator gets from the template: a dashboard that shows every part, alarms that
reach a person and name their runbook, and security skips that each say why."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, get_args

from batch_core.batch_metrics import STATUS_METRICS
from batch_core.shard_run import ShardOutcome
from batchctl.template import FLEET_PATH, PROJECT_ROOT, WORKERS, load_template, resources_of_type

OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
TEMPLATES = (PROJECT_ROOT / "template.yaml", FLEET_PATH)  # the main stack and its workers'
KIND = "AWS::CloudWatch::Alarm"
RUNBOOK = re.compile(r"Runbook: docs/operations\.md#([a-z0-9-]+)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _dashboard() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    template = load_template()
    (dashboard,) = resources_of_type(template, "AWS::CloudWatch::Dashboard").values()
    body, variables = dashboard["DashboardBody"]["Fn::Sub"]
    # Every ${...} is a resource, its attribute, a pseudo parameter or a Sub variable.
    for reference in re.findall(r"\$\{([^}]+)\}", body):
        name = reference.split(".")[0]
        assert name in template["Resources"] or name in variables or name.startswith("AWS::"), (
            reference
        )
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))["widgets"]
    return template, widgets, variables


def _metrics_of(widgets: list[dict[str, Any]]) -> set[tuple[str, str]]:
    shown = set()
    for widget in widgets:
        for metric in widget.get("properties", {}).get("metrics", []):
            if isinstance(metric[0], str):
                shown.add((metric[0], metric[1]))
    return shown


def _references(body: str) -> set[str]:
    return {reference.split(".")[0] for reference in re.findall(r"\$\{([^}]+)\}", body)}


def test_the_dashboard_shows_every_part_of_the_pipeline() -> None:
    template, widgets, _ = _dashboard()
    shown = _metrics_of(widgets)
    for status_metric in STATUS_METRICS.values():  # batches by status
        assert ("OpenBatch", status_metric) in shown
    for worker_metric in ("RequestsSucceeded", "InputTokens", "OutputTokens", "GpuUtilization"):
        assert ("OpenBatch", worker_metric) in shown
    assert {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("ECS/ContainerInsights", "RunningTaskCount"),
        ("ECS/ContainerInsights", "DesiredTaskCount"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/ApiGateway", "4XXError"),
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/ApiGateway", "Latency"),
    } <= shown
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    referenced = _references(body)
    # Every queue (dead-letter queues included) and every function has its line.
    assert set(resources_of_type(template, "AWS::SQS::Queue")) <= referenced
    assert set(resources_of_type(template, "AWS::Serverless::Function")) <= referenced
    # ... and the alarms widget lists every alarm that pages a person.
    paging = {n for n, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
              if {"Ref": "AlarmTopic"} in a.get("AlarmActions", [])}  # fmt: skip
    assert paging and paging <= referenced


def test_the_dashboard_names_the_workers_the_nested_stack_outputs() -> None:
    _, _, variables = _dashboard()
    outputs = load_template(FLEET_PATH)["Outputs"]
    for name in ("WorkerClusterName", "WorkerServiceName"):
        condition, nested, none = variables[name]["Fn::If"]
        assert condition == "CreateWorkers" and none == "no-workers"
        stack, output = nested["Fn::GetAtt"]
        assert stack == WORKERS and output.startswith("Outputs.")
        assert output.removeprefix("Outputs.") in outputs, output


def test_the_metrics_it_reads_are_the_ones_the_code_sends() -> None:
    """Names in the OpenBatch namespace must be sent by the core or the worker: a renamed
    metric would leave a flat line on the dashboard and a silent alarm."""
    _, widgets, _ = _dashboard()
    sent = set(STATUS_METRICS.values())
    for path in [PROJECT_ROOT / "gpu_worker" / "observability.py",
                 PROJECT_ROOT / "functions" / "batch_core" / "batch_metrics.py",
                 *sorted((PROJECT_ROOT / "functions" / "handlers").glob("*.py"))]:  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "name":
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    sent.add(node.value.value)
                if isinstance(node.value, ast.JoinedStr):  # f"Shards_{run.outcome}"
                    sent.update(f"Shards_{outcome}" for outcome in get_args(ShardOutcome))
    read = {name for namespace, name in _metrics_of(widgets) if namespace == "OpenBatch"}
    alarms = [a for p in TEMPLATES for a in resources_of_type(load_template(p), KIND).values()]
    for alarm in alarms:
        if alarm.get("Namespace") == "OpenBatch":
            read.add(alarm["MetricName"])
        for query in alarm.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == "OpenBatch":
                read.add(metric["MetricName"])
    assert read and read <= sent, read - sent


def test_every_alarm_names_a_runbook_section_that_exists() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for path, least in zip(TEMPLATES, (10, 1), strict=True):
        alarms = resources_of_type(load_template(path), KIND)
        assert len(alarms) >= least, path
        _each_names_a_runbook(alarms, anchors)


def _each_names_a_runbook(alarms: dict[str, dict[str, Any]], anchors: set[str]) -> None:
    for name, alarm in alarms.items():
        found = RUNBOOK.search(alarm["AlarmDescription"])
        assert found, f"{name} names no runbook"
        assert found.group(1) in anchors, f"{name}: no section #{found.group(1)}"


def test_the_alarms_cover_what_needs_a_person() -> None:
    template = load_template()
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    paging = {n: a for n, a in alarms.items() if {"Ref": "AlarmTopic"} in a.get("AlarmActions", [])}
    text = json.dumps(paging)
    # Every dead-letter queue (the intake one through what the dead-intake function ends).
    for queue in resources_of_type(template, "AWS::SQS::Queue"):
        if "DeadLetter" in queue and queue != "IntakeDeadLetterQueue":
            assert json.dumps({"Fn::GetAtt": [queue, "QueueName"]}) in text, queue
    assert '"IntakeFailures"' in text
    assert '"BatchesFailed"' in text and '"BatchesExpired"' in text
    (age,) = [a for a in paging.values() if "ApproximateAgeOfOldestMessage" in json.dumps(a)]
    assert age["Threshold"] == {"Ref": "ShardQueueMaxAgeSeconds"}
    aged = {
        json.dumps(q["MetricStat"]["Metric"]["Dimensions"])
        for q in age["Metrics"]
        if "MetricStat" in q
    }
    assert {"UrgentShardQueue", "ShardQueue"} == {
        json.loads(d)[0]["Value"]["Fn::GetAtt"][0] for d in aged
    }
    assert '"WorkerErrors"' in text and '"5XXError"' in text
    throttled = {
        query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for query in paging["LambdaThrottlesAlarm"]["Metrics"]
        if "MetricStat" in query
    }
    assert throttled == set(resources_of_type(template, "AWS::Serverless::Function"))
    # The topic emails AlarmEmail only when one is given.
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_every_security_check_skipped_says_why() -> None:
    skipped = 0
    resources = [r for path in TEMPLATES for r in load_template(path)["Resources"].items()]
    for name, resource in resources:
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
            assert len(skip.get("comment", "")) >= 40, f"{name} skips {skip['id']} without why"
            skipped += 1
    assert skipped > 0
