"""The worker's task role allows exactly what a worker does: every AWS call a worker makes
while it runs shards (recorded at botocore) is allowed by the WorkerTaskRole of the main
stack's workers (infra/worker-fleet.yaml, nested), and that role names no API keys, files or
inbox objects."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3

from batch_core import wiring
from batch_core.settings import get_settings
from batchctl.local import ACCOUNT, REGION, LocalStack
from batchctl.template import nested_fleet, sam_transformed
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.worker import Worker
from tests.conftest import MODEL, chat_request, drop_requests, write_jsonl
from tests.iam_policy import Arns, Call, Policy, role_policy


def worker_role(stack: LocalStack) -> tuple[Policy, Arns]:
    """WorkerTaskRole as deployed: the nested workers' stack, given what the main template
    (after the SAM transform) passes it, resolved to the local stack's own ids and ARNs."""
    template = sam_transformed()
    assert stack.resolver is not None
    fleet, nested = nested_fleet(template, stack.resolver)
    assert not nested.condition("Standalone")
    policy = role_policy(fleet, "WorkerTaskRole", nested.resolve, nested.condition)
    return policy, Arns.of_template(template, stack.physical_id, REGION, ACCOUNT)


def test_every_call_a_worker_makes_is_allowed_by_its_role(tmp_path: Path) -> None:
    # One shard let in at a time: the worker lets each batch's next shard in as one settles.
    with LocalStack(
        None, served_models=[MODEL], shard_size=4, part_size=3, shards_ahead=1
    ) as stack:
        calls: list[Call] = []
        lock = threading.Lock()

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            with lock:
                calls.append(Call(model.service_model.endpoint_prefix, model.name, dict(params)))

        session = boto3.session.Session(region_name="us-east-1")
        session.events.register("provide-client-params.*.*", record)
        stages = wiring.build_stages(get_settings(), session)
        worker = Worker(stages.runner, stages.shard_queue, FakeEngine(MODEL), wait_seconds=1)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        name = drop_requests(stack, tmp_path, 10, "perm")
        assert stack.wait_for_outbox(name, timeout=60).status == "completed"
        # Repeats, and results reused across batches (opted in): the cache's calls as well.
        same = [chat_request(f"d{i}", f"question {i % 3}") for i in range(6)]
        for line in same:
            line["body"]["temperature"] = 0
        path = write_jsonl(tmp_path / "same.jsonl", same)
        for run in ("first", "again"):
            reused = stack.drop(path, f"same-{run}", metadata={"reuse-results": "true"})
            assert stack.wait_for_outbox(reused, timeout=60).status == "completed"
        worker.stop.set()
        thread.join(timeout=30)
        policy, arns = worker_role(stack)
    services = {call.service for call in calls}
    assert {"s3", "dynamodb", "sqs"} <= services, services
    assert any(call.operation == "SendMessageBatch" for call in calls)  # next shards let in
    assert {"BatchGetItem", "BatchWriteItem"} <= {call.operation for call in calls}
    refused = sorted({reason for call in calls for reason in policy.refusals(call, arns)})
    assert refused == []


def test_the_role_refuses_what_a_worker_must_never_touch() -> None:
    with LocalStack(None, served_models=[MODEL], route_events=False) as stack:
        policy, arns = worker_role(stack)
        objects = f"arn:aws:s3:::{stack.bucket}"
        table = arns.table(stack.physical_id("BatchTable"))
    assert not policy.allowed("dynamodb:UpdateItem", table, dynamodb__LeadingKeys="APIKEY#abc")
    assert not policy.allowed("dynamodb:GetItem", table, dynamodb__LeadingKeys="FILE#file-1")
    assert not policy.allowed("s3:PutObject", f"{objects}/files/file-1")
    assert not policy.allowed("s3:PutObject", f"{objects}/inbox/x.jsonl")
    assert not policy.allowed("s3:PutObject", f"{objects}/batches/b/shards/00000.jsonl")
    assert not policy.allowed("s3:GetObject", f"{objects}/files/file-1")
    assert not policy.allowed("s3:ListBucket", objects, s3__prefix="files/")
    assert policy.allowed("s3:PutObject", f"{objects}/batches/b/results/0/part-00000.jsonl")
    assert policy.allowed(
        "s3:PutObject", f"{objects}/batches/b/index/lines/00000/part-00000.0000.1-2"
    )
    assert not policy.allowed("s3:PutObject", f"{objects}/batches/b/index/ids/000-00000")
    assert policy.allowed("dynamodb:UpdateItem", table, dynamodb__LeadingKeys="BATCH#b")
    assert policy.allowed("dynamodb:BatchGetItem", table, dynamodb__LeadingKeys="REUSE#0a1b")
    assert not policy.allowed("dynamodb:BatchGetItem", table, dynamodb__LeadingKeys="APIKEY#a")
    assert not policy.allowed("dynamodb:BatchWriteItem", table, dynamodb__LeadingKeys="BATCH#b")
    assert policy.allowed("dynamodb:Query", table, dynamodb__LeadingKeys="HELD#acme")
    assert policy.allowed("dynamodb:DeleteItem", table, dynamodb__LeadingKeys="HELD#acme")
    assert not policy.allowed("dynamodb:PutItem", table, dynamodb__LeadingKeys="HELD#acme")
    assert not policy.allowed("dynamodb:Query", table, dynamodb__LeadingKeys="TENANT#acme")
