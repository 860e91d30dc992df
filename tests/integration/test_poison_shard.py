"""A shard that fails every delivery lands in the dead-letter queue and still ends its batch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from batch_core.messaging import ShardTask
from batch_core.protocol import EngineRequest, EngineResult
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, drop_requests, lines_of


class FailingEngine(FakeEngine):
    """Request r2 crashes the engine every time, the way a poisonous input crashes a host."""

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        for request in requests:
            if request.custom_id == "r2":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            yield self.answer(request)


@pytest.fixture
def workerless_stack() -> Iterator[LocalStack]:
    """Events routed as Lambda would (the dead-letter queue included); the test is the worker."""
    with LocalStack(None, served_models=[MODEL], shard_size=4, part_size=2) as stack:
        yield stack


def test_a_poison_shard_ends_with_shard_failed_lines_and_the_batch_completes(
    workerless_stack: LocalStack, tmp_path: Path
) -> None:
    stack = workerless_stack
    name = drop_requests(stack, tmp_path, 4, "poison")
    deadline = time.monotonic() + 30
    while (batch := stack.outbox_batch(name)) is None or batch.status != "in_progress":
        assert time.monotonic() < deadline, "intake did not finish"
        time.sleep(0.05)
    queue = stack.stages.shard_queue
    # Every delivery fails (maxReceiveCount is 3 in the template): the first writes r0 and r1
    # before it crashes on r2, the next ones crash on r2 at once.
    deliveries = 0
    while True:
        messages = queue.receive(wait_seconds=1)
        if not messages:
            break
        (message,) = messages
        deliveries += 1
        task = ShardTask.model_validate_json(message.body)
        with pytest.raises(RuntimeError):
            stack.stages.runner.process_shard(task, FailingEngine(MODEL), lease_seconds=0)
        queue.release(message)  # what the worker does before it exits
        assert deliveries <= 5, "the shard never reached the dead-letter queue"
    assert deliveries == 3

    final = stack.wait_for_outbox(name, timeout=60)  # the dead-letter consumer ends the shard
    paths = stack.download_outbox(name, tmp_path / "out")
    assert final.status == "completed"
    counts = final.request_counts
    assert (counts.total, counts.completed, counts.failed) == (4, 2, 2)
    output = lines_of(paths["output.jsonl"])
    errors = lines_of(paths["errors.jsonl"])
    assert sorted(line["custom_id"] for line in output + errors) == ["r0", "r1", "r2", "r3"]
    assert all(line["error"]["code"] == "shard_failed" for line in errors)
    assert all(line["response"] is None for line in errors)
