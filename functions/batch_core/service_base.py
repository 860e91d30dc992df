"""The collaborators every stage of a batch uses, its reads, and how a status change is told
(the outbox file for dropped batches, the status event and webhooks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from batch_core import s3keys
from batch_core.batch_metrics import count_status
from batch_core.errors import NotFoundError, RateLimitError
from batch_core.messaging import IntakeJobs, ShardQueue, ShardTask, StatusEvents, Tracker
from batch_core.models import TERMINAL_STATUSES
from batch_core.records import BatchRecord, ServedModel
from batch_core.repository import BatchRepository
from batch_core.scheduling import ShardTier
from batch_core.settings import Settings
from batch_core.storage import ObjectStore
from batch_core.webhooks import WebhookService

logger = logging.getLogger(__name__)

MODEL_REGISTRY_SECONDS = 60.0
"""How long a process keeps the model registry it read."""


class ServiceBase:
    """What every stage shares: the settings, the table, the bucket, the queues, the clock."""

    def __init__(
        self,
        settings: Settings,
        repository: BatchRepository,
        store: ObjectStore,
        shard_queue: ShardQueue,
        tracker: Tracker,
        events: StatusEvents | None = None,
        clock: Callable[[], float] = time.time,
        jobs: IntakeJobs | None = None,
        webhooks: WebhookService | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.webhooks = webhooks
        self.repository = repository
        self.store = store
        self.shard_queue = shard_queue
        self.tracker = tracker
        self.events = events
        self._clock = clock
        self._registry: tuple[float, dict[str, ServedModel]] | None = None

    def _now(self) -> int:
        return int(self._clock())

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        return self.repository.get_batch(batch_id)

    def get_for(self, tenant: str, batch_id: str) -> BatchRecord:
        """The tenant's batch; NotFoundError for unknown ids and other tenants' batches alike."""
        record = self.repository.get_batch(batch_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"No batch found with id {batch_id!r}.", param="batch_id")
        return record

    def _require(self, batch_id: str) -> BatchRecord:
        record = self.repository.get_batch(batch_id)
        if record is None:
            raise NotFoundError(f"No batch found with id {batch_id!r}.")
        return record

    # -- served models: where a batch's shards go ---------------------------------------------

    def _models(self) -> dict[str, ServedModel]:
        """The registry, read at most once a minute per process: models change rarely, and a
        retired one may take that long to be refused by every function."""
        now = time.monotonic()
        cached = self._registry
        if cached is None or now - cached[0] > MODEL_REGISTRY_SECONDS:
            cached = (now, {m.name: m for m in self.repository.list_models()})
            self._registry = cached
        return cached[1]

    def forget_models(self) -> None:
        """Read the registry again at the next use (after a change made in this process)."""
        self._registry = None

    def _served(self, model: str | None) -> ServedModel | None:
        """`model`'s registry entry, if it has one."""
        return self._models().get(model) if model else None

    def _queue_for(self, model: str | None) -> ShardQueue:
        """The shard queues of `model`'s workers: its registry entry's, else the stack's own."""
        served = self._served(model)
        if served is None:
            return self.shard_queue
        return self.shard_queue.of_model(
            served.queue_url, urgent_url=served.urgent_queue_url, bulk_url=served.bulk_queue_url
        )

    # -- how many of a batch's shards wait in its queue (SHARDS_AHEAD) ---------------------

    def shards_let_in_first(self, shards_total: int) -> int | None:
        """How many of a new batch's shards are queued at once: SHARDS_AHEAD, or None (all).
        Recorded with its move to in_progress, before any is sent, so a worker settling the
        first shard always knows the batch holds shards back."""
        ahead = self.settings.shards_ahead
        return min(ahead, shards_total) if ahead else None

    def queue_first_shards(self, record: BatchRecord, tier: ShardTier, model: str | None) -> None:
        """Send a running batch's shards let in so far (`shards_released`; None: all of them).
        The rest are let in one per settled shard (`let_next_shard_in`). Sending again after
        a crash is harmless: a copy of a shard done or running elsewhere is skipped."""
        tasks = (ShardTask(batch_id=record.id, shard_index=i) for i in range(record.shards_let_in))
        self._queue_for(model).send(tasks, tier, tenant=record.tenant)
        self.repository.mark_shards_queued(record.id)

    def let_next_shard_in(
        self, batch: BatchRecord | None, count: int = 1, *, queue: ShardQueue | None = None
    ) -> int:
        """A shard of `batch` settled (or `count` are missing, `Ending.top_up_shards`): its
        next held shards join the queue of its current tier, behind what other batches
        queued meanwhile, which is what takes turns between batches. Each is sent before it is
        counted: a crash between the two sends it twice (the copy is skipped), never not at
        all. `queue`: the batch's model's queues when the caller has them (a worker does),
        else they come from the registry. Returns how many were let in."""
        let_in = attempts = 0
        while batch is not None and let_in < count and attempts < count + 3:
            attempts += 1
            released = batch.shards_released
            if batch.status != "in_progress" or released is None:
                break
            if released >= batch.shards_total:
                break
            task = ShardTask(batch_id=batch.id, shard_index=released)
            (queue or self._queue_for(batch.model)).send([task], batch.tier, tenant=batch.tenant)
            if self.repository.count_released(batch.id, released):
                let_in += 1
                batch = batch.model_copy(update={"shards_released": released + 1})
            else:  # another worker let this one in first: read again, send the next
                batch = self.repository.get_batch(batch.id)
        return let_in

    def _throughput(self, model: str | None) -> int:
        """Tokens per second of `model`'s whole fleet: its registry entry's, else the
        stack's FLEET_TOKENS_PER_SECOND."""
        served = self._served(model)
        if served is not None and served.tokens_per_second:
            return served.tokens_per_second
        return self.settings.fleet_tokens_per_second

    def served_model_names(self) -> list[str]:
        """What validation accepts: SERVED_MODELS and the registry's active models (empty
        when both are: any model)."""
        models = list(self._models().values())
        registered = {m.name for m in models if m.status == "active"}
        retiring = {m.name for m in models if m.status == "retiring"}
        named = {name for name in self.settings.served_models if name not in retiring}
        if retiring and not (named or registered):  # an empty list would accept any model
            return ["no model (every registered model is retiring)"]
        return sorted(named | registered)

    # -- the tenant's load: active batches and the requests they hold ----------------------

    def _tenant_limits(self) -> bool:
        """Whether tenants have limits: without, no slots are kept (a limit turned on later
        counts the batches created from then on)."""
        return bool(
            self.settings.tenant_max_active_batches or self.settings.tenant_max_queued_requests
        )

    def _take_slot(self, record: BatchRecord) -> None:
        """Count the new batch against its tenant's limits; RateLimitError (429) when the
        tenant already has the most active batches, or requests queued, it may have."""
        max_batches = self.settings.tenant_max_active_batches
        max_requests = self.settings.tenant_max_queued_requests
        if not self._tenant_limits():
            return  # no limits, no bookkeeping: five AWS calls per batch saved
        if self.repository.reserve_batch_slot(
            record.tenant,
            record.id,
            expires_at=record.expires_at or self._now(),
            max_batches=max_batches,
            max_requests=max_requests,
        ):
            return
        active, queued = self.repository.tenant_load(record.tenant)
        if max_batches and active >= max_batches:
            reason = f"{active} batches not yet ended, its limit is {max_batches}"
        else:
            reason = f"{queued} requests queued in its batches, its limit is {max_requests}"
        raise RateLimitError(
            f"This tenant has {reason}. Create this batch once an earlier one has ended."
        )

    def _reserve_requests(self, record: BatchRecord, requests: int) -> str | None:
        """Hold a validated batch's requests against its tenant's TenantMaxQueuedRequests
        before it runs (at create the count is unknown, so two batches created at once both
        passed a check made then). None when held; else why not, for the batch's error."""
        limit = self.settings.tenant_max_queued_requests
        if not self._tenant_limits():
            return None
        if self.repository.count_slot_requests(
            record.tenant, record.id, requests, max_requests=limit
        ):
            return None
        if requests > limit:
            return (
                f"This batch has {requests} requests; a tenant may have at most {limit} "
                "queued. Split the input into smaller batches."
            )
        _, queued = self.repository.tenant_load(record.tenant)
        return (
            f"This batch has {requests} requests and the tenant's other batches hold {queued} "
            f"of its limit of {limit} queued requests. Create it again once some have ended."
        )

    def _release_slot(self, record: BatchRecord) -> None:
        if not self._tenant_limits():
            return
        try:
            self.repository.release_batch_slot(record.tenant, record.id)
        except Exception:  # the expiry sweep releases a slot left behind
            logger.exception("could not release the tenant slot of %s", record.id)

    def release_ended_slots(self) -> list[str]:
        """Slots of batches past their window: those whose batch has ended (a crash came
        between the end and the release) are released. Returns their batch ids. The sweep
        (`batch_core.sweep`) runs it slot by slot, each guarded."""
        released = map(self.release_ended_slot, self.slots_past_expiry())
        return [batch_id for batch_id in released if batch_id is not None]

    def slots_past_expiry(self) -> list[tuple[str, str]]:
        """(tenant, batch id) of the slots whose batch's window has passed."""
        return self.repository.slots_past_expiry(self._now())

    def release_ended_slot(self, slot: tuple[str, str]) -> str | None:
        """Release the slot if its batch has ended (or is gone); its batch id if released."""
        tenant, batch_id = slot
        batch = self.repository.get_batch(batch_id)
        if batch is None or batch.status in TERMINAL_STATUSES:
            self.repository.release_batch_slot(tenant, batch_id)
            return batch_id
        return None

    def _announce(self, record: BatchRecord) -> None:
        """Tell subscribers a batch reached a new status (in_progress or a terminal one)."""
        try:
            count_status(record.status)
        except Exception:  # a metric must never fail the batch either
            logger.exception("could not count the status of %s", record.id)
        if record.status in TERMINAL_STATUSES:
            self._release_slot(record)
        try:
            if self.events is not None:
                self.events.publish(record.to_batch().model_dump(mode="json"))
        except Exception:  # a notification must never fail the batch itself
            logger.exception("could not publish the status event of %s", record.id)
        try:
            if self.webhooks is not None and record.status in TERMINAL_STATUSES:
                self.webhooks.batch_ended(record)
        except Exception:
            logger.exception("could not queue the webhooks of %s", record.id)

    def _publish(self, record: BatchRecord) -> None:
        """Keep outbox/<name>/batch.json current for batches that came in as dropped files.

        A notice, like the status event: it never fails what told it (a worker's part, the
        expiry sweep); the next change of the batch writes it again."""
        if not record.outbox_name:
            return
        try:
            key = s3keys.outbox_key(record.outbox_name, "batch.json")
            self.store.put_json(key, record.to_batch().model_dump(mode="json"))
        except Exception:
            logger.exception("could not write the outbox batch.json of %s", record.id)
