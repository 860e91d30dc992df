"""Workers sized to the work (issue 27): the function the fleet's scaling runs, and the
simulation in `make bench` that compares it with today's step scaling."""

from __future__ import annotations

from batch_core.fleet_sizing import DueWork, desired_workers
from bench import fleet

HOUR = 3600.0
SPEED = 100.0


def size(work: list[DueWork], ready: int = 0, cold: float = 900.0, most: int = 8) -> int:
    return desired_workers(
        work,
        now=0.0,
        tokens_per_second=SPEED,
        cold_start_seconds=cold,
        ready=ready,
        max_workers=most,
    )


def test_one_shard_never_starts_more_than_one_worker() -> None:
    one = [DueWork(deadline_at=0.5 * HOUR, tokens=10_000_000, shards=1)]  # late, and huge
    assert [size(one, ready=n) for n in (0, 1, 3)] == [1, 1, 1]


def test_no_work_asks_for_no_worker() -> None:
    assert size([]) == 0
    assert size([DueWork(HOUR, 1000, 0)]) == 0


def test_a_big_urgent_batch_gets_what_it_needs_at_once_up_to_the_maximum() -> None:
    # 3 worker-hours due in 2 hours, with a 15-minute cold start (and 10 % kept in hand):
    # 3 * 3600 * 100 tokens over 100 tokens/s * (7200 * 0.9 - 900) s each: 2 workers.
    urgent = [DueWork(deadline_at=2 * HOUR, tokens=3 * HOUR * SPEED, shards=50)]
    assert size(urgent) == 2
    assert size([DueWork(2 * HOUR, 30 * HOUR * SPEED, shards=500)]) == 8  # the maximum
    assert size([DueWork(2 * HOUR, 30 * HOUR * SPEED, shards=500)], most=4) == 4


def test_far_deadlines_need_one_worker_and_the_workers_there_count() -> None:
    week = [DueWork(deadline_at=7 * 24 * HOUR, tokens=20 * HOUR * SPEED, shards=200)]
    assert size(week) == 1
    soon = [DueWork(deadline_at=HOUR, tokens=2 * HOUR * SPEED, shards=40)]
    # A new worker has 0.9 * 3,600 - 900 = 2,340 s before the deadline: 7,200 s of work
    # needs 4 from none; 3 workers already up give 3 * 3,240 = 9,720 s, enough.
    assert size(soon) == 4
    assert size(soon, ready=3) == 3
    assert size(soon, ready=1) == 1 + 2  # 3,240 s there, 3,960 s left: 2 more


def test_deadlines_count_earliest_first_and_a_deadline_inside_the_cold_start_takes_all() -> None:
    work = [
        DueWork(deadline_at=24 * HOUR, tokens=HOUR * SPEED, shards=10),
        DueWork(deadline_at=600.0, tokens=1000, shards=3),  # due before any worker is up
    ]
    assert size(work, most=6) == 6


def test_the_simulation_shows_the_sizing_cheaper_and_no_later() -> None:
    rows = fleet.table(seed=7, cold_start=900.0, interruptions=0.05)
    by = {(r["workload"], r["policy"], r["purchase"]): r for r in rows}
    assert by[("one shard", "step", "on-demand")]["peak"] == fleet.MAX_WORKERS  # today
    assert by[("one shard", "sized", "on-demand")]["peak"] == 1
    for workload in ("one shard", "burst of 30", "busy hour"):
        for purchase in ("on-demand", "spot"):
            step, sized = by[(workload, "step", purchase)], by[(workload, "sized", purchase)]
            assert float(str(sized["gpu_hours"])) < float(str(step["gpu_hours"]))
            missed = [int(str(r["missed"]).split("/")[0]) for r in (step, sized)]
            assert missed[1] <= missed[0]
        spot = by[(workload, "sized", "spot")]["cost"]
        assert float(str(spot)) < float(str(by[(workload, "sized", "on-demand")]["cost"]))
