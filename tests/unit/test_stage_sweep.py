"""The expiry sweep over a bare moto world: each step does its work, one failing item (or a
whole step) is counted and never stops the rest, and a run short of time leaves the rest to
the next one."""

from __future__ import annotations

import pytest

from batch_core.records import BatchRecord
from batch_core.sweep import SAFETY_SECONDS
from tests.stage_world import StageWorld

PLENTY = 600.0


def overdue(world: StageWorld, *ids: str) -> list[BatchRecord]:
    """Validating batches whose window has passed (they expire at once)."""
    made = [world.store_batch(batch_id, "validating") for batch_id in ids]
    world.clock.advance(86400 + 1)
    return made


def test_a_run_expires_overdue_batches_and_deletes_expired_files(world: StageWorld) -> None:
    old = world.stages.files.create("t", filename="a.jsonl", purpose="batch", data=b"{}\n")
    overdue(world, "batch_a", "batch_b")
    young = world.stages.files.create("t", filename="b.jsonl", purpose="batch", data=b"{}\n")
    world.clock.advance(
        world.deps.settings.file_retention_seconds - 86400
    )  # the old one's time is up

    report = world.stages.sweep.run(lambda: PLENTY)

    assert sorted(report.expired) == ["batch_a", "batch_b"]
    assert {world.batch(i).status for i in ("batch_a", "batch_b")} == {"expired"}
    assert report.deleted_files == [old.id]
    assert world.table.files.get_file(old.id) is None
    assert world.table.files.get_file(young.id) is not None
    assert (report.failures, report.unfinished, report.pressures) == ({}, [], {})


def test_one_failing_batch_does_not_stop_the_others(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    overdue(world, "batch_a", "batch_b", "batch_c")
    ending = world.stages.ending
    end_overdue = ending.end_overdue

    def failing_for_b(batch_id: str) -> BatchRecord:
        if batch_id == "batch_b":
            raise RuntimeError("throttled")
        return end_overdue(batch_id)

    monkeypatch.setattr(ending, "end_overdue", failing_for_b)

    report = world.stages.sweep.run(lambda: PLENTY)

    assert sorted(report.expired) == ["batch_a", "batch_c"]
    assert report.failures == {"expire": 1}
    assert world.batch("batch_b").status == "validating"  # the next run's


def test_a_file_that_cannot_be_deleted_is_left_and_the_rest_are_deleted(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = world.stages.files
    made = [
        files.create("t", filename=f"{i}.jsonl", purpose="batch", data=b"{}\n").id for i in range(3)
    ]
    world.clock.advance(world.deps.settings.file_retention_seconds)
    delete = files.delete_expired_file

    def failing_for_first(file_id: str) -> str:
        if file_id == made[0]:
            raise RuntimeError("S3 is down")
        return delete(file_id)

    monkeypatch.setattr(files, "delete_expired_file", failing_for_first)

    report = world.stages.sweep.run(lambda: PLENTY)

    assert sorted(report.deleted_files) == sorted(made[1:])
    assert report.failures == {"delete_files": 1}
    assert world.table.files.get_file(made[0]) is not None


def test_a_step_that_cannot_read_leaves_the_pressure_unknown_and_the_rest_runs(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    overdue(world, "batch_a")

    def unreadable() -> list[BatchRecord]:
        raise RuntimeError("the index cannot be read")

    monkeypatch.setattr(world.stages.turns, "running_batches", unreadable)

    report = world.stages.sweep.run(lambda: PLENTY)

    assert report.pressures is None  # unknown, not zero
    assert report.failures == {"running": 1}
    assert report.expired == ["batch_a"]


def test_the_deadline_checks_go_on_after_a_batch_that_fails_them(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    soon = int(world.clock()) + 600
    for batch_id in ("batch_a", "batch_b"):
        world.store_batch(batch_id, expires_at=soon, estimated_tokens=10**9, request_total=1)
    turns = world.stages.turns
    escalate = turns.escalate_near_deadlines

    def failing_for_a(running: list[BatchRecord]) -> list[str]:
        if running[0].id == "batch_a":
            raise RuntimeError("throttled")
        return escalate(running)

    monkeypatch.setattr(turns, "escalate_near_deadlines", failing_for_a)

    report = world.stages.sweep.run(lambda: PLENTY)

    assert report.escalated == ["batch_b"]
    assert report.failures == {"escalate": 1}
    assert sorted(report.at_risk) == ["batch_a", "batch_b"]  # each batch's other checks ran


def test_a_run_short_of_time_begins_nothing_and_says_so(world: StageWorld) -> None:
    overdue(world, "batch_a")

    report = world.stages.sweep.run(lambda: SAFETY_SECONDS)

    assert report.expired == [] and report.deleted_files == []
    assert "expire" in report.unfinished and "delete_files" in report.unfinished
    assert world.batch("batch_a").status == "validating"


def test_a_slot_a_crash_left_behind_is_released(world: StageWorld) -> None:
    world.configure(tenant_max_active_batches=1)
    record = world.store_batch("batch_s", "completed")
    world.stages.slots.take(record)  # the end came, the release did not
    world.clock.advance(86400 + 1)

    report = world.stages.sweep.run(lambda: PLENTY)

    assert report.released_slots == ["batch_s"]
    assert world.table.tenants.tenant_load(record.tenant) == (0, 0)
