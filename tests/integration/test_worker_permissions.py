"""The worker's task role allows exactly what a worker does: every AWS call a worker makes
while it runs shards (recorded at botocore) is allowed by the template's WorkerTaskRole, and
that role names no API keys, files or inbox objects."""

from __future__ import annotations

import fnmatch
import threading
from pathlib import Path
from typing import Any

import boto3

from batch_core import wiring
from batch_core.settings import get_settings
from batchctl.local import LocalStack
from batchctl.template import load_template
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.worker import Worker
from tests.conftest import MODEL, drop_requests

Call = tuple[str, str, dict[str, Any]]


def worker_statements() -> list[dict[str, Any]]:
    role = load_template()["Resources"]["WorkerTaskRole"]["Properties"]
    (policy,) = role["Policies"]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def allowed(action: str, resource: str, leading_key: str | None = None) -> bool:
    for statement in worker_statements():
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        if action not in actions:
            continue
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        patterns = [
            r["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${DataBucket}", "bucket")
            if isinstance(r, dict) and "Fn::Sub" in r
            else "table"
            if isinstance(r, dict) and "Fn::GetAtt" in r
            else str(r)
            for r in resources
        ]
        if not any(fnmatch.fnmatchcase(resource, p) for p in patterns):
            continue
        condition = statement.get("Condition", {})
        keys = condition.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
        if keys and not (leading_key and any(fnmatch.fnmatchcase(leading_key, k) for k in keys)):
            continue
        prefixes = condition.get("StringLike", {}).get("s3:prefix")
        if prefixes and not any(fnmatch.fnmatchcase(leading_key or "", p) for p in prefixes):
            continue
        return True
    return False


def check(call: Call) -> str | None:
    """Why the role would refuse `call`; None when it is allowed."""
    service, operation, params = call
    if service == "s3":
        key = f"arn:aws:s3:::bucket/{params.get('Key', '')}"
        action = {"GetObject": "s3:GetObject", "PutObject": "s3:PutObject"}.get(operation)
        if operation == "ListObjectsV2":
            ok = allowed("s3:ListBucket", "arn:aws:s3:::bucket", params.get("Prefix", ""))
        else:
            ok = action is not None and allowed(action, key)
        return None if ok else f"s3 {operation} {params.get('Key') or params.get('Prefix')}"
    if service == "dynamodb":
        items: list[tuple[str, dict[str, Any]]] = []
        if operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (kind, body), *_ = entry.items()
                items.append(
                    ({"ConditionCheck": "ConditionCheckItem"}.get(kind, f"{kind}Item"), body)
                )
        else:
            items.append((operation, params))
        for action, body in items:
            pk = body["Key"]["pk"]["S"]
            if not allowed(f"dynamodb:{action}", "table", pk):
                return f"dynamodb {action} {pk}"
        return None
    if service == "sqs":
        # The queue the call names (a local queue is named <stack>-<logical name>).
        queue = str(params.get("QueueUrl", "")).rsplit("/", 1)[-1].split("-")[-1]
        action = {"SendMessageBatch": "SendMessage"}.get(operation, operation)  # IAM's name
        ok = any(
            f"sqs:{action}" in statement["Action"]
            and {"Fn::GetAtt": [queue, "Arn"]}
            in (r if isinstance(r := statement["Resource"], list) else [r])
            for statement in worker_statements()
        )
        return None if ok else f"sqs {operation} on {queue}"
    return f"{service} {operation}: the role has no statement for this service"


def test_every_call_a_worker_makes_is_allowed_by_its_role(tmp_path: Path) -> None:
    # One shard let in at a time: the worker lets each batch's next shard in as one settles.
    with LocalStack(
        None, served_models=[MODEL], shard_size=4, part_size=3, shards_ahead=1
    ) as stack:
        calls: list[Call] = []
        lock = threading.Lock()

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            with lock:
                calls.append((model.service_model.endpoint_prefix, model.name, params))

        session = boto3.session.Session(region_name="us-east-1")
        session.events.register("provide-client-params.*.*", record)
        service = wiring.build_service(get_settings(), session)
        worker = Worker(service, service.shard_queue, FakeEngine(MODEL), wait_seconds=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        name = drop_requests(stack, tmp_path, 10, "perm")
        assert stack.wait_for_outbox(name, timeout=60).status == "completed"
        worker.stop.set()
        thread.join(timeout=30)
    services = {call[0] for call in calls}
    assert {"s3", "dynamodb", "sqs"} <= services, services
    assert any(call[1] == "SendMessageBatch" for call in calls)  # the next shards let in
    refused = sorted({reason for call in calls if (reason := check(call)) is not None})
    assert refused == []


def test_the_role_refuses_what_a_worker_must_never_touch() -> None:
    assert not allowed("dynamodb:UpdateItem", "table", "APIKEY#abc")
    assert not allowed("dynamodb:GetItem", "table", "FILE#file-1")
    assert not allowed("s3:PutObject", "arn:aws:s3:::bucket/files/file-1")
    assert not allowed("s3:PutObject", "arn:aws:s3:::bucket/inbox/x.jsonl")
    assert not allowed("s3:PutObject", "arn:aws:s3:::bucket/batches/b/shards/00000.jsonl")
    assert not allowed("s3:GetObject", "arn:aws:s3:::bucket/files/file-1")
    assert allowed("s3:PutObject", "arn:aws:s3:::bucket/batches/b/results/0/part-00000.jsonl")
