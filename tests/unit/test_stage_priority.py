"""Batch priority over a bare moto world: a settled shard's turn goes to its tenant's
higher-priority batch in the same tier, the yielding batch gets its turns back once that one
has everything let in, equal priorities keep today's turns, and another tenant's turns and
tiers are never touched. The parameter's bounds at every edge."""

from __future__ import annotations

from typing import Any

import pytest

from batch_core.batch_params import BatchParams, checked
from batch_core.drop_options import drop_options
from batch_core.errors import InvalidRequestError
from batch_core.records import BatchRecord
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld


def running(world: StageWorld, batch_id: str, **fields: Any) -> BatchRecord:
    """A running batch of 4 shards, 1 let in (SHARDS_AHEAD=1), listed as holding shards."""
    values: dict[str, Any] = {
        "status": "in_progress",
        "shards_total": 4,
        "shards_pending": 4,
        "shards_released": 1,
        "tenant": "acme",
        **fields,
    }
    record = world.store_batch(batch_id, **values)
    world.table.tenants.hold_shards(record.tenant, record.id, record.priority)
    return record


def settle(world: StageWorld, batch_id: str) -> list[tuple[str, int]]:
    """One of the batch's shards settles; (batch, shard) of what was let in for it."""
    record = world.batch(batch_id)
    world.table.access.update_if(
        f"BATCH#{batch_id}",
        update="SET shards_pending = shards_pending - :one",
        condition="attribute_exists(pk)",
        values={":one": 1},
    )
    world.stages.turns.let_next_shard_in(record.model_copy(update={"shards_pending": 0}))
    return [(t.batch_id, t.shard_index) for t in world.drain()]


def test_a_settled_shards_turn_goes_to_the_tenants_higher_priority_batch(
    world: StageWorld,
) -> None:
    world.configure(shards_ahead=1)
    running(world, "batch_low", priority=0)
    running(world, "batch_high", priority=5)

    assert settle(world, "batch_low") == [("batch_high", 1)]  # the low one yields
    assert settle(world, "batch_high") == [("batch_high", 2)]
    assert settle(world, "batch_high") == [("batch_high", 3)]  # all of it let in
    # The turn the low one gave comes back to it, not lost; then no more than it gave.
    assert settle(world, "batch_high") == [("batch_low", 1)]
    assert settle(world, "batch_high") == []
    assert settle(world, "batch_low") == [("batch_low", 2)]
    assert settle(world, "batch_low") == [("batch_low", 3)]
    assert world.table.tenants.held_batches("acme") == []


def test_equal_priorities_keep_their_own_turns(world: StageWorld) -> None:
    world.configure(shards_ahead=1)
    running(world, "batch_a", priority=3)
    running(world, "batch_b", priority=3)

    assert settle(world, "batch_a") == [("batch_a", 1)]
    assert settle(world, "batch_b") == [("batch_b", 1)]


def test_a_tenants_high_priority_takes_no_other_tenants_turn(world: StageWorld) -> None:
    world.configure(shards_ahead=1)
    running(world, "batch_vip", priority=1000, tenant="acme")
    running(world, "batch_other", priority=0, tenant="other")
    running(world, "batch_bulk", priority=1000, tier="bulk")  # acme's, another tier

    assert settle(world, "batch_other") == [("batch_other", 1)]
    assert settle(world, "batch_vip") == [("batch_vip", 1)]
    low = running(world, "batch_low", priority=-5)
    assert settle(world, low.id) == [("batch_vip", 2)]  # its own tier's highest, not bulk's


def test_a_turn_stays_with_its_model(world: StageWorld) -> None:
    """A settled shard frees a place in its model's fleet: a batch of another model (whose
    queues the worker's role cannot reach) never takes it, whatever its priority."""
    world.configure(shards_ahead=1)
    running(world, "batch_a", priority=0, model="model-a")
    running(world, "batch_b", priority=1000, model="model-b")

    assert settle(world, "batch_a") == [("batch_a", 1)]


def test_the_sweep_tops_up_a_tenants_tier_by_priority_not_the_yielded_turns(
    world: StageWorld,
) -> None:
    world.configure(shards_ahead=1)
    running(world, "batch_low", priority=0)
    running(world, "batch_high", priority=5)
    settle(world, "batch_low")  # the low one yielded: one turn moved, none lost

    assert world.stages.turns.top_up_shards() == {}
    world.table.access.update_if(  # a crash: a shard settled without letting one in
        "BATCH#batch_high",
        update="SET shards_pending = shards_pending - :one",
        condition="attribute_exists(pk)",
        values={":one": 1},
    )
    world.drain()
    topped = world.stages.turns.top_up_shards()
    assert topped == {"batch_high": 1}  # the lost turn goes to the higher priority


def test_priority_orders_one_tenants_batches_end_to_end(world: StageWorld) -> None:
    """Two batches of one tenant in one tier, one worker: the later batch of higher
    priority runs before the rest of the earlier one."""
    world.configure(shards_ahead=1, max_requests_per_shard=1, prefix_slots=0)
    low = world.create([chat_request(f"l{i}") for i in range(4)], tenant="acme")
    high = world.create([chat_request(f"h{i}") for i in range(4)], tenant="acme", priority=9)
    assert (low.priority, high.priority, world.batch(high.id).to_batch().priority) == (0, 9, 9)
    engine, order, queue = FakeEngine(MODEL), [], world.drain()
    while queue:  # one worker taking the tier's queue first in, first out
        task = queue.pop(0)
        world.stages.runner.process_shard(task, engine)
        order.append(task.batch_id)
        queue += world.drain()

    names = {low.id: "low", high.id: "high"}
    assert low.shards_total == high.shards_total >= 2
    later = ["low"] * (low.shards_total - 1)
    # Without priority they would alternate (low, high, low, high, ...).
    assert [names[b] for b in order] == ["low"] + ["high"] * high.shards_total + later


@pytest.mark.parametrize("value", [1001, -1001, 10**20, "5", 1.5, True])
def test_a_priority_out_of_bounds_is_refused_naming_it(value: object) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        checked(BatchParams, {"endpoint": "/v1/chat/completions", "priority": value})
    assert refused.value.param == "priority"


def test_a_dropped_files_priority_from_its_key_or_metadata() -> None:
    assert drop_options("inbox/priority=7/f.jsonl", {}).priority == 7
    assert drop_options("inbox/f.jsonl", {"priority": "-20"}).priority == -20
    for bad in ("high", "2000", "1e3", ""):
        with pytest.raises(InvalidRequestError) as refused:
            drop_options("inbox/f.jsonl", {"priority": bad})
        assert refused.value.param == "priority"


def test_a_whole_number_written_as_a_float_is_that_integer() -> None:
    """JSON Schema's `integer` takes 5.0 (the OpenAPI document says integer)."""
    params = checked(BatchParams, {"endpoint": "/v1/chat/completions", "priority": -717.0})
    assert params.priority == -717 and isinstance(params.priority, int)
