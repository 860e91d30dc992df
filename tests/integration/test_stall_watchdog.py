"""A worker whose engine hangs stops renewing its shard's lease, exits non-zero, and another
worker finishes the shard: every request once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core.messaging import ShardTask
from batch_core.shard_run import ShardRunner
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.stall_watchdog import EngineStalledError
from gpu_worker.worker import Worker
from tests.conftest import MODEL
from tests.integration.test_shard_recovery import written_ids
from tests.integration.test_worker import queue_one_shard
from tests.integration.test_worker_faults import (
    drop_batch,
    finish_with_survivor,
    moto_server_stack,
    record_of,
    start_worker,
    wait_for,
)

STALL_SECONDS = 0.5


@pytest.fixture
def server_stack() -> Iterator[LocalStack]:
    with moto_server_stack(shard_size=12, part_size=3) as stack:
        yield stack


def test_a_hung_engine_stops_the_heartbeat_and_another_worker_finishes_the_shard(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = queue_one_shard(bare_stack)  # 4 requests, parts of 3
    stages = bare_stack.stages
    renewals: list[float] = []
    renew = ShardRunner.renew_shard_lease

    def counted(self: ShardRunner, task: ShardTask, owner: str, seconds: float) -> bool:
        renewals.append(time.monotonic())
        return renew(self, task, owner, seconds)

    monkeypatch.setattr(ShardRunner, "renew_shard_lease", counted)
    hung = Worker(
        stages.runner,
        stages.shard_queue,
        # A part of 3 answers, slower than a heartbeat, then the GPU wedges.
        FakeEngine(MODEL, seconds_per_request=0.3, hang_after_requests=3),
        wait_seconds=0,
        visibility_seconds=2,  # heartbeat every 0.67 s
        stall_seconds=STALL_SECONDS,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            hung.run()
        except BaseException as error:
            failure.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=10)
    # Part of 3 written, then no progress: given up (a hung engine would hold it forever;
    # how soon is the watchdog unit test's, on a clock of its own).
    assert not runner.is_alive() and isinstance(failure[0], EngineStalledError)
    assert renewals, "the heartbeat renewed the lease while the engine worked"
    stalled_at = time.monotonic()
    time.sleep(2)  # three heartbeat intervals
    assert [t for t in renewals if t > stalled_at] == []

    record = stages.batches.get_batch(batch_id)
    assert record is not None and record.request_completed == 3
    # The message comes back when its visibility lapses, the lease just before it.
    survivor = Worker(stages.runner, stages.shard_queue, FakeEngine(MODEL), wait_seconds=5)
    assert survivor.poll_once()
    record = stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)
    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]


def test_a_worker_process_with_a_hung_engine_exits_non_zero_and_loses_nothing(
    server_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = drop_batch(server_stack, tmp_path)  # two shards of 12, parts of 3
    with monkeypatch.context() as patch:  # this worker only; the survivor's engine is sound
        patch.setenv("FAKE_HANG_AFTER_REQUESTS", "4")
        patch.setenv("ENGINE_STALL_SECONDS", "2")
        doomed = start_worker(visibility_seconds=3)
    try:
        wait_for(lambda: record_of(server_stack, name).request_completed >= 3, 60, "a part")
        output, _ = doomed.communicate(timeout=30)
        assert doomed.returncode == 1, output
        assert "engine stalled" in output
        finish_with_survivor(server_stack, name, tmp_path, visibility_seconds=3)
    finally:
        if doomed.poll() is None:
            doomed.kill()
