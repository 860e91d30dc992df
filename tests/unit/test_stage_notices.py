"""Notices over a bare moto world: a move told to the event bus, the tenant's webhooks and
the outbox, an ended batch's slot freed; every notice best-effort alike, so an EventBridge or
S3 failure never raises into, or stops, what told it (flag_at_risk once did not guard)."""

from __future__ import annotations

import json

import pytest

from batch_core import s3keys
from batch_core.records import BatchRecord
from batch_core.webhook_endpoints import WebhookEndpointCreateParams
from tests.stage_world import RecordingEvents, StageWorld

STATUS, AT_RISK = RecordingEvents.DETAIL_TYPE, RecordingEvents.AT_RISK


def subscribe(world: StageWorld, *event_types: str) -> None:
    params = WebhookEndpointCreateParams.model_validate(
        {"name": "hook", "url": "https://hooks.example.com/b", "event_types": list(event_types)}
    )
    world.stages.webhook_endpoints.create("acme", params)


def queued_webhooks(world: StageWorld) -> list[str]:
    return [json.loads(body)["event"]["type"] for body in world.drain_bodies("webhooks")]


def ended(world: StageWorld, batch_id: str = "batch_n") -> BatchRecord:
    return world.store_batch(batch_id, "completed", tenant="acme")


def test_an_ended_batch_is_announced_and_frees_its_slot(world: StageWorld) -> None:
    world.configure(tenant_max_active_batches=1)
    subscribe(world, "batch.completed", "batch.failed")
    record = ended(world)
    world.stages.slots.take(record)

    world.stages.notices.moved(record)

    assert world.events.of(STATUS) == [(record.id, "completed")]
    assert queued_webhooks(world) == ["batch.completed"]
    assert world.table.tenants.tenant_load("acme") == (0, 0)


def test_a_move_to_in_progress_is_announced_but_sends_no_webhook(world: StageWorld) -> None:
    subscribe(world, "batch.completed")
    record = world.store_batch("batch_r", "in_progress", tenant="acme")

    world.stages.notices.moved(record)

    assert world.events.of(STATUS) == [(record.id, "in_progress")]
    assert queued_webhooks(world) == []


def test_an_eventbridge_failure_in_moved_never_raises_and_the_rest_is_told(
    world: StageWorld,
) -> None:
    world.configure(tenant_max_active_batches=1)
    subscribe(world, "batch.completed")
    record = ended(world)
    world.stages.slots.take(record)
    world.events.failing = True

    world.stages.notices.moved(record)

    assert world.events.published == []
    assert queued_webhooks(world) == ["batch.completed"]
    assert world.table.tenants.tenant_load("acme") == (0, 0)


def test_an_eventbridge_failure_in_at_risk_never_raises_and_the_webhook_goes(
    world: StageWorld,
) -> None:
    subscribe(world, "batch.at_risk")
    record = world.store_batch("batch_r", "in_progress", tenant="acme")
    world.events.failing = True

    world.stages.notices.at_risk(record)

    assert queued_webhooks(world) == ["batch.at_risk"]


def test_flag_at_risk_marks_every_doomed_batch_when_eventbridge_fails(world: StageWorld) -> None:
    now = int(world.clock())
    for batch_id in ("batch_1", "batch_2"):
        world.store_batch(batch_id, "in_progress", expires_at=now + 60, estimated_tokens=10**6)
    world.events.failing = True

    flagged = world.stages.turns.flag_at_risk()

    assert sorted(flagged) == ["batch_1", "batch_2"]
    assert {world.batch(b).at_risk_at for b in flagged} == {now}
    world.events.failing = False
    assert world.events.of(AT_RISK) == []  # lost with the bus, logged: never told twice


def test_the_outbox_mirrors_a_dropped_batch_and_an_s3_failure_never_raises(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    notices = world.stages.notices
    record = world.store_batch("batch_o", "completed", outbox_name="report")
    world.store.put(s3keys.file_key("file-out"), b'{"out": 1}\n')
    done = record.model_copy(update={"output_file_id": "file-out", "error_file_id": "file-gone"})

    notices.outbox(done)
    notices.mirror_results(done)  # the error file's object is missing: that copy is skipped

    batch_json = json.loads(world.store.read(s3keys.outbox_key("report", "batch.json")))
    assert (batch_json["id"], batch_json["status"]) == ("batch_o", "completed")
    assert world.store.read(s3keys.outbox_key("report", "output.jsonl")) == b'{"out": 1}\n'
    assert not world.store.exists(s3keys.outbox_key("report", "errors.jsonl"))

    def down(key: str, document: object) -> None:
        raise RuntimeError("S3 is down")

    monkeypatch.setattr(world.store, "put_json", down)
    notices.outbox(done)  # logged, not raised
    notices.outbox(world.store_batch("batch_api", "completed"))  # not dropped: no outbox
    assert world.store.list_keys(s3keys.OUTBOX_PREFIX) == [
        s3keys.outbox_key("report", "batch.json"),
        s3keys.outbox_key("report", "output.jsonl"),
    ]
