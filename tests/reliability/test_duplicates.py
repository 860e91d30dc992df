"""Duplicate and reordered events: one S3 event delivered five times (in any order with S3's
test event), every shard message delivered twice more, two workers on one shard at once,
finalize run twice: one batch, every result exactly once, counts exact."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batch_core.messaging import ShardTask
from batch_core.shard_run import ShardRun
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from handlers import finalize, validate
from tests.conftest import MODEL, chat_request
from tests.integration.test_handlers import CONTEXT, queued
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
ROUNDS = scale(2, 10)
REQUESTS = 30


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        None, served_models=[MODEL], route_events=False, shard_size=8, part_size=3
    ) as local:
        yield local


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": "r",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(m["Body"] for m in messages)
        ]
    }


def test_duplicated_and_reordered_events_change_nothing(stack: LocalStack) -> None:
    rng = random.Random(5)
    exact = duplicates = 0
    engine = FakeEngine(MODEL)
    for round_number in range(ROUNDS):
        key = f"inbox/dup{round_number}.jsonl"
        ids = [f"d{round_number}-{i}" for i in range(REQUESTS)]
        body = "".join(json.dumps(chat_request(i)) + "\n" for i in ids)
        stack.session.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body.encode())
        events = [m for m in queued(stack, "IntakeQueue")]
        created = [m for m in events if '"Records"' in m["Body"]]
        assert len(created) == 1
        deliveries = created * 5 + [m for m in events if "TestEvent" in m["Body"]]
        rng.shuffle(deliveries)
        for delivery in deliveries:  # one Lambda invocation each, as redeliveries arrive
            assert validate.handler(sqs_event([delivery]), CONTEXT) == {"batchItemFailures": []}
        duplicates += len(deliveries) - 1
        shard_messages = queued(stack, "ShardQueue")
        tasks = [ShardTask.model_validate_json(m["Body"]) for m in shard_messages]
        assert len({t.shard_index for t in tasks}) == len(tasks) == 4  # queued once: 30 / 8
        deliveries_of_shards = tasks * 3  # each shard message delivered twice more
        rng.shuffle(deliveries_of_shards)
        duplicates += len(tasks) * 2
        outcomes: list[ShardRun] = []
        lock = threading.Lock()

        def run(
            task: ShardTask, outcomes: list[ShardRun] = outcomes, lock: threading.Lock = lock
        ) -> None:
            result = stack.stages.runner.process_shard(task, engine, lease_seconds=60)
            with lock:
                outcomes.append(result)

        # Two workers at a time on whatever messages come next, often the same shard.
        for start in range(0, len(deliveries_of_shards), 2):
            pair = [
                threading.Thread(target=run, args=(task,))
                for task in deliveries_of_shards[start : start + 2]
            ]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join()
        assert sum(o.outcome == "done" for o in outcomes) == len(tasks)
        batch_id = tasks[0].batch_id
        # The tracker sees the batch done and asks for finalize; it is delivered twice.
        deadline = time.monotonic() + 60
        requests: list[dict[str, Any]] = []
        while not requests:
            assert time.monotonic() < deadline, "the tracker never asked for finalize"
            requests = queued(stack, "FinalizeQueue")
            time.sleep(0.2)
        for _ in range(2):
            finalize.handler(sqs_event(requests), CONTEXT)
        duplicates += 1
        first = stack.stages.batches.get_batch(batch_id)
        again = stack.stages.ending.finalize(batch_id)  # and once more, straight
        assert first is not None and again.model_dump() == first.model_dump()
        output = stack.stages.store.read(f"files/{first.output_file_id}").decode()
        got = sorted(json.loads(line)["custom_id"] for line in output.splitlines())
        if (
            first.status == "completed"
            and got == sorted(ids)
            and (first.request_total, first.request_completed, first.request_failed)
            == (REQUESTS, REQUESTS, 0)
        ):
            exact += 1
    record("duplicates", "rounds (S3 x5, shards x3, 2 workers, finalize x3)", ROUNDS)
    record("duplicates", "duplicate deliveries injected", duplicates)
    record("duplicates", "rounds exactly once, counts exact", f"{exact}/{ROUNDS}", exact == ROUNDS)
    assert exact == ROUNDS
