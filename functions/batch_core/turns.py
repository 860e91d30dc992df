"""Batches taking turns on the workers, and their deadlines: how many of a batch's shards are
let into its queue at first (SHARDS_AHEAD) and the next one as each settles, the tier a batch
starts in and its move to the urgent tier as its deadline nears, held shards a crash kept out
(topped up), the deadline pressure the fleets scale on, and batches that cannot make their
deadline (at risk). Every shard goes to its model's queues (the registry), else the stack's.

Priority (a batch's `priority`, -1000 to 1000) orders one tenant's own batches inside a tier
by the turns above: a settled shard's turn goes to the tenant's highest-priority batch in the
same tier that still holds shards back (the settling batch yields it only to a strictly
higher one, so equal priorities take turns as before), and a batch with nothing left to let
in passes its turn to one of the tenant's batches that yielded. A turn is only ever traded
between batches of the same tenant, one settled shard for one let in, so a tenant's priorities
never change how many of its shards are queued or running, nor another tenant's turns. The
tenant's batches holding shards back are listed under it (`TenantTable.hold_shards`).
"""

from __future__ import annotations

import logging

from batch_core.deps import Deps
from batch_core.messaging import ShardQueue, ShardTask
from batch_core.model_registry import ModelRegistry
from batch_core.notices import Notices
from batch_core.records import BatchRecord
from batch_core.scheduling import ShardTier, UrgentShares, shard_tier, work_seconds

logger = logging.getLogger(__name__)


class Turns:
    def __init__(
        self, deps: Deps, registry: ModelRegistry, shard_queue: ShardQueue, notices: Notices
    ) -> None:
        self.deps = deps
        self.registry = registry
        self.shard_queue = shard_queue
        self.notices = notices

    def queue_for(self, model: str | None) -> ShardQueue:
        """The shard queues of `model`'s workers: its registry entry's, else the stack's own."""
        served = self.registry.served(model)
        if served is None:
            return self.shard_queue
        return self.shard_queue.of_model(
            served.queue_url, urgent_url=served.urgent_queue_url, bulk_url=served.bulk_queue_url
        )

    def throughput(self, model: str | None) -> int:
        """Tokens per second of `model`'s whole fleet: its registry entry's, else the
        stack's FLEET_TOKENS_PER_SECOND."""
        served = self.registry.served(model)
        if served is not None and served.tokens_per_second:
            return served.tokens_per_second
        return self.deps.settings.fleet_tokens_per_second

    # -- a new batch -----------------------------------------------------------------------

    def first_tier(self, record: BatchRecord, work_tokens: int, model: str | None) -> ShardTier:
        """The tier a validated batch starts in, by the slack of its deadline over its work
        (urgent only within its tenant's share of the urgent tier)."""
        now = self.deps.now()
        settings = self.deps.settings
        return shard_tier(
            expires_at=record.expires_at or now,
            now=now,
            estimated_tokens=work_tokens,
            settings=settings,
            tokens_per_second=self.throughput(model),
            urgent_budget=UrgentShares(self.deps.table.tenants, settings).budget(
                record.tenant, model, now
            ),
        )

    def shards_let_in_first(self, shards_total: int) -> int | None:
        """How many of a new batch's shards are queued at once: SHARDS_AHEAD, or None (all).
        Recorded with its move to in_progress, before any is sent, so a worker settling the
        first shard always knows the batch holds shards back."""
        ahead = self.deps.settings.shards_ahead
        return min(ahead, shards_total) if ahead else None

    def queue_first_shards(self, record: BatchRecord) -> None:
        """Send a running batch's shards let in so far (`shards_released`; None: all of them)
        to its model's queues, in its tier. The rest are let in one per settled shard
        (`let_next_shard_in`). Sending again after a crash is harmless: a copy of a shard
        done or running elsewhere is skipped."""
        tasks = (ShardTask(batch_id=record.id, shard_index=i) for i in range(record.shards_let_in))
        self.queue_for(record.model).send(tasks, record.tier, tenant=record.tenant)
        if record.shards_let_in < record.shards_total:  # its tenant's turns may come to it
            self.deps.table.tenants.hold_shards(record.tenant, record.id, record.priority)
        self.deps.table.batches.mark_shards_queued(record.id)

    def let_next_shard_in(
        self, batch: BatchRecord | None, count: int = 1, *, queue: ShardQueue | None = None
    ) -> int:
        """A shard of `batch` settled: the turn it frees goes to its tenant's batch of the
        highest priority in its tier that holds shards back (`batch` itself on a tie), whose
        next held shard joins its queue behind what other batches queued meanwhile: that is
        what takes turns between batches. `queue`: the batch's model's queues when the
        caller has them (a worker does), else they come from the registry. Returns how many
        were let in."""
        if batch is not None and batch.shards_released is not None:
            taker = self._turn_taker(batch)
            if taker is not None and (let_in := self._let_in(taker, count, queue)):
                logger.info("batch %s gives its turn to %s (priority)", batch.id, taker.id)
                return let_in
        return self._let_in(batch, count, queue)

    def _turn_taker(self, batch: BatchRecord) -> BatchRecord | None:
        """Another batch of `batch`'s tenant that takes this turn: with shards held back, in
        the same tier and for the same model, and of a higher priority, or (when `batch`
        holds none back) one that yielded turns earlier and has fewer than SHARDS_AHEAD
        queued or running. None: the turn stays `batch`'s."""
        if batch.status != "in_progress":
            return None
        tenants = self.deps.table.tenants
        holds = batch.shards_let_in < batch.shards_total
        others = [(p, i) for i, p in tenants.held_batches(batch.tenant) if i != batch.id]
        for priority, batch_id in sorted(others, key=lambda held: -held[0]):
            if holds and priority <= batch.priority:
                return None  # none higher: the turn is its own, as without priorities
            other = self.deps.table.batches.get_batch(batch_id)
            if other is None or other.status != "in_progress" or not self._holds(other):
                tenants.release_held(batch.tenant, batch_id)  # ended, or all let in
                continue
            # A turn is a place in one model's fleet (and a worker's role reaches only its
            # own fleet's queues): it goes to a batch of the same model only.
            same_place = other.tier == batch.tier and other.model == batch.model
            if same_place and (holds or self._missing(other) > 0):
                return other
        return None

    @staticmethod
    def _holds(batch: BatchRecord) -> bool:
        return batch.shards_let_in < batch.shards_total

    def _missing(self, batch: BatchRecord) -> int:
        """How many fewer of its shards are queued or running than SHARDS_AHEAD allows
        (negative: more, turns other batches of its tenant gave it)."""
        settled = batch.shards_total - batch.shards_pending
        ahead = self.deps.settings.shards_ahead
        return min(ahead, batch.shards_total - settled) - (batch.shards_let_in - settled)

    def _let_in(
        self, batch: BatchRecord | None, count: int, queue: ShardQueue | None = None
    ) -> int:
        """Let `count` more of `batch`'s held shards join the queue of its current tier. Each
        is sent before it is counted: a crash between the two sends it twice (the copy is
        skipped), never not at all."""
        batches = self.deps.table.batches
        let_in = attempts = 0
        while batch is not None and let_in < count and attempts < count + 3:
            attempts += 1
            released = batch.shards_released
            if batch.status != "in_progress" or released is None:
                break
            if released >= batch.shards_total:
                break
            task = ShardTask(batch_id=batch.id, shard_index=released)
            (queue or self.queue_for(batch.model)).send([task], batch.tier, tenant=batch.tenant)
            if batches.count_released(batch.id, released):
                let_in += 1
                batch = batch.model_copy(update={"shards_released": released + 1})
                if released + 1 >= batch.shards_total:
                    self.deps.table.tenants.release_held(batch.tenant, batch.id)
            else:  # another worker let this one in first: read again, send the next
                batch = batches.get_batch(batch.id)
        return let_in

    # -- running batches (the sweep's deadline checks) --------------------------------------

    def running_batches(self) -> list[BatchRecord]:
        """Every batch in progress (the expiry index's active batches, read once): the
        deadline checks below share one read of them per sweep."""
        active = self.deps.table.batches.active_batches(self.deps.now())
        return [batch for batch in active if batch.status == "in_progress"]

    def escalate_near_deadlines(self, running: list[BatchRecord] | None = None) -> list[str]:
        """Running batches whose deadline is now within the urgent tier's slack, with shards
        still waiting in a lower tier: their unfinished shards are sent to the urgent tier
        (a copy left behind below is skipped when a worker takes it: the shard is done or
        leased). Returns their ids."""
        settings, table = self.deps.settings, self.deps.table
        now = self.deps.now()
        soon = now + settings.urgent_slack_seconds
        shares = UrgentShares(table.tenants, settings)
        moved = []
        for batch in self.running_batches() if running is None else running:
            if batch.tier == "urgent" or (batch.expires_at or 0) >= soon:
                continue
            work = self.remaining_work_seconds(batch)
            if not shares.admit(batch.tenant, batch.model, work, now):
                continue  # its tenant's share of the urgent tier is taken: a later sweep's
            if not table.batches.raise_tier(batch.id, "urgent", from_tier=batch.tier):
                continue
            waiting = [
                s.index
                for s in table.shards.list_shards(batch.id)
                if s.status != "done" and s.index < batch.shards_let_in  # held ones follow
            ]
            tasks = (ShardTask(batch_id=batch.id, shard_index=i) for i in waiting)
            self.queue_for(batch.model).send(tasks, "urgent", tenant=batch.tenant)
            logger.info("batch %s: %d shards moved to the urgent tier", batch.id, len(waiting))
            moved.append(batch.id)
        return moved

    def top_up_shards(self, running: list[BatchRecord] | None = None) -> dict[str, int]:
        """Let in the shards a crash kept out: a worker that died between settling a shard
        and letting the next one in leaves its tenant's batches in a tier with fewer than
        SHARDS_AHEAD each queued or running. Counted per tenant and tier, since a batch of
        higher priority may hold turns the others gave it, and let in highest priority
        first (with equal priorities, each batch its own). Returns how many were let in, by
        batch."""
        if not self.deps.settings.shards_ahead:
            return {}
        groups: dict[tuple[str, str], list[BatchRecord]] = {}
        for batch in self.running_batches() if running is None else running:
            if batch.shards_released is not None:
                groups.setdefault((batch.tenant, batch.tier), []).append(batch)
        let_in: dict[str, int] = {}
        for group in groups.values():
            if len({batch.priority for batch in group}) == 1:
                wanted = [(batch, self._missing(batch)) for batch in group]
            else:
                missing = sum(self._missing(batch) for batch in group)
                wanted = []
                for batch in sorted(group, key=lambda b: -b.priority):
                    held = batch.shards_total - batch.shards_let_in
                    wanted.append((batch, min(held, missing)))
                    missing -= min(held, max(missing, 0))
            for batch, count in wanted:
                if count > 0 and (done := self._let_in(batch, count)):
                    logger.warning("batch %s: %d held shards let in late", batch.id, done)
                    let_in[batch.id] = done
        return let_in

    def deadline_pressures(
        self, horizon_seconds: int = 3600, running: list[BatchRecord] | None = None
    ) -> dict[str, float]:
        """The work due within `horizon_seconds` over what its fleet does in that time, per
        model ("" for batches that name none), each at its own fleet's speed: 1.0 means the
        fleet, at full speed, needs all of it for the batches due then. A worker-fleet scales
        out on its model's, the stack's workers on the sum, as well as on waiting shards."""
        due_before = self.deps.now() + horizon_seconds
        pressures: dict[str, float] = {}
        for batch in self.running_batches() if running is None else running:
            if (batch.expires_at or 0) >= due_before:
                continue
            model = batch.model or ""
            due = self.remaining_work_seconds(batch)
            pressures[model] = pressures.get(model, 0.0) + due / horizon_seconds
        return pressures

    def remaining_tokens(self, batch: BatchRecord) -> float:
        """Its share of the planner's estimate (prompt plus output tokens) not run yet."""
        to_run = max(batch.request_total - batch.request_rejected, 1)
        ran = batch.request_completed + batch.request_failed - batch.request_rejected
        return batch.estimated_tokens * max(to_run - ran, 0) / to_run

    def remaining_work_seconds(self, batch: BatchRecord) -> float:
        """How long its model's whole fleet needs for its share of the planner's estimate
        that has not run yet."""
        remaining = round(self.remaining_tokens(batch))
        return work_seconds(remaining, self.deps.settings, self.throughput(batch.model))

    def flag_at_risk(self, running: list[BatchRecord] | None = None) -> list[str]:
        """Running batches that cannot finish by their deadline even if every worker the
        fleet may scale to ran only them (their remaining share of the planner's estimate at
        their model's tokens per second, else FLEET_TOKENS_PER_SECOND): each is marked once
        and announced as `Batch At Risk`, so its owner hears of it before it expires (and
        `batch.at_risk` goes to the tenant's subscribed webhook endpoints). Returns their
        ids."""
        now = self.deps.now()
        flagged = []
        for batch in self.running_batches() if running is None else running:
            if batch.at_risk_at:
                continue
            if now + self.remaining_work_seconds(batch) <= (batch.expires_at or now):
                continue
            marked = self.deps.table.batches.mark_at_risk(batch.id, now)
            if marked is not None:
                flagged.append(batch.id)
                logger.warning("batch %s cannot make its deadline", batch.id)
                self.notices.at_risk(marked)
        return flagged
