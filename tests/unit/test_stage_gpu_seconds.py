"""GPU-seconds per batch: each part carries the engine time since the previous one times the
engine's GPUs, counted on the batch with the part (once: a redelivered shard adds only what
it runs again); shards running on one engine at once share its time; the Batch shows the
seconds and their cost at the price it was created with."""

from __future__ import annotations

import pytest

from batch_core.gpu_time import EngineClock, ShardMeter
from batch_core.messaging import ShardTask
from batch_core.records import BatchRecord, PartCounts
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

STEP = 0.02
"""The fake engine's seconds per request: enough to measure, little enough to be quick."""


def planned(world: StageWorld, count: int) -> BatchRecord:
    """A running batch of one shard of `count` requests, parts of two results."""
    world.configure(results_part_size=2, prefix_slots=0)
    record = world.ingest("gpu.jsonl", [chat_request(f"r{i}", f"hi {i}") for i in range(count)])
    assert [t.shard_index for t in world.drain()] == [0]
    return record


def test_gpu_seconds_add_up_across_parts_times_the_engines_gpus(world: StageWorld) -> None:
    record = planned(world, 5)  # parts r0 r1 | r2 r3 | r4
    engine = FakeEngine(MODEL, seconds_per_request=STEP)

    run = world.stages.runner.process_shard(
        ShardTask(batch_id=record.id, shard_index=0), engine, gpus=2
    )

    assert run.outcome == "done"
    batch = world.batch(record.id)
    # Three parts, each its own share: the batch holds their sum, two GPUs for 5 requests.
    assert batch.gpu_seconds == pytest.approx(run.gpu_seconds, abs=1e-6)
    assert 2 * 5 * STEP <= batch.gpu_seconds < 2 * 5 * STEP + 1.0
    shown = batch.to_batch()
    assert shown.gpu_seconds == pytest.approx(batch.gpu_seconds, abs=1e-3)
    assert batch.gpu_hourly_price > 0
    assert shown.estimated_cost == round(batch.gpu_seconds / 3600 * batch.gpu_hourly_price, 6)


def test_a_redelivered_shard_does_not_count_its_gpu_seconds_twice(world: StageWorld) -> None:
    record = planned(world, 5)
    task = ShardTask(batch_id=record.id, shard_index=0)
    engine = FakeEngine(MODEL, seconds_per_request=STEP)

    first = world.stages.runner.process_shard(task, engine, should_stop=lambda: True)
    after_first = world.batch(record.id).gpu_seconds
    second = world.stages.runner.process_shard(task, engine)
    again = world.stages.runner.process_shard(task, engine)  # a duplicated message

    assert (first.outcome, second.outcome, again.outcome) == ("interrupted", "done", "skipped")
    assert after_first == pytest.approx(first.gpu_seconds, abs=1e-6) and after_first > 0
    batch = world.batch(record.id)
    assert batch.gpu_seconds == pytest.approx(first.gpu_seconds + second.gpu_seconds, abs=1e-6)
    # A part committed again (a worker that crashed after its commit, redelivered) adds nothing.
    recounted = world.table.shards.commit_part(
        record.id, 0, part_index=0, counts=PartCounts(completed=2, gpu_seconds=100.0)
    )
    assert not recounted
    assert world.batch(record.id).gpu_seconds == pytest.approx(batch.gpu_seconds, abs=1e-6)


def test_shards_on_one_engine_at_once_share_its_time() -> None:
    now = [0.0]
    clock = EngineClock(gpus=2, clock=lambda: now[0])
    first = ShardMeter(clock)
    now[0] = 10.0  # alone for 10 s: 20 GPU-seconds
    second = ShardMeter(clock)
    now[0] = 30.0  # together for 20 s: 20 each
    first_share = first.take()
    first.close()
    now[0] = 35.0  # the second alone again for 5 s
    second_share = second.take()
    assert first_share == pytest.approx(40.0) and second_share == pytest.approx(30.0)
    assert first.take() == 0.0  # after its close no more time is its
    second.close()
    now[0] = 50.0  # idle: nobody's
    assert ShardMeter(clock).take() == 0.0
    # The shares add up to the engine's busy time (35 s) times its GPUs, never more.
    assert first_share + second_share == pytest.approx(35.0 * 2)
