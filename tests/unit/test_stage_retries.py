"""Retries over a bare moto world: a child batch of exactly the parent's failed lines (not
the ones validation rejected), linked both ways, made once; its input built by an intake job
and the child started on it; refused for a batch that has nothing to retry or lost its input."""

from __future__ import annotations

import json

import pytest

from batch_core.errors import ConflictError
from batch_core.intake_jobs import BuildRetryInput, parse_job
from batch_core.records import BatchRecord
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

LONG = " ".join(["word"] * 100)
TENANT = "acme"


def ended_with_failures(world: StageWorld) -> BatchRecord:
    """A completed batch of five requests: f1 and f3 failed (too long for the engine), and a
    line validation rejected (skipped)."""
    lines = [
        chat_request("ok0"),
        chat_request("f1", LONG),
        {"custom_id": "bad", "method": "POST", "url": "/v1/nope", "body": {}},
        chat_request("f3", LONG),
        chat_request("ok4"),
    ]
    record = world.create(lines, tenant=TENANT, invalid_lines="skip")
    ended = world.run_to_end(record, FakeEngine(MODEL, max_model_len=64))
    assert (ended.status, ended.request_failed, ended.request_rejected) == ("completed", 3, 1)
    return ended


def test_a_retry_is_a_child_of_the_failed_lines_linked_both_ways(world: StageWorld) -> None:
    parent = ended_with_failures(world)

    child = world.stages.retries.retry(TENANT, parent.id)

    assert child.status == "validating" and child.tenant == TENANT
    assert child.metadata == {"retry_of": parent.id}
    assert world.batch(parent.id).metadata == {"retried_by": child.id}
    (job,) = world.drain_bodies("intake")
    assert parse_job(job) == BuildRetryInput(parent_id=parent.id)
    # Retrying again answers the same child and sends no second job.
    assert world.stages.retries.retry(TENANT, parent.id).id == child.id
    assert world.drain_bodies("intake") == []


def test_the_retry_job_writes_the_failed_lines_and_starts_the_child(world: StageWorld) -> None:
    parent = ended_with_failures(world)
    child = world.stages.retries.retry(TENANT, parent.id)
    world.drain_bodies("intake")

    world.stages.intake.run(BuildRetryInput(parent_id=parent.id))

    # Byte for byte, in input order; not the rejected line, nor those that succeeded.
    assert [
        json.loads(line)["custom_id"] for line in world.store.read(child.input_key).splitlines()
    ] == [
        "f1",
        "f3",
    ]
    input_file = world.table.files.get_file(child.input_file_id)
    assert input_file is not None and input_file.file.status == "processed"
    assert world.stages.retries.build_retry_input(parent.id) is None  # a redelivered job
    ran = world.run_to_end(world.validate(child.id), FakeEngine(MODEL))
    assert (ran.status, ran.request_total, ran.request_completed) == ("completed", 2, 2)


def test_a_retry_job_that_fails_every_attempt_fails_the_child(world: StageWorld) -> None:
    parent = ended_with_failures(world)
    child = world.stages.retries.retry(TENANT, parent.id)

    world.stages.intake.give_up(BuildRetryInput(parent_id=parent.id))

    failed = world.batch(child.id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors[0].code == "invalid_input_file"
    input_file = world.table.files.get_file(child.input_file_id)
    assert input_file is not None and input_file.file.status == "error"


def test_only_an_ended_batch_with_failed_requests_can_be_retried(world: StageWorld) -> None:
    running = world.create([chat_request("a")], tenant=TENANT)
    with pytest.raises(ConflictError, match="is in_progress"):
        world.stages.retries.retry(TENANT, running.id)

    ended = world.run_to_end(running, FakeEngine(MODEL))
    assert ended.status == "completed"
    with pytest.raises(ConflictError, match="no failed requests"):
        world.stages.retries.retry(TENANT, ended.id)
    assert world.drain_bodies("intake") == []


def test_a_batch_whose_input_file_expired_cannot_be_retried(world: StageWorld) -> None:
    parent = ended_with_failures(world)
    world.clock.advance(world.deps.settings.file_retention_seconds)

    with pytest.raises(ConflictError, match="deleted or has expired"):
        world.stages.retries.retry(TENANT, parent.id)
    assert world.batch(parent.id).metadata is None
