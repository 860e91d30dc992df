"""How a batch ends, over a bare moto world: each ending kind (completed, cancelled, expired)
with its error lines and files; a move answers the batch as it left it; an early end waits
for a live lease, the stuck backstop does not; a dead shard's requests get their line."""

from __future__ import annotations

import pytest

from batch_core.ending import CANCELLED, COMPLETED, EXPIRED
from batch_core.errors import ConflictError
from batch_core.messaging import ShardTask
from batch_core.records import BatchRecord
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import RecordingEvents, StageWorld

STATUS = RecordingEvents.DETAIL_TYPE


def two_shards(world: StageWorld) -> BatchRecord:
    """A running batch of two shards (r0 r1 | r2 r3), the first of them run."""
    world.configure(max_requests_per_shard=2, prefix_slots=0)
    record = world.ingest("two.jsonl", [chat_request(f"r{i}", f"hi {i}") for i in range(4)])
    first, _ = world.drain()
    world.stages.runner.process_shard(first, FakeEngine(MODEL))
    return record


def error_codes(world: StageWorld, record: BatchRecord) -> dict[str, str]:
    """custom_id -> error code of each line of the batch's error file."""
    return {
        line["custom_id"]: line["error"]["code"] for line in world.file_lines(record.error_file_id)
    }


def test_a_completed_batch_gets_its_output_and_error_files_and_tells_the_tracker(
    world: StageWorld,
) -> None:
    lines = [chat_request("ok"), chat_request("long", " ".join(["w"] * 100))]
    record = world.ingest("done.jsonl", lines)
    world.run_queued(FakeEngine(MODEL, max_model_len=64))

    ended = world.stages.ending.finalize_for_tracker(record.id, "token-1")

    assert (ended.status, ended.completed_at) == ("completed", int(world.clock()))
    assert [line["custom_id"] for line in world.file_lines(ended.output_file_id)] == ["ok"]
    (error,) = world.file_lines(ended.error_file_id)
    assert (error["custom_id"], error["response"]["status_code"]) == ("long", 400)
    assert world.tracker.reported == [("token-1", {"batch_id": record.id, "status": "completed"})]
    assert world.events.of(STATUS)[-1] == (record.id, "completed")
    # It left the index of batches that can expire.
    assert world.table.batches.overdue_batch_ids(int(world.clock()) + 10**7) == []
    # Finalizing again gives the same batch and files.
    assert world.stages.ending.finalize(record.id) == world.batch(record.id)


def test_a_cancelled_batch_keeps_what_ran_and_cancels_the_rest(world: StageWorld) -> None:
    record = two_shards(world)

    cancelling = world.stages.ending.cancel(record.id)
    assert (cancelling.status, cancelling.cancelling_at) == ("cancelling", int(world.clock()))
    ended = world.stages.ending.finalize(record.id)

    assert ended.status == "cancelled"
    outputs = [line["custom_id"] for line in world.file_lines(ended.output_file_id)]
    assert sorted(outputs) == ["r0", "r1"]
    assert error_codes(world, ended) == {"r2": "batch_cancelled", "r3": "batch_cancelled"}
    assert all(line["response"] is None for line in world.file_lines(ended.error_file_id))
    assert (ended.request_completed, ended.request_failed) == (2, 2)


def test_an_expired_batch_ends_expired_with_a_line_for_each_request_that_never_ran(
    world: StageWorld,
) -> None:
    record = two_shards(world)

    finalizing = world.stages.ending.expire(record.id)
    assert (finalizing.status, finalizing.ending) == ("finalizing", "expired")
    ended = world.stages.ending.finalize(record.id)

    assert ended.status == "expired" and ended.expired_at == int(world.clock())
    assert error_codes(world, ended) == {"r2": "batch_expired", "r3": "batch_expired"}
    assert world.events.of(STATUS)[-1] == (record.id, "expired")


def test_a_batch_stuck_in_validation_expires_at_once(world: StageWorld) -> None:
    world.store_batch("batch_v", "validating")

    expired = world.stages.ending.expire("batch_v")

    assert expired.status == "expired" and expired.output_file_id is None
    assert world.events.of(STATUS) == [("batch_v", "expired")]


def test_an_early_end_waits_for_a_live_lease_and_the_backstop_does_not(
    world: StageWorld,
) -> None:
    record = two_shards(world)
    now = world.clock()
    world.table.shards.begin_shard_attempt(record.id, 1, owner="w", lease_until=now + 300, now=now)
    world.stages.ending.cancel(record.id)

    assert world.stages.ending.finalize(record.id).status == "cancelling"
    world.clock.advance(301)  # the worker died: its lease lapses
    assert world.stages.ending.finalize(record.id).status == "cancelled"

    # The stuck-batch backstop ends a batch past its window whatever its leases.
    other = world.store_batch("batch_stuck", "in_progress", shards_total=1, shards_pending=1)
    world.table.shards.begin_shard_attempt(
        other.id, 0, owner="w", lease_until=world.clock() + 10**6, now=world.clock()
    )
    assert other.expires_at is not None
    world.clock.now = other.expires_at + world.deps.settings.stuck_after_seconds + 1
    assert world.stages.ending.end_overdue(other.id).status == "expired"


def test_cancelling_is_harmless_twice_and_refused_for_an_ended_batch(world: StageWorld) -> None:
    record = two_shards(world)
    first = world.stages.ending.cancel(record.id)
    world.clock.advance(5)

    assert world.stages.ending.cancel(record.id) == first  # cancelling_at not moved

    world.stages.ending.finalize(record.id)
    assert world.stages.ending.cancel(record.id).status == "cancelled"
    world.store_batch("batch_done", "completed")
    with pytest.raises(ConflictError):
        world.stages.ending.cancel("batch_done")


def test_end_answers_the_moved_batch_without_reading_it_again(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = world.ingest("end.jsonl", [chat_request("a")])
    world.run_queued(FakeEngine(MODEL))
    finalizing = world.table.batches.transition(
        record.id, to_status="finalizing", from_statuses=["in_progress"]
    )
    assert finalizing is not None and finalizing.status == "finalizing"
    reads: list[str] = []
    get_batch = world.table.batches.get_batch

    def counted(batch_id: str) -> BatchRecord | None:
        reads.append(batch_id)
        return get_batch(batch_id)

    monkeypatch.setattr(world.table.batches, "get_batch", counted)

    ended = world.stages.ending.end(finalizing, COMPLETED)

    assert reads == []
    assert (ended.status, ended.request_completed) == ("completed", 1)
    assert ended.output_file_id is not None and ended.completed_at == int(world.clock())
    # A move from a status the batch is not in answers None.
    assert (
        world.table.batches.transition(
            record.id, to_status="cancelling", from_statuses=["in_progress"]
        )
        is None
    )


def test_a_shard_that_failed_every_delivery_closes_with_shard_failed_lines(
    world: StageWorld,
) -> None:
    record = two_shards(world)
    task = ShardTask(batch_id=record.id, shard_index=1)
    now = world.clock()
    world.table.shards.begin_shard_attempt(record.id, 1, owner="w", lease_until=now + 60, now=now)

    assert not world.stages.ending.fail_shard(task)  # a live worker still holds it
    world.clock.advance(61)
    assert world.stages.ending.fail_shard(task)
    assert world.stages.ending.fail_shard(task)  # again: already settled

    batch = world.batch(record.id)
    assert (batch.shards_pending, batch.request_failed, batch.status) == (0, 2, "in_progress")
    ended = world.stages.ending.finalize(record.id)
    assert ended.status == "completed"
    assert error_codes(world, ended) == {"r2": "shard_failed", "r3": "shard_failed"}


def test_each_ending_kind_leaves_from_its_status_with_its_line() -> None:
    assert (COMPLETED.from_status, COMPLETED.status, COMPLETED.code) == (
        "finalizing",
        "completed",
        None,
    )
    assert (CANCELLED.from_status, CANCELLED.code) == ("cancelling", "batch_cancelled")
    assert (EXPIRED.from_status, EXPIRED.code) == ("finalizing", "batch_expired")
