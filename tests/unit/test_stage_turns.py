"""Turns over a bare moto world: the next held shard let in as one settles (once, whoever
else lets one in), to the batch's model's queues; the first tier by slack; the move to the
urgent tier as a deadline nears; held shards a crash kept out; the deadline pressure; the
at-risk check."""

from __future__ import annotations

from typing import Any

from batch_core.records import BatchRecord, ShardRecord
from tests.conftest import MODEL
from tests.stage_world import RecordingEvents, StageWorld


def held(world: StageWorld, batch_id: str = "batch_t", **fields: Any) -> BatchRecord:
    """A running batch of 3 shards, 1 of them let in so far."""
    values: dict[str, Any] = {
        "status": "in_progress",
        "shards_total": 3,
        "shards_pending": 3,
        "shards_released": 1,
    }
    return world.store_batch(batch_id, **{**values, **fields})


def test_the_next_held_shard_is_let_in_once_and_no_further_than_the_last(
    world: StageWorld,
) -> None:
    turns = world.stages.turns
    record = held(world)

    assert turns.let_next_shard_in(record) == 1
    assert [t.shard_index for t in world.drain()] == [1]
    assert world.batch(record.id).shards_released == 2

    assert turns.let_next_shard_in(world.batch(record.id), count=5) == 1  # only shard 2 is left
    assert [t.shard_index for t in world.drain()] == [2]
    assert turns.let_next_shard_in(world.batch(record.id)) == 0
    assert world.drain() == []


def test_a_stale_record_reads_again_and_lets_in_the_next_shard(world: StageWorld) -> None:
    turns = world.stages.turns
    stale = held(world)
    turns.let_next_shard_in(stale)  # another worker let shard 1 in meanwhile
    world.drain()

    assert turns.let_next_shard_in(stale) == 1

    assert world.batch(stale.id).shards_released == 3
    # The copy of shard 1 sent before the count was refused is skipped by the worker.
    assert [t.shard_index for t in world.drain()] == [1, 2]


def test_a_batch_that_is_not_running_lets_nothing_in(world: StageWorld) -> None:
    record = held(world, status="cancelling")

    assert world.stages.turns.let_next_shard_in(record) == 0
    assert world.drain() == []
    assert world.stages.turns.let_next_shard_in(None) == 0


def test_a_registered_models_shards_go_to_its_own_queue(world: StageWorld) -> None:
    queue = world.register("fleet-model", fleet="f1")
    record = held(world, model="fleet-model")

    world.stages.turns.let_next_shard_in(record)

    assert world.drain() == []
    assert [t.shard_index for t in world.drain(queue)] == [1]


def test_the_first_tier_follows_the_slack(world: StageWorld) -> None:
    turns, now = world.stages.turns, int(world.clock())

    def tier(window_hours: int, work_tokens: int = 1000) -> str:
        record = held(
            world, f"batch_{window_hours}_{work_tokens}", expires_at=now + window_hours * 3600
        )
        return turns.first_tier(record, work_tokens, MODEL)

    assert (tier(1), tier(24), tier(72)) == ("urgent", "normal", "bulk")
    # 72 h of window less 30 h of work at 2,000 tokens a second: 42 h of slack.
    assert tier(72, 30 * 3600 * 2000) == "normal"


def test_a_batch_nearing_its_deadline_moves_its_waiting_shards_to_the_urgent_tier(
    world: StageWorld,
) -> None:
    soon = int(world.clock()) + 3600
    record = held(world, expires_at=soon, shards_released=2)
    world.table.shards.put_shards(
        record.id, [ShardRecord(batch_id=record.id, index=i, request_count=1) for i in range(3)]
    )
    world.table.shards.settle_shard(record.id, 0)
    turns = world.stages.turns

    assert turns.escalate_near_deadlines() == [record.id]

    assert world.batch(record.id).tier == "urgent"
    assert [t.shard_index for t in world.drain("urgent-shards")] == [1]  # not done, let in
    assert turns.escalate_near_deadlines() == []  # already urgent


def test_held_shards_a_crash_kept_out_are_topped_up(world: StageWorld) -> None:
    world.configure(shards_ahead=2)
    record = held(world)  # one let in of the two it may have queued

    assert world.stages.turns.top_up_shards() == {record.id: 1}

    assert [t.shard_index for t in world.drain()] == [1]
    assert world.stages.turns.top_up_shards() == {}


def test_the_pressure_is_the_work_due_within_the_hour_over_the_fleets_hour(
    world: StageWorld,
) -> None:
    now = int(world.clock())
    # 3,600,000 tokens at the default 2,000 tokens a second: half an hour of the fleet.
    half_hour = {"estimated_tokens": 3_600_000, "request_total": 10, "expires_at": now + 1800}
    held(world, "batch_1", model=MODEL, **half_hour)
    held(world, "batch_2", model=MODEL, **{**half_hour, "request_completed": 5})
    held(world, "batch_3", model=MODEL, **{**half_hour, "expires_at": now + 7200})  # later

    assert world.stages.turns.deadline_pressures(3600) == {MODEL: 0.75}


def test_a_batch_that_cannot_make_its_deadline_is_announced_once(world: StageWorld) -> None:
    now = int(world.clock())
    doomed = held(world, "batch_doomed", expires_at=now + 60, estimated_tokens=10**6)
    held(world, "batch_fine", expires_at=now + 86400, estimated_tokens=10**6)

    assert world.stages.turns.flag_at_risk() == [doomed.id]
    assert world.stages.turns.flag_at_risk() == []

    assert world.batch(doomed.id).at_risk_at == now
    assert world.events.of(RecordingEvents.AT_RISK) == [(doomed.id, "in_progress")]
