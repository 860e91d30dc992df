"""The worker loop settles each message by the shard's outcome."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from batch_core.intake_jobs import DroppedObject
from batch_core.messaging import ShardTask
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.worker import Worker
from tests.conftest import MODEL, chat_request


def queue_one_shard(stack: LocalStack, name: str = "w") -> str:
    body = "".join(json.dumps(chat_request(f"r{i}")) + "\n" for i in range(4))
    key = f"inbox/{name}.jsonl"
    stack.session.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body.encode())
    record = stack.stages.intake.ingest_dropped_object(DroppedObject(key=key, etag=name))
    assert record is not None and record.shards_total == 1
    return record.id


def test_a_finished_shard_deletes_its_message(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    worker = Worker(
        bare_stack.stages.runner, bare_stack.stages.shard_queue, FakeEngine(MODEL), wait_seconds=0
    )
    assert worker.poll_once()
    assert bare_stack.stages.shard_queue.receive(wait_seconds=0) == []
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)


def test_a_stopping_worker_releases_the_rest_of_its_shard_at_once(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    stop = threading.Event()

    class SignalledEngine(FakeEngine):
        """SIGTERM arrives while the shard runs: finish the current part, then let go."""

        def run(self, requests: Any) -> Any:
            for result in super().run(requests):
                stop.set()
                yield result

    worker = Worker(
        bare_stack.stages.runner,
        bare_stack.stages.shard_queue,
        SignalledEngine(MODEL),
        wait_seconds=0,
        stop=stop,
    )
    assert worker.poll_once()
    (message,) = bare_stack.stages.shard_queue.receive(wait_seconds=0)
    assert ShardTask.model_validate_json(message.body) == ShardTask(
        batch_id=batch_id, shard_index=0
    )
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (3, 1)

    other = Worker(
        bare_stack.stages.runner, bare_stack.stages.shard_queue, FakeEngine(MODEL), wait_seconds=0
    )
    bare_stack.stages.shard_queue.release(message)
    assert other.poll_once()
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)


def test_the_heartbeat_keeps_a_running_shard_hidden_from_other_workers(
    bare_stack: LocalStack,
) -> None:
    batch_id = queue_one_shard(bare_stack)
    queue = bare_stack.stages.shard_queue
    seen_by_others: list[int] = []

    class SlowEngine(FakeEngine):
        """Takes three visibility timeouts; meanwhile another worker looks at the queue."""

        def run(self, requests: Any) -> Any:
            for result in super().run(requests):
                time.sleep(1.6)
                seen_by_others.append(len(queue.receive(wait_seconds=0)))
                yield result

    worker = Worker(
        bare_stack.stages.runner, queue, SlowEngine(MODEL), wait_seconds=0, visibility_seconds=2
    )
    assert worker.poll_once()
    # 6.4 s of work on a 2 s visibility timeout (a 1 s one left a heartbeat 0.3 s of slack,
    # which a loaded CI machine sometimes missed).
    assert seen_by_others == [0, 0, 0, 0]
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)
    assert queue.receive(wait_seconds=0) == []  # settled: the message is gone


def test_a_failing_engine_releases_the_shard_and_stops_the_worker(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    queue = bare_stack.stages.shard_queue

    class DeadEngine(FakeEngine):
        def run(self, requests: Any) -> Any:
            raise RuntimeError("engine core died")
            yield  # pragma: no cover - makes this a generator

    worker = Worker(
        bare_stack.stages.runner, queue, DeadEngine(MODEL), wait_seconds=0, visibility_seconds=60
    )
    with pytest.raises(RuntimeError, match="engine core died"):
        worker.run()
    (message,) = queue.receive(wait_seconds=0)  # released at once, not after 60 s
    assert ShardTask.model_validate_json(message.body).batch_id == batch_id


def test_a_loop_takes_a_shard_only_while_the_engine_has_room(bare_stack: LocalStack) -> None:
    batch_id = queue_one_shard(bare_stack)
    queue = bare_stack.stages.shard_queue
    room = threading.Event()
    asked = threading.Event()

    class FullEngine(FakeEngine):
        """Busy with other shards until `room` is set."""

        def has_room(self) -> bool:
            asked.set()
            return room.is_set()

    worker = Worker(bare_stack.stages.runner, queue, FullEngine(MODEL), wait_seconds=0)
    loop = threading.Thread(target=worker.run, kwargs={"idle_exit_seconds": 1.0})
    loop.start()
    assert asked.wait(5)
    time.sleep(1.5)  # longer than the idle exit: waiting for room is not idleness
    assert loop.is_alive()
    # The shard stayed on the queue for any worker with room to take.
    visible = int(
        bare_stack.session.client("sqs").get_queue_attributes(
            QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    assert visible == 1
    room.set()
    loop.join(30)
    assert not loop.is_alive()
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)


def test_a_worker_counts_its_engines_gpus_in_the_batchs_gpu_seconds(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor-parallel engine of 4 GPUs costs 4 GPU-seconds a second (GPUS_PER_ENGINE
    children pass their group's size): the worker hands its engine's GPUs to the runner, which
    multiplies the engine time by them (`test_stage_gpu_seconds`, on a clock of its own)."""
    runner = bare_stack.stages.runner
    given: list[int] = []
    run_shard = runner.process_shard

    def spy(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs["gpus"])
        return run_shard(*args, **kwargs)

    monkeypatch.setattr(runner, "process_shard", spy)
    batch_id = queue_one_shard(bare_stack, "gpus")
    worker = Worker(
        runner,
        bare_stack.stages.shard_queue,
        FakeEngine(MODEL, seconds_per_request=0.01),
        wait_seconds=0,
        gpus=4,
    )
    assert worker.poll_once()
    assert given == [4]
    record = bare_stack.stages.batches.get_batch(batch_id)
    assert record is not None and record.to_batch().model_dump()["gpu_seconds"] > 0
