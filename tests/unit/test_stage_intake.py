"""Intake over a bare moto world: a dropped file validated into shards and a tier with its
first SHARDS_AHEAD shards queued, or failed with its bad line named; a repeated or cut-off
intake resumed without sending anything twice."""

from __future__ import annotations

import json

import pytest

from batch_core import s3keys
from batch_core.batch_params import BatchParams
from batch_core.intake_jobs import DroppedObject
from tests.conftest import MODEL, chat_request
from tests.stage_world import RecordingEvents, StageWorld

STATUS = RecordingEvents.DETAIL_TYPE
BAD_URL_LINE = {"custom_id": "b", "method": "POST", "url": "/v1/nope", "body": {}}


def test_a_dropped_file_is_planned_into_shards_and_its_first_shards_queued(
    world: StageWorld,
) -> None:
    world.configure(shards_ahead=2, max_requests_per_shard=2, prefix_slots=0)
    record = world.ingest("plan.jsonl", [chat_request(f"r{i}", f"hello {i}") for i in range(7)])

    assert (record.status, record.model, record.request_total) == ("in_progress", MODEL, 7)
    assert (record.shards_total, record.shards_pending, record.shards_released) == (4, 4, 2)
    assert record.tier == "normal"  # a day's window for a few tokens of work
    assert record.estimated_tokens > 0
    shards = world.table.shards.list_shards(record.id)
    assert [s.request_count for s in shards] == [2, 2, 2, 1]
    assert world.store.list_keys(s3keys.shard_prefix(record.id)) == [
        s3keys.shard_key(record.id, i) for i in range(4)
    ]
    # SHARDS_AHEAD of them are queued; the rest wait for a shard to settle.
    assert [(t.batch_id, t.shard_index) for t in world.drain()] == [(record.id, 0), (record.id, 1)]
    assert world.batch(record.id).shards_queued
    assert world.tracker.started == [record.id]
    assert world.events.of(STATUS) == [(record.id, "in_progress")]
    outbox = json.loads(world.store.read(s3keys.outbox_key("plan", "batch.json")))
    assert (outbox["id"], outbox["status"]) == (record.id, "in_progress")


def test_a_one_hour_window_queues_its_shards_in_the_urgent_tier(world: StageWorld) -> None:
    record = world.ingest("soon.jsonl", [chat_request("a")], {"completion-window": "1h"})

    assert record.tier == "urgent"
    assert [t.shard_index for t in world.drain("urgent-shards")] == [0]
    assert world.drain() == []


def test_a_bad_line_fails_the_batch_naming_the_line_and_queues_nothing(world: StageWorld) -> None:
    record = world.ingest("bad.jsonl", [chat_request("a"), BAD_URL_LINE, chat_request("c")])

    assert record.status == "failed" and record.failed_at == int(world.clock())
    assert record.errors is not None
    (error,) = record.errors
    assert (error.code, error.line, error.param) == ("unsupported_endpoint", 2, "url")
    assert world.drain() == []
    assert world.store.list_keys(s3keys.shard_prefix(record.id)) == []
    assert world.table.shards.list_shards(record.id) == []
    assert world.tracker.started == []
    assert world.events.of(STATUS) == [(record.id, "failed")]


def test_skip_mode_runs_the_good_lines_and_writes_the_bad_ones_as_errors(
    world: StageWorld,
) -> None:
    lines = [chat_request("a"), BAD_URL_LINE, chat_request("c")]
    record = world.ingest("skip.jsonl", lines, {"invalid-lines": "skip"})

    assert record.status == "in_progress"
    assert (record.request_total, record.request_failed, record.request_rejected) == (3, 1, 1)
    assert [s.request_count for s in world.table.shards.list_shards(record.id)] == [2]
    (rejected,) = world.lines(s3keys.rejected_lines_key(record.id))
    assert rejected["custom_id"] == "b"
    assert rejected["response"]["body"]["error"]["message"].startswith("Line 2: ")


def test_a_duplicated_event_queues_nothing_twice(world: StageWorld) -> None:
    dropped = world.drop("twice.jsonl", [chat_request("a"), chat_request("b")])
    first = world.stages.intake.ingest_dropped_object(dropped)
    again = world.stages.intake.ingest_dropped_object(dropped)

    assert first is not None and again is not None
    assert again.id == first.id and again.status == "in_progress"
    assert len(world.drain()) == 1
    assert world.tracker.started == [first.id]


def test_an_intake_cut_off_before_queueing_queues_its_shards_when_the_event_comes_again(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = world.drop("cut.jsonl", [chat_request("a")])
    turns = world.stages.turns
    queue_first_shards = turns.queue_first_shards

    def crash(record: object) -> None:
        raise RuntimeError("the function timed out")

    monkeypatch.setattr(turns, "queue_first_shards", crash)
    with pytest.raises(RuntimeError):
        world.stages.intake.ingest_dropped_object(dropped)
    monkeypatch.setattr(turns, "queue_first_shards", queue_first_shards)
    assert world.drain() == []

    resumed = world.stages.intake.ingest_dropped_object(dropped)

    assert resumed is not None and resumed.shards_queued
    assert [t.batch_id for t in world.drain()] == [resumed.id]


def test_an_intake_that_failed_every_attempt_fails_its_batch_once(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = world.drop("doomed.jsonl", [chat_request("a")])

    def unreadable() -> list[str]:
        raise RuntimeError("the registry cannot be read")

    monkeypatch.setattr(world.stages.registry, "served_model_names", unreadable)
    with pytest.raises(RuntimeError):
        world.stages.intake.ingest_dropped_object(dropped)

    failed = world.stages.intake.give_up(dropped)

    assert failed is not None and failed.status == "failed"
    assert failed.errors is not None and failed.errors[0].code == "intake_failed"
    assert world.stages.intake.give_up(dropped) == world.batch(failed.id)  # as it is now
    assert world.events.of(STATUS) == [(failed.id, "failed")]


def test_a_created_batch_cancelled_before_its_validation_ends_cancelled_unread(
    world: StageWorld,
) -> None:
    file = world.stages.files.create("t", filename="f.jsonl", purpose="batch", data=b"{}\n")
    created = world.stages.batches.create_batch(
        "t", BatchParams(endpoint="/v1/chat/completions"), input_file_id=file.id
    )
    world.stages.batches.cancel("t", created.id)

    ended = world.stages.intake.ingest_dropped_object(
        DroppedObject(key=s3keys.batch_input_key(created.id))
    )

    assert ended is not None and ended.status == "cancelled"
    assert (ended.request_total, ended.output_file_id, ended.error_file_id) == (0, None, None)
    assert world.tracker.started == []
