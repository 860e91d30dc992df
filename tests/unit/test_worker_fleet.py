"""infra/worker-fleet.yaml against the main template: what it imports is exported, its queues
are named as the main stack's functions may send to, its workers get the same rights and
settings as the main stack's, and its registry entry carries what the custom resource reads."""

from __future__ import annotations

import fnmatch
from typing import Any

from batchctl.template import PROJECT_ROOT, load_template, resources_of_type
from handlers.model_registry import ServedModelProperties

FLEET = PROJECT_ROOT / "infra" / "worker-fleet.yaml"


def walk(node: Any) -> list[Any]:
    """Every dict and list inside `node`."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += walk(child)
    return found


def imported_names(template: dict[str, Any]) -> set[str]:
    names = set()
    for node in walk(template):
        if isinstance(node, dict) and "Fn::ImportValue" in node:
            value = node["Fn::ImportValue"]
            names.add(value["Fn::Sub"] if isinstance(value, dict) else value)
    return names


def test_the_fleet_passes_cfn_lint() -> None:
    from cfnlint.api import lint_file

    assert [str(match) for match in lint_file(FLEET)] == []


def test_what_the_fleet_imports_the_main_stack_exports() -> None:
    main, fleet = load_template(), load_template(FLEET)
    exports = {
        output["Export"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", "${MainStackName}")
        for output in main["Outputs"].values()
        if "Export" in output
    }
    imports = imported_names(fleet)
    assert imports, "the fleet imports nothing"
    assert imports <= exports, imports - exports


def test_the_fleets_queues_are_the_ones_the_main_functions_may_send_to() -> None:
    main, fleet = load_template(), load_template(FLEET)
    queues = resources_of_type(fleet, "AWS::SQS::Queue")
    assert set(queues) == {"UrgentShardQueue", "ShardQueue", "BulkShardQueue"}
    names = [q["QueueName"]["Fn::Sub"].replace("${MainStackName}", "main") for q in queues.values()]
    functions = resources_of_type(main, "AWS::Serverless::Function")
    for function in ("ValidateFunction", "ExpireFunction", "DeadShardFunction"):
        patterns = [
            p["SQSSendMessagePolicy"]["QueueName"]["Fn::Sub"].replace("${AWS::StackName}", "main")
            for p in functions[function]["Policies"]
            if isinstance(p, dict)
            and "SQSSendMessagePolicy" in p
            and isinstance(p["SQSSendMessagePolicy"]["QueueName"], dict)
            and "Fn::Sub" in p["SQSSendMessagePolicy"]["QueueName"]
        ]
        for name in names:
            assert any(fnmatch.fnmatchcase(name, p) for p in patterns), (function, name)
    for queue in queues.values():  # poison shards end in the main stack's dead-letter queue
        target = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::ImportValue"]["Fn::Sub"]
        assert target == "${MainStackName}-ShardDeadLetterQueueArn"


def _actions(template: dict[str, Any]) -> list[set[str]]:
    (policy,) = template["Resources"]["WorkerTaskRole"]["Properties"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    return [{s["Action"]} if isinstance(s["Action"], str) else set(s["Action"]) for s in statements]


def test_the_fleets_workers_have_the_main_workers_rights_and_settings() -> None:
    main, fleet = load_template(), load_template(FLEET)
    assert _actions(fleet) == _actions(main)

    def container(template: dict[str, Any]) -> dict[str, Any]:
        (task,) = resources_of_type(template, "AWS::ECS::TaskDefinition").values()
        (only,) = task["ContainerDefinitions"]
        return only

    def names(template: dict[str, Any]) -> set[str]:
        return {variable["Name"] for variable in container(template)["Environment"]}

    assert names(fleet) == names(main)
    # Its own queues, not the main stack's.
    queues = {
        v["Name"]: v["Value"] for v in container(fleet)["Environment"] if "QUEUE" in v["Name"]
    }
    assert queues == {
        "SHARD_QUEUE_URL": {"Ref": "ShardQueue"},
        "URGENT_SHARD_QUEUE_URL": {"Ref": "UrgentShardQueue"},
        "BULK_SHARD_QUEUE_URL": {"Ref": "BulkShardQueue"},
    }
    assert {"Ref": "MaxWorkers"} in walk(fleet["Resources"]["WorkerScalableTarget"])


def test_the_registration_passes_what_the_custom_resource_reads() -> None:
    fleet = load_template(FLEET)
    registration = fleet["Resources"]["ModelRegistration"]
    assert registration["Type"] == "Custom::ServedModel"
    assert registration["DependsOn"] == "WorkerService"  # removed before its workers go
    passed = set(registration["Properties"]) - {"ServiceToken"}
    assert passed == set(ServedModelProperties.model_fields)


def test_the_fleet_scales_on_its_own_models_deadline_pressure() -> None:
    fleet = load_template(FLEET)
    alarm = fleet["Resources"]["WorkerDeadlineScaleOutAlarm"]["Properties"]
    assert alarm["MetricName"] == "DeadlinePressure"
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    # The name the expire function sends per model: the registry entry's (the served name).
    assert dimensions["model"] == fleet["Resources"]["ModelRegistration"]["Properties"]["Name"]
    assert alarm["AlarmActions"] == [{"Ref": "WorkerDeadlineScaleOutPolicy"}]
