"""A tenant's slots over a bare moto world: taken at create up to the limit, requests reserved
once validated, released when the batch ends, and by the sweep for a batch that ended (or is
gone) without its release."""

from __future__ import annotations

import pytest

from batch_core.errors import RateLimitError
from batch_core.records import BatchRecord
from batch_core.repository import batch_pk
from tests.stage_world import StageWorld


def batch(world: StageWorld, batch_id: str, tenant: str = "acme") -> BatchRecord:
    return world.store_batch(batch_id, "validating", tenant=tenant)


def test_without_limits_nothing_is_counted(world: StageWorld) -> None:
    slots = world.stages.slots
    assert slots.keeps("acme") is None
    for i in range(3):
        slots.take(batch(world, f"batch_{i}"))
    assert slots.reserve_requests(batch(world, "batch_big"), 10**9, 10**12) is None
    assert world.table.tenants.tenant_load("acme") == (0, 0)
    assert world.table.tenants.queued_tokens("acme") == 0


def test_a_tenant_takes_slots_up_to_its_limit_and_an_ended_batch_frees_one(
    world: StageWorld,
) -> None:
    slots = world.configure(tenant_max_active_batches=2).slots
    first, second = batch(world, "batch_1"), batch(world, "batch_2")
    slots.take(first)
    slots.take(second)

    with pytest.raises(RateLimitError, match="2 batches not yet ended, its limit is 2"):
        slots.take(batch(world, "batch_3"))
    slots.take(batch(world, "batch_x", tenant="other"))  # another tenant's own limit

    slots.release(first)
    assert world.table.tenants.tenant_load("acme") == (1, 0)
    slots.take(world.batch("batch_3"))
    assert world.table.tenants.tenant_load("acme") == (2, 0)


def test_requests_are_reserved_within_the_queued_limit(world: StageWorld) -> None:
    slots = world.configure(tenant_max_queued_requests=10).slots
    first, second = batch(world, "batch_1"), batch(world, "batch_2")
    slots.take(first)
    slots.take(second)

    assert slots.reserve_requests(first, 6, 100) is None
    refused = slots.reserve_requests(second, 5, 100)
    assert refused is not None and refused.code == "request_limit_exceeded"
    assert "hold 6 of its limit of 10" in str(refused.message)
    assert slots.reserve_requests(second, 4, 100) is None
    assert world.table.tenants.tenant_load("acme") == (2, 10)
    # A tenant's first batch must fit the limit too.
    big = batch(world, "batch_big", tenant="other")
    slots.take(big)
    too_big = slots.reserve_requests(big, 11, 100)
    assert too_big is not None and "Split the input" in str(too_big.message)
    assert world.table.tenants.tenant_load("other") == (1, 0)


def test_the_sweep_releases_only_slots_whose_batch_ended_or_is_gone(world: StageWorld) -> None:
    slots = world.configure(tenant_max_active_batches=5).slots
    running = world.store_batch("batch_run", "in_progress", tenant="acme")
    ended = world.store_batch("batch_end", "completed", tenant="acme")
    for record in (running, ended, batch(world, "batch_gone")):
        slots.take(record)
    world.table.access.delete(batch_pk("batch_gone"))  # a crash between its end and release

    assert slots.past_expiry() == []  # no window has passed yet
    world.clock.advance(86400 + 1)
    assert sorted(b for _, b in slots.past_expiry()) == ["batch_end", "batch_gone", "batch_run"]

    released = [slots.release_if_ended(slot) for slot in slots.past_expiry()]

    assert sorted(r for r in released if r) == ["batch_end", "batch_gone"]
    assert world.table.tenants.tenant_load("acme") == (1, 0)


def test_a_release_that_fails_is_left_for_the_sweep_without_raising(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = world.configure(tenant_max_active_batches=1).slots
    record = batch(world, "batch_1")
    slots.take(record)

    def down(tenant: str, batch_id: str) -> None:
        raise RuntimeError("DynamoDB is throttling")

    monkeypatch.setattr(world.table.tenants, "release_batch_slot", down)
    slots.release(record)  # logged, not raised

    assert world.table.tenants.tenant_load("acme") == (1, 0)
