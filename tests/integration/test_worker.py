"""The worker loop settles each message by the shard's outcome."""

from __future__ import annotations

import json

from batch_core.messaging import ShardTask
from batch_core.service import DroppedObject
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.worker import Worker
from tests.conftest import MODEL, chat_request


def queue_one_shard(stack: LocalStack) -> str:
    body = "".join(json.dumps(chat_request(f"r{i}")) + "\n" for i in range(4))
    stack.session.client("s3").put_object(
        Bucket=stack.bucket, Key="inbox/w.jsonl", Body=body.encode()
    )
    record = stack.service.ingest_dropped_object(DroppedObject(key="inbox/w.jsonl", etag="w"))
    assert record is not None and record.shards_total == 1
    return record.id


def test_a_finished_shard_deletes_its_message(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    worker = Worker(
        bare_stack.service, bare_stack.service.shard_queue, FakeEngine(MODEL), wait_seconds=0
    )
    assert worker.poll_once()
    assert bare_stack.service.shard_queue.receive(wait_seconds=0) == []
    record = bare_stack.service.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)


def test_a_stopping_worker_releases_the_rest_of_its_shard_at_once(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    worker = Worker(
        bare_stack.service, bare_stack.service.shard_queue, FakeEngine(MODEL), wait_seconds=0
    )
    worker.stop.set()  # e.g. SIGTERM: finish the current part, then let another worker go on
    assert worker.poll_once()
    (message,) = bare_stack.service.shard_queue.receive(wait_seconds=0)
    assert ShardTask.model_validate_json(message.body) == ShardTask(
        batch_id=batch_id, shard_index=0
    )
    record = bare_stack.service.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (3, 1)

    other = Worker(
        bare_stack.service, bare_stack.service.shard_queue, FakeEngine(MODEL), wait_seconds=0
    )
    bare_stack.service.shard_queue.release(message)
    assert other.poll_once()
    record = bare_stack.service.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)
