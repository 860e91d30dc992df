"""Urgent fairness (issue 25, finding 9): a tenant that sends everything with 1-hour windows
no longer takes the fleet. The scheduling simulation (bench/scheduling.py: the deployed
tiers, turn-taking and sweep on moto, on a virtual clock) floods model-a with one tenant's
1-hour batches, 1.25 times the fleet, while another tenant's 24-hour batch runs: the other
keeps about half the fleet (its max-min fair share) and meets its deadline, and the flooding
tenant is still served at its share of the urgent tier (URGENT_TENANT_SHARE, half)."""

from __future__ import annotations

import pytest

from bench.scheduling import (
    FLOOD_SHARD_TOKENS,
    FLOODER,
    QUIET,
    Simulation,
    flood,
    flood_summary,
)
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability


def test_a_tenant_flooding_one_hour_batches_while_another_tenants_day_batch_keeps_its_share() -> (
    None
):
    hours = float(scale(1, 12))
    quiet_work = 0.5 if hours < 12 else 4.0  # hours of the whole fleet: 8 h at half of it
    day = flood(hours, quiet_work=quiet_work)
    row = flood_summary(Simulation("ours", day, shard_tokens=FLOOD_SHARD_TOKENS).run(), hours)
    area = "urgent fairness"
    flooding = f"{FLOODER} floods 1 h batches (1.25x the fleet, {hours:g} h)"
    record(area, f"{QUIET}'s share of the fleet while {flooding}", f"{row['quiet_share']:.2f}",
           row["quiet_share"] >= 0.4)  # fmt: skip
    record(area, f"{QUIET}'s 24 h batch ({quiet_work:g} fleet-hours) done after",
           f"{row['quiet_hours']:.1f} h", row["quiet_on_time"])  # fmt: skip
    record(area, f"{FLOODER}'s share meanwhile (its urgent share: 0.5)",
           f"{row['flooder_share']:.2f}", row["flooder_share"] >= 0.4)  # fmt: skip
    record(area, f"{FLOODER}'s batches done (within their hour)",
           f"{row['flooder_done']} of {row['flooder_batches']} ({row['flooder_on_time']})",
           row["flooder_done"] == row["flooder_batches"])  # fmt: skip
    assert row["quiet_share"] >= 0.4, row
    assert row["quiet_on_time"], row
    assert row["flooder_share"] >= 0.4, row
    assert row["flooder_done"] == row["flooder_batches"], row
