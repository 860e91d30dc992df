"""The scheduling simulation: a shared deployment's day on the local stack, per policy.

    python -m bench.scheduling [--seed 7] [--flood-hours 3]

Two models (model-a with 4 workers, model-b with 2, every worker 100 tokens/s), three tenants,
two tenants' huge 7-day batches arriving first, then 1-hour and 24-hour batches from all three over
the next 45 minutes: about 1.5 times the work the fleet finishes in its first hour.

What runs is the deployed scheduling code on moto: batches and shards in the table, the
template's shard queues (one set per model, model-b's through the model registry), the tier
by slack and each tenant's urgent share (`scheduling.shard_tier`, `UrgentShares`), the first
SHARDS_AHEAD shards queued and each settled shard letting the next one in, the workers' poll
order (`ShardQueue.receive`), the shard lease (`begin_shard_attempt`, which skips an escalated
copy), the settle transaction, and every five minutes the sweep's escalation and top-up.
Only time is simulated: a shard takes its estimated tokens over the worker's speed on a
virtual clock, so a week's windows run in seconds.

Policies: "fifo" is one queue per model with every shard queued at once (as before tiers);
"tiers" is three tiers with SHARDS_AHEAD=8, the tier by slack alone (as before issue 25);
"ours" adds each tenant's share of the urgent tier (URGENT_TENANT_SHARE). Printed per
policy: deadline misses (of batches whose deadline is feasible alone on their model's fleet),
p50/p99 time to completion per window, Jain's fairness index across tenants (each tenant's
work done in the first hour over its max-min fair share of that hour), and the idle worker
share (worker time idle while its model had unfinished work). Targets: no feasible deadline
missed, fairness >= 0.9, idle share no worse than fifo.

The flood (`flood`): tenant-a sends a 1-hour batch of ten minutes of model-a's fleet every
eight minutes (1.25 times the fleet) for `--flood-hours`, and tenant-b one 24-hour batch of an
hour of the fleet, five minutes in; shards are 20 minutes of one worker. Printed per policy:
each tenant's share of the fleet's time while tenant-b's batch ran during the flood, when
tenant-b's batch finished (its deadline: 24 h), and how many of tenant-a's batches finished
(and within their hour). Targets: tenant-b keeps at least 0.4 of the fleet (its max-min fair
share is half) and meets its deadline; tenant-a keeps at least 0.4 too.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

SPEED = 100
"""A worker's tokens per second."""
WORKERS = {"model-a": 4, "model-b": 2}
SHARD_TOKENS = 6000
"""One shard's work: a minute of one worker."""
SWEEP_SECONDS = 300
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
TENANTS = ("tenant-a", "tenant-b", "tenant-c")
EPOCH = 1_800_000_000
"""Where the virtual clock starts (simulated times are seconds after it)."""


@dataclass(frozen=True)
class Arrival:
    at: float
    tenant: str
    model: str
    window: str
    tokens: int


@dataclass
class Outcome:
    arrival: Arrival
    done_at: float | None = None
    done_tokens_by_hour: float = 0.0


@dataclass
class Result:
    policy: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    busy: float = 0.0
    idle: float = 0.0
    runs: list[tuple[str, str, float, float]] = field(default_factory=list)
    """Each shard run: (tenant, model, started, ended)."""


def workload(seed: int) -> list[Arrival]:
    """The day: huge 7-day batches first, then 1-hour and 24-hour ones from every tenant."""
    rng = random.Random(seed)
    arrivals = [
        Arrival(0, "tenant-a", "model-a", "7d", 800_000),
        Arrival(30, "tenant-a", "model-a", "7d", 500_000),
        Arrival(60, "tenant-b", "model-a", "7d", 500_000),
        Arrival(90, "tenant-a", "model-b", "7d", 450_000),
        Arrival(120, "tenant-b", "model-b", "7d", 350_000),
    ]
    # (model, window, how many, tokens each): the rest of 1.5 fleet-hours, from every tenant
    # (the third only sends these).
    for model, window, count, tokens in (
        ("model-a", "1h", 12, 15_000),
        ("model-a", "24h", 12, 24_000),
        ("model-b", "1h", 6, 12_000),
        ("model-b", "24h", 6, 24_000),
    ):
        for i in range(count):
            at = 300 + rng.uniform(0, 2400)
            arrivals.append(Arrival(at, TENANTS[i % 3], model, window, tokens))
    return sorted(arrivals, key=lambda a: a.at)


def fleet_hour(model: str) -> int:
    return WORKERS[model] * SPEED * 3600


FLOOD_SHARD_TOKENS = 120_000
"""A flood's shard: twenty minutes of one worker (fewer events: moto's DynamoDB is slow)."""
FLOODER, QUIET = "tenant-a", "tenant-b"


def flood(hours: float, quiet_work: float = 1.0) -> list[Arrival]:
    """tenant-a floods model-a with 1-hour batches (ten minutes of the fleet every eight
    minutes: 1.25 times the fleet) for `hours`; tenant-b sends one 24-hour batch of
    `quiet_work` hours of the fleet, five minutes in."""
    every = 480
    batch = fleet_hour("model-a") // 6
    arrivals = [
        Arrival(i * every, FLOODER, "model-a", "1h", batch)
        for i in range(int(hours * 3600) // every)
    ]
    arrivals.append(Arrival(300, QUIET, "model-a", "24h", int(quiet_work * fleet_hour("model-a"))))
    return sorted(arrivals, key=lambda a: a.at)


def share_of(result: Result, tenant: str, model: str, start: float, end: float) -> float:
    """The part of `model`'s worker time in [start, end] spent on `tenant`'s shards."""
    if end <= start:
        return 0.0
    busy = sum(
        max(0.0, min(ended, end) - max(started, start))
        for who, where, started, ended in result.runs
        if who == tenant and where == model
    )
    return busy / (WORKERS[model] * (end - start))


def flood_summary(result: Result, hours: float) -> dict[str, Any]:
    """Each tenant's share of model-a while tenant-b's batch ran during the flood, when
    tenant-b's batch finished, and how tenant-a's batches fared."""
    (quiet,) = [o for o in result.outcomes.values() if o.arrival.tenant == QUIET]
    flooder = [o for o in result.outcomes.values() if o.arrival.tenant == FLOODER]
    start = quiet.arrival.at
    done = quiet.done_at if quiet.done_at is not None else float("inf")
    end = min(done, hours * 3600)
    window = WINDOWS["1h"]
    return {
        "policy": result.policy,
        "quiet_share": share_of(result, QUIET, "model-a", start, end),
        "flooder_share": share_of(result, FLOODER, "model-a", start, end),
        "quiet_hours": (done - start) / 3600,
        "quiet_on_time": done - start <= WINDOWS[quiet.arrival.window],
        "flooder_batches": len(flooder),
        "flooder_done": sum(1 for o in flooder if o.done_at is not None),
        "flooder_on_time": sum(
            1 for o in flooder if o.done_at is not None and o.done_at - o.arrival.at <= window
        ),
    }


class Simulation:
    """One policy's run on a fresh local stack, event by event on a virtual clock."""

    def __init__(
        self, policy: str, arrivals: list[Arrival], *, shard_tokens: int = SHARD_TOKENS
    ) -> None:
        assert policy in ("fifo", "tiers", "ours"), policy
        self.policy = policy
        self.tiered = policy != "fifo"
        self.arrivals = arrivals
        self.shard_tokens = shard_tokens
        self.now = 0.0
        self.result = Result(policy)
        self._events: list[tuple[float, int, str, Any]] = []
        self._sequence = 0
        self._idle = {(model, n) for model, count in WORKERS.items() for n in range(count)}
        self._unfinished: dict[str, set[str]] = defaultdict(set)
        self.stages: Any = None
        self.queues: dict[str, Any] = {}

    def run(self) -> Result:
        from batchctl.local import LocalStack

        with LocalStack(None, served_models=["model-a"], route_events=False) as stack:
            self._build(stack)
            self._loop()
        return self.result

    def _build(self, stack: Any) -> None:
        """The stages on the virtual clock, with model-a's queues (the template's) and
        model-b's (in the registry)."""
        from batch_core.records import ServedModel
        from batch_core.settings import Settings
        from batch_core.wiring import build_stages

        base = stack.stages
        one_queue = (
            {} if self.tiered else {"urgent_shard_queue_url": "", "bulk_shard_queue_url": ""}
        )
        settings: Settings = base.settings.model_copy(
            update={
                # model-a is the stack's own model; model-b's speed is in its registry entry.
                "fleet_tokens_per_second": WORKERS["model-a"] * SPEED,
                "shards_ahead": 8 if self.tiered else 0,
                **one_queue,
                **({"urgent_tenant_share": 0.0} if self.policy == "tiers" else {}),
            }
        )
        self.stages = build_stages(settings, stack.session, clock=lambda: EPOCH + self.now)
        own = self.stages.shard_queue
        sqs = stack.session.client("sqs")
        urls = {
            tier: sqs.create_queue(QueueName=f"sim-model-b-{tier}")["QueueUrl"]
            for tier in ("urgent", "normal", "bulk")
        }
        model_b = ServedModel(
            name="model-b",
            queue_url=urls["normal"],
            urgent_queue_url=urls["urgent"] if self.tiered else "",
            bulk_queue_url=urls["bulk"] if self.tiered else "",
            tokens_per_second=WORKERS["model-b"] * SPEED,
        )
        self.stages.table.models.put_model(model_b)
        self.queues = {
            "model-a": own,
            "model-b": own.of_model(
                model_b.queue_url,
                urgent_url=model_b.urgent_queue_url,
                bulk_url=model_b.bulk_queue_url,
            ),
        }

    def _at(self, time: float, kind: str, payload: Any) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (time, self._sequence, kind, payload))

    def _loop(self) -> None:
        for number, arrival in enumerate(self.arrivals):
            self._at(arrival.at, "arrive", (f"batch_sim{number:03d}", arrival))
        end = max(a.at for a in self.arrivals) + 10 * 3600
        for sweep in range(SWEEP_SECONDS, int(end), SWEEP_SECONDS):
            self._at(sweep, "sweep", None)
        while self._events:
            if not any(self._unfinished.values()) and all(e[2] == "sweep" for e in self._events):
                break  # every batch is done: only sweeps are left
            time, _, kind, payload = heapq.heappop(self._events)
            self._count_worker_time(time - self.now)
            self.now = time
            if kind == "arrive":
                self._arrive(*payload)
            elif kind == "done":
                self._finish(*payload)
            elif self.tiered:  # the five-minute sweep (fifo had none: no tiers)
                running = self.stages.turns.running_batches()
                self.stages.turns.escalate_near_deadlines(running)
                self.stages.turns.top_up_shards(running)
            self._dispatch()

    def _count_worker_time(self, seconds: float) -> None:
        """Worker time since the last event, busy or idle, while its model had work."""
        for model, count in WORKERS.items():
            idle = sum(1 for worker in self._idle if worker[0] == model)
            if self._unfinished[model]:
                self.result.idle += idle * seconds
                self.result.busy += (count - idle) * seconds

    def _arrive(self, batch_id: str, arrival: Arrival) -> None:
        """A batch after validation: its record and shards stored, its first shards queued in
        the tier its slack and its tenant's urgent share give (as the intake does)."""
        from batch_core.records import BatchRecord, ShardRecord
        from batch_core.scheduling import UrgentShares, shard_tier

        count = arrival.tokens // self.shard_tokens
        now = int(EPOCH + self.now)
        expires = now + WINDOWS[arrival.window]
        tier = shard_tier(
            expires_at=expires,
            now=now,
            estimated_tokens=arrival.tokens,
            settings=self.stages.settings,
            tokens_per_second=WORKERS[arrival.model] * SPEED,
            urgent_budget=UrgentShares(self.stages.table.tenants, self.stages.settings).budget(
                arrival.tenant, arrival.model, now
            ),
        )
        record = BatchRecord(
            id=batch_id,
            endpoint="/v1/chat/completions",
            input_file_id="file-sim",
            completion_window=arrival.window,
            status="in_progress",
            created_at=now,
            in_progress_at=now,
            expires_at=expires,
            input_key="inbox/sim.jsonl",
            model=arrival.model,
            tenant=arrival.tenant,
            shards_total=count,
            shards_pending=count,
            request_total=10 * count,
            estimated_tokens=arrival.tokens,
            tier=tier if self.tiered else "normal",
            shards_released=self.stages.turns.shards_let_in_first(count),
        )
        repository = self.stages.table
        repository.batches.create_batch(record)
        shard = ShardRecord(
            batch_id=batch_id, index=0, request_count=10, estimated_tokens=self.shard_tokens
        )
        repository.shards.put_shards(
            batch_id, [shard.model_copy(update={"index": i}) for i in range(count)]
        )
        self.stages.turns.queue_first_shards(record)
        self.result.outcomes[batch_id] = Outcome(arrival)
        self._unfinished[arrival.model].add(batch_id)

    def _finish(
        self, worker: tuple[str, int], message: Any, batch_id: str, index: int, started: float
    ) -> None:
        """A shard's work is done: it settles, lets its batch's next shard in, and its batch
        ends with its last shard (as the worker and the tracker do)."""
        repository = self.stages.table
        outcome = self.result.outcomes[batch_id]
        outcome.done_tokens_by_hour += self.shard_tokens * _share_before(started, self.now, 3600)
        self.result.runs.append((outcome.arrival.tenant, worker[0], started, self.now))
        repository.shards.settle_shard(batch_id, index)
        self.queues[worker[0]].delete(message)
        settled = repository.batches.get_batch(batch_id)
        self.stages.turns.let_next_shard_in(settled)
        if settled is not None and settled.shards_pending == 0:
            repository.batches.transition(
                batch_id, to_status="finalizing", from_statuses=["in_progress"]
            )
            repository.batches.transition(
                batch_id, to_status="completed", from_statuses=["finalizing"]
            )
            outcome.done_at = self.now
            self._unfinished[worker[0]].discard(batch_id)
        self._idle.add(worker)

    def _dispatch(self) -> None:
        """Every idle worker takes its next shard, if its model's queues have one."""
        for worker in sorted(self._idle):
            taken = self._take(worker)
            if taken is not None:
                message, task = taken
                self._idle.discard(worker)
                done_at = self.now + self.shard_tokens / SPEED
                self._at(
                    done_at, "done", (worker, message, task.batch_id, task.shard_index, self.now)
                )

    def _take(self, worker: tuple[str, int]) -> Any:
        """The worker's next shard: the most urgent tier first; a copy of a shard done or
        running elsewhere (left behind by escalation) is skipped, as `process_shard` does."""
        from batch_core.messaging import ShardTask

        queue = self.queues[worker[0]]
        while True:
            messages = queue.receive(wait_seconds=0, visibility_seconds=12 * 3600)
            if not messages:
                return None
            task = ShardTask.model_validate_json(messages[0].body)
            shard = self.stages.table.shards.begin_shard_attempt(
                task.batch_id,
                task.shard_index,
                owner=f"{worker[0]}-{worker[1]}",
                lease_until=EPOCH + self.now + 3600,
                now=EPOCH + self.now,
            )
            if shard is not None:
                return messages[0], task
            queue.delete(messages[0])


def _share_before(start: float, end: float, limit: float) -> float:
    """The part of [start, end] before `limit`."""
    if end <= limit:
        return 1.0
    if start >= limit:
        return 0.0
    return (limit - start) / (end - start)


def waterfill(demands: dict[str, float], capacity: float) -> dict[str, float]:
    """Max-min fair shares of `capacity` among `demands`."""
    shares = dict.fromkeys(demands, 0.0)
    left = dict(demands)
    while left and capacity > 1e-9:
        even = capacity / len(left)
        for tenant, demand in sorted(left.items(), key=lambda item: item[1]):
            give = min(even, demand - shares[tenant])
            shares[tenant] += give
            capacity -= give
        left = {t: d for t, d in left.items() if d - shares[t] > 1e-9}
    return shares


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if values else 1.0


def summary(result: Result) -> dict[str, Any]:
    outcomes = list(result.outcomes.values())
    misses = 0
    for outcome in outcomes:
        arrival = outcome.arrival
        feasible = arrival.tokens / (WORKERS[arrival.model] * SPEED) <= WINDOWS[arrival.window]
        done = outcome.done_at if outcome.done_at is not None else float("inf")
        if feasible and done - arrival.at > WINDOWS[arrival.window]:
            misses += 1
    times: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.done_at is not None:
            times[outcome.arrival.window].append((outcome.done_at - outcome.arrival.at) / 60)
    served: dict[str, float] = defaultdict(float)
    fair: dict[str, float] = defaultdict(float)
    for model in WORKERS:
        here = [o for o in outcomes if o.arrival.model == model and o.arrival.at < 3600]
        demands: dict[str, float] = defaultdict(float)
        for outcome in here:
            demands[outcome.arrival.tenant] += outcome.arrival.tokens
            served[outcome.arrival.tenant] += outcome.done_tokens_by_hour
        for tenant, share in waterfill(demands, fleet_hour(model)).items():
            fair[tenant] += share
    fairness = jain([served[t] / fair[t] for t in TENANTS if fair[t]])
    total = result.busy + result.idle
    return {
        "policy": result.policy,
        "batches": len(outcomes),
        "misses": misses,
        "p50": {w: _percentile(v, 50) for w, v in times.items()},
        "p99": {w: _percentile(v, 99) for w, v in times.items()},
        "fairness": fairness,
        "idle": result.idle / total if total else 0.0,
    }


def _percentile(values: list[float], percent: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--flood-hours", type=float, default=3.0)
    args = parser.parse_args()
    arrivals = workload(args.seed)
    work = sum(a.tokens for a in arrivals) / sum(fleet_hour(m) for m in WORKERS)
    print(
        f"scheduling simulation: {len(arrivals)} batches from {len(TENANTS)} tenants on 2 models "
        f"({WORKERS['model-a']} + {WORKERS['model-b']} workers), {work:.2f}x the fleet's first hour"
    )
    rows = [summary(Simulation(policy, arrivals).run()) for policy in ("fifo", "tiers", "ours")]
    header = (
        "| policy | deadline misses | 1h p50 / p99 (min) | 24h p50 / p99 (min) "
        "| 7d p50 / p99 (min) | fairness (Jain) | idle worker share |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [
            f"{row['p50'].get(w, float('nan')):.0f} / {row['p99'].get(w, float('nan')):.0f}"
            for w in WINDOWS
        ]
        print(
            f"| {row['policy']} | {row['misses']} of {row['batches']} | {' | '.join(cells)} "
            f"| {row['fairness']:.2f} | {row['idle']:.1%} |"
        )
    ours = rows[2]
    fifo = rows[0]
    checks = {
        "no feasible deadline missed": ours["misses"] == 0,
        "fairness >= 0.9": ours["fairness"] >= 0.9,
        "idle share no worse than fifo": ours["idle"] <= fifo["idle"] + 1e-9,
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'MISS'} {name}")
    print_flood(args.flood_hours)


def print_flood(hours: float) -> None:
    arrivals = flood(hours)
    print(
        f"\nflood: {FLOODER} sends {len(arrivals) - 1} 1-hour batches over {hours:g} h "
        f"(1.25x model-a's fleet), {QUIET} one 24-hour batch of an hour of the fleet"
    )
    print(
        f"| policy | {QUIET}'s share | {FLOODER}'s share | {QUIET} done after (h) "
        f"| {FLOODER}'s batches done (within 1 h) |"
    )
    print("|---|---|---|---|---|")
    rows = []
    for policy in ("tiers", "ours"):
        result = Simulation(policy, arrivals, shard_tokens=FLOOD_SHARD_TOKENS).run()
        rows.append(row := flood_summary(result, hours))
        print(
            f"| {policy} | {row['quiet_share']:.2f} | {row['flooder_share']:.2f} "
            f"| {row['quiet_hours']:.1f} | {row['flooder_done']} of {row['flooder_batches']} "
            f"({row['flooder_on_time']}) |"
        )
    ours = rows[-1]
    checks = {
        f"{QUIET} keeps >= 0.4 of the fleet": ours["quiet_share"] >= 0.4,
        f"{QUIET} meets its deadline": ours["quiet_on_time"],
        f"{FLOODER} keeps >= 0.4 of the fleet": ours["flooder_share"] >= 0.4,
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'MISS'} {name}")


if __name__ == "__main__":
    main()
