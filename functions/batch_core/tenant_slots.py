"""A tenant's limits on the batches it has not ended (TenantMaxActiveBatches) and the requests
they hold (TenantMaxQueuedRequests): a slot taken at create, its requests reserved once the
input is validated, released when the batch ends (or by the sweep, after a crash)."""

from __future__ import annotations

import logging

from batch_core.deps import Deps
from batch_core.errors import RateLimitError
from batch_core.models import TERMINAL_STATUSES
from batch_core.records import BatchRecord

logger = logging.getLogger(__name__)


class TenantSlots:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @property
    def kept(self) -> bool:
        """Whether tenants have limits: without, no slots are kept (a limit turned on later
        counts the batches created from then on)."""
        settings = self.deps.settings
        return bool(settings.tenant_max_active_batches or settings.tenant_max_queued_requests)

    def take(self, record: BatchRecord) -> None:
        """Count the new batch against its tenant's limits; RateLimitError (429) when the
        tenant already has the most active batches, or requests queued, it may have."""
        if not self.kept:
            return  # no limits, no bookkeeping: five AWS calls per batch saved
        settings, tenants = self.deps.settings, self.deps.table.tenants
        max_batches = settings.tenant_max_active_batches
        max_requests = settings.tenant_max_queued_requests
        if tenants.reserve_batch_slot(
            record.tenant,
            record.id,
            expires_at=record.expires_at or self.deps.now(),
            max_batches=max_batches,
            max_requests=max_requests,
        ):
            return
        active, queued = tenants.tenant_load(record.tenant)
        if max_batches and active >= max_batches:
            reason = f"{active} batches not yet ended, its limit is {max_batches}"
        else:
            reason = f"{queued} requests queued in its batches, its limit is {max_requests}"
        raise RateLimitError(
            f"This tenant has {reason}. Create this batch once an earlier one has ended."
        )

    def reserve_requests(self, record: BatchRecord, requests: int) -> str | None:
        """Hold a validated batch's requests against its tenant's TenantMaxQueuedRequests
        before it runs (at create the count is unknown, so two batches created at once both
        passed a check made then). None when held; else why not, for the batch's error."""
        if not self.kept:
            return None
        limit = self.deps.settings.tenant_max_queued_requests
        tenants = self.deps.table.tenants
        if tenants.count_slot_requests(record.tenant, record.id, requests, max_requests=limit):
            return None
        if requests > limit:
            return (
                f"This batch has {requests} requests; a tenant may have at most {limit} "
                "queued. Split the input into smaller batches."
            )
        _, queued = tenants.tenant_load(record.tenant)
        return (
            f"This batch has {requests} requests and the tenant's other batches hold {queued} "
            f"of its limit of {limit} queued requests. Create it again once some have ended."
        )

    def release(self, record: BatchRecord) -> None:
        """The batch ended: its slot is free (a failure is left for the sweep)."""
        if not self.kept:
            return
        try:
            self.deps.table.tenants.release_batch_slot(record.tenant, record.id)
        except Exception:  # the expiry sweep releases a slot left behind
            logger.exception("could not release the tenant slot of %s", record.id)

    def past_expiry(self) -> list[tuple[str, str]]:
        """(tenant, batch id) of the slots whose batch's window has passed."""
        return self.deps.table.tenants.slots_past_expiry(self.deps.now())

    def release_if_ended(self, slot: tuple[str, str]) -> str | None:
        """Release the slot if its batch has ended (or is gone: a crash came between the end
        and the release); its batch id if released."""
        tenant, batch_id = slot
        batch = self.deps.table.batches.get_batch(batch_id)
        if batch is None or batch.status in TERMINAL_STATUSES:
            self.deps.table.tenants.release_batch_slot(tenant, batch_id)
            return batch_id
        return None

    def release_ended(self) -> list[str]:
        """Every slot past its window whose batch has ended, released (the sweep does this
        slot by slot, each guarded); their batch ids."""
        released = map(self.release_if_ended, self.past_expiry())
        return [batch_id for batch_id in released if batch_id is not None]
