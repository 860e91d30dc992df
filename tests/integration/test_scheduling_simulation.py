"""The scheduling simulation of `make bench` (bench/scheduling.py) on a small day: the
deployed queues, tiers and turn-taking on moto under a virtual clock, against one first-in
first-out queue per model."""

from __future__ import annotations

import pytest

from bench.scheduling import Arrival, Simulation, jain, summary, waterfill


def test_max_min_fair_shares_and_jains_index() -> None:
    # 90 units among demands of 10, 50 and 100: the small one is met, the others split the rest.
    assert waterfill({"a": 10, "b": 50, "c": 100}, 90) == pytest.approx({"a": 10, "b": 40, "c": 40})
    assert waterfill({"a": 10, "b": 20}, 100) == pytest.approx({"a": 10, "b": 20})
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0]) == pytest.approx(1 / 3)


def test_an_hours_batch_behind_a_backlog_runs_at_once_with_tiers_and_after_it_in_fifo() -> None:
    day = [
        Arrival(0, "tenant-a", "model-a", "7d", 300_000),  # 50 shards: 12.5 min of the fleet
        Arrival(1, "tenant-a", "model-b", "7d", 60_000),
        Arrival(30, "tenant-b", "model-b", "1h", 12_000),
        Arrival(60, "tenant-b", "model-a", "1h", 12_000),
        Arrival(90, "tenant-c", "model-a", "24h", 12_000),
    ]
    fifo = Simulation("fifo", day).run()
    ours = Simulation("ours", day).run()
    minutes = {
        name: {o.arrival.at: (o.done_at or 1e9) / 60 for o in result.outcomes.values()}
        for name, result in (("fifo", fifo), ("ours", ours))
    }
    assert minutes["fifo"][60] > 10  # behind the whole backlog
    assert minutes["ours"][60] < 4  # the urgent tier, first
    assert minutes["ours"][90] < 6  # the normal tier, before the bulk one
    assert minutes["ours"][0] >= minutes["fifo"][0]  # the week's batch gave way, on time
    assert all(o.done_at is not None for o in ours.outcomes.values())
    fifo_row, ours_row = summary(fifo), summary(ours)
    assert ours_row["misses"] == fifo_row["misses"] == 0
    assert ours_row["fairness"] >= fifo_row["fairness"]  # (all done within the hour here)
    assert ours_row["idle"] <= fifo_row["idle"] + 1e-9


def test_a_tenant_flooding_one_hour_batches_leaves_another_tenants_day_batch_its_share() -> None:
    """Issue 25, finding 9: tenant-a sends 1.25 times the fleet in 1-hour batches for two
    hours, tenant-b one 24-hour batch of an hour of the fleet. By slack alone every 1-hour
    batch is urgent and tenant-b runs only once the flood is over (it gets a worker only
    while a flooding batch leaves one free); with each tenant's share of the urgent tier,
    both get about half the fleet meanwhile."""
    from bench.scheduling import FLOOD_SHARD_TOKENS, flood, flood_summary

    hours = 2.0
    day = flood(hours)
    tiers = flood_summary(Simulation("tiers", day, shard_tokens=FLOOD_SHARD_TOKENS).run(), hours)
    ours = flood_summary(Simulation("ours", day, shard_tokens=FLOOD_SHARD_TOKENS).run(), hours)
    assert tiers["quiet_share"] < 0.15  # the tier by slack alone: starved during the flood
    assert ours["quiet_share"] >= 0.4, ours  # its max-min fair share is half
    # An hour of the fleet at half of it: two hours, its deadline 24.
    assert ours["quiet_on_time"] and ours["quiet_hours"] <= 2.25, ours
    assert ours["flooder_share"] >= 0.4, ours  # the flooder is still served, at its share
    assert ours["quiet_share"] + ours["flooder_share"] > 0.95  # and no worker idles
    assert ours["flooder_done"] == ours["flooder_batches"]  # all of it runs in the end
