"""The fleet simulation: what a model's GPU fleet costs under each scaling policy.

    python -m bench.fleet [--seed 7] [--cold-start 900] [--interruptions 0.05]

A model's workers, from zero, on a virtual clock (10 s steps): each worker costs from launch
to termination and runs one shard at a time at SPEED tokens/s after a cold start
(`--cold-start`: boot, image, weights, engine). Shards run earliest deadline first.

Policies, both with today's scale-in (every worker gone once no shard waited or ran for 15
minutes):
- "step": the template's step scaling. Every minute, while shards wait and the 5-minute
  cooldown is over, +1 worker (up to 10 waiting), +2 (up to 50), +4 (more); every 5 minutes
  the deadline alarm adds +1/+2/+4 too when the work due within the hour needs more than half,
  one, two fleet-hours of the workers there are.
- "sized": as the deployment runs `fleet_scaling`: when a batch starts, intake raises the
  fleet's floor to what that batch alone needs, and every 5 minutes the sweep sets the floor
  to what all the work needs (`fleet_sizing.desired_workers`: no more workers than shards
  left, enough for each deadline counting cold starts; workers still starting count only
  after a whole cold start). The fleet grows at once to its floor.

Purchase: on-demand, or spot with `--interruptions` per worker-hour (a worker interrupted
hands its shard back, losing at most the part in progress, and the group replaces it, cold).

Workloads: one shard (20 minutes of one worker, 24 h window); a burst of 30 small batches (2
shards of a minute each) over ten minutes; and the busy hour of bench/scheduling.py on
model-a (huge 7-day batches, then 1-hour and 24-hour ones). Printed per workload, policy and
purchase: GPU-hours, cost, deadlines missed, idle GPU share (worker time not running a shard,
cold starts included), peak workers.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_core.fleet_sizing import DueWork, desired_workers
from bench.scheduling import SHARD_TOKENS, SPEED, WINDOWS, workload

STEP = 10.0
MAX_WORKERS = 4
"""The template's WorkerMaxCount default."""
COOLDOWN = 300.0
IDLE_SCALE_IN = 900.0
PART_SECONDS = 60.0
"""Results are written in parts: an interruption loses at most the one in progress."""
ON_DEMAND_PER_HOUR = 0.805
"""g6.xlarge on-demand, us-east-1 (USD per hour)."""
SPOT_PER_HOUR = 0.32
"""A typical g6.xlarge spot price (about 40 % of on-demand; it varies by zone and hour)."""


@dataclass
class Shard:
    batch: int
    tokens: float
    deadline_at: float
    done: float = 0.0


@dataclass
class Worker:
    ready_at: float
    launched_at: float
    shard: Shard | None = None
    busy: float = 0.0


@dataclass
class Run:
    gpu_seconds: float = 0.0
    busy_seconds: float = 0.0
    peak: int = 0
    missed: int = 0
    batches: int = 0


@dataclass
class Batch:
    arrives_at: float
    deadline_at: float
    shards: list[Shard] = field(default_factory=list)
    done_at: float | None = None


def one_shard() -> list[Batch]:
    return [Batch(0, WINDOWS["24h"], [Shard(0, 20 * 60 * SPEED, WINDOWS["24h"])])]


def burst() -> list[Batch]:
    batches = []
    for i in range(30):
        at = i * 20.0
        deadline = at + WINDOWS["24h"]
        batches.append(Batch(at, deadline, [Shard(i, SHARD_TOKENS, deadline) for _ in range(2)]))
    return batches


def busy_hour(seed: int) -> list[Batch]:
    batches = []
    for i, arrival in enumerate(a for a in workload(seed) if a.model == "model-a"):
        deadline = arrival.at + WINDOWS[arrival.window]
        count = max(1, math.ceil(arrival.tokens / SHARD_TOKENS))
        shards = [Shard(i, arrival.tokens / count, deadline) for _ in range(count)]
        batches.append(Batch(arrival.at, deadline, shards))
    return batches


class Simulation:
    """One workload under one policy: a shard queue, the workers, the clock."""

    def __init__(
        self,
        batches: list[Batch],
        policy: str,
        *,
        cold_start: float,
        interruptions: float,
        seed: int,
    ) -> None:
        self.policy = policy
        self.cold_start = cold_start
        self.interruptions = interruptions
        self.rng = random.Random(seed)
        self.batches = batches
        self.pending = sorted(batches, key=lambda b: b.arrives_at)
        self.by_batch = {b.shards[0].batch: b for b in batches}
        self.left = {b.shards[0].batch: len(b.shards) for b in batches}
        self.waiting: list[Shard] = []
        self.workers: list[Worker] = []
        self.run = Run(batches=len(batches))
        self.now = 0.0
        self.last_out = self.last_deadline_out = -COOLDOWN
        self.last_work = 0.0
        self.floor = 0

    def result(self) -> Run:
        while self.pending or self.waiting or self._running():
            arrived = []
            while self.pending and self.pending[0].arrives_at <= self.now:
                arrived.append(self.pending.pop(0))
                self.waiting.extend(arrived[-1].shards)
            if self.waiting or self._running():
                self.last_work = self.now
            wanted = len(self.workers)
            if self.policy == "step" and self.now % 60 < STEP:  # the alarms look every minute
                wanted = self._step()
            if self.policy == "sized":
                for batch in arrived:  # intake: this batch alone, raising only
                    self.floor = max(self.floor, self._need(batch.shards))
                if self.now % 300 < STEP:  # the sweep: all the work, up or down
                    self.floor = self._need(self.waiting + self._running())
                wanted = max(wanted, self.floor)
            for _ in range(min(wanted, MAX_WORKERS) - len(self.workers)):
                self.workers.append(Worker(self.now + self.cold_start, self.now))
            if self.workers and self.now - self.last_work >= IDLE_SCALE_IN:
                del self.workers[self.floor :]  # scale in to the floor: zero, once idle
            self.run.peak = max(self.run.peak, len(self.workers))
            self.waiting.sort(key=lambda s: s.deadline_at)
            for worker in list(self.workers):
                self._work(worker)
            self.now += STEP
        self.run.missed = sum(1 for b in self.batches if (b.done_at or math.inf) > b.deadline_at)
        return self.run

    def _running(self) -> list[Shard]:
        return [w.shard for w in self.workers if w.shard is not None]

    def _step(self) -> int:
        """The template's step scaling: on waiting shards, and on the deadline alarm."""
        count, waiting = len(self.workers), len(self.waiting)
        if waiting and self.now - self.last_out >= COOLDOWN:
            count += 1 if waiting <= 10 else 2 if waiting <= 50 else 4
            self.last_out = self.now
        if self.now % 300 < STEP and self.now - self.last_deadline_out >= COOLDOWN:
            soon = self.now + 3600
            shards = self.waiting + self._running()
            due = sum(s.tokens - s.done for s in shards if s.deadline_at <= soon)
            pressure = due / (max(len(self.workers), 1) * SPEED * 3600)
            if pressure > 0.5:
                count += 1 if pressure <= 1 else 2 if pressure <= 2 else 4
                self.last_deadline_out = self.now
        return count

    def _need(self, shards: list[Shard]) -> int:
        work: dict[int, DueWork] = {}
        for shard in shards:
            so_far = work.get(shard.batch, DueWork(shard.deadline_at, 0, 0))
            tokens = so_far.tokens + shard.tokens - shard.done
            work[shard.batch] = DueWork(shard.deadline_at, tokens, so_far.shards + 1)
        wanted = desired_workers(
            work.values(),
            now=self.now,
            tokens_per_second=SPEED,
            cold_start_seconds=self.cold_start,
            ready=sum(1 for w in self.workers if w.ready_at <= self.now),
            max_workers=MAX_WORKERS,
        )
        return wanted

    def _work(self, worker: Worker) -> None:
        """One step of one worker: interrupted, starting, taking a shard or running it."""
        self.run.gpu_seconds += STEP
        if self.interruptions and self.rng.random() < self.interruptions * STEP / 3600:
            if worker.shard is not None:  # handed back, losing the part in progress
                shard = worker.shard
                shard.done = max(0.0, shard.done - SPEED * PART_SECONDS)
                self.waiting.append(shard)
            self.workers.remove(worker)
            self.workers.append(Worker(self.now + self.cold_start, self.now))  # replaced, cold
            return
        if worker.ready_at > self.now:
            return
        if worker.shard is None and self.waiting:
            worker.shard = self.waiting.pop(0)
        if worker.shard is None:
            return
        self.run.busy_seconds += STEP
        worker.shard.done += SPEED * STEP
        if worker.shard.done >= worker.shard.tokens:
            self.left[worker.shard.batch] -= 1
            if not self.left[worker.shard.batch]:
                self.by_batch[worker.shard.batch].done_at = self.now + STEP
            worker.shard = None


def table(seed: int, cold_start: float, interruptions: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    workloads: dict[str, Callable[[], list[Batch]]] = {
        "one shard": one_shard,
        "burst of 30": burst,
        "busy hour": lambda: busy_hour(seed),
    }
    for name, make in workloads.items():
        for policy in ("step", "sized"):
            for purchase, rate, price in (
                ("on-demand", 0.0, ON_DEMAND_PER_HOUR),
                ("spot", interruptions, SPOT_PER_HOUR),
            ):
                run = Simulation(
                    make(), policy, cold_start=cold_start, interruptions=rate, seed=seed
                ).result()
                hours = run.gpu_seconds / 3600
                rows.append(
                    {
                        "workload": name,
                        "policy": policy,
                        "purchase": purchase,
                        "gpu_hours": round(hours, 2),
                        "cost": round(hours * price, 2),
                        "missed": f"{run.missed}/{run.batches}",
                        "idle": round(1 - run.busy_seconds / max(run.gpu_seconds, 1), 2),
                        "peak": run.peak,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cold-start", type=float, default=900.0)
    parser.add_argument("--interruptions", type=float, default=0.05)
    args = parser.parse_args()
    print(
        f"fleet: cold start {args.cold_start:.0f} s, spot interruptions "
        f"{args.interruptions} per worker-hour, at most {MAX_WORKERS} workers, "
        f"${ON_DEMAND_PER_HOUR}/h on-demand, ${SPOT_PER_HOUR}/h spot"
    )
    print(
        "| workload | policy | purchase | GPU-hours | cost $ | deadlines missed "
        "| idle GPU share | peak workers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in table(args.seed, args.cold_start, args.interruptions):
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
