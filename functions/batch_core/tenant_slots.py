"""A tenant's limits on the batches it has not ended (TenantMaxActiveBatches), the requests
they hold (TenantMaxQueuedRequests) and their estimated tokens (TenantMaxQueuedTokens), each
the tenant's own where `batchctl tenants set` gave it one (`tenant_limits`): a slot taken at
create, its requests and tokens reserved once the input is validated, all released when the
batch ends, whatever the end (or by the sweep, after a crash)."""

from __future__ import annotations

import logging

from batch_core.deps import Deps
from batch_core.errors import RateLimitError
from batch_core.models import TERMINAL_STATUSES, BatchError
from batch_core.records import BatchRecord
from batch_core.tenant_limits import EffectiveLimits, TenantLimitBook

logger = logging.getLogger(__name__)

REQUEST_LIMIT_EXCEEDED = "request_limit_exceeded"
TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"
"""OpenAI's code for a batch whose tokens its organization's queue cannot take."""


class TenantSlots:
    def __init__(self, deps: Deps, limits: TenantLimitBook | None = None) -> None:
        self.deps = deps
        self.limits = limits or TenantLimitBook(deps.table, deps.settings, deps.clock)

    def keeps(self, tenant: str) -> EffectiveLimits | None:
        """The tenant's limits when it has any: without, its batches are not counted (a
        limit turned on later counts the batches created from then on)."""
        limits = self.limits.of(tenant)
        return limits if limits.keeps_slots else None

    def take(self, record: BatchRecord) -> None:
        """Count the new batch against its tenant's limits; RateLimitError (429) when the
        tenant already has the most active batches, requests or tokens queued it may have."""
        limits = self.keeps(record.tenant)
        if limits is None:
            return  # no limits, no bookkeeping: four AWS calls per batch saved
        tenants = self.deps.table.tenants
        if tenants.reserve_batch_slot(
            record.tenant,
            record.id,
            expires_at=record.expires_at or self.deps.now(),
            max_batches=limits.max_active_batches,
            max_requests=limits.max_queued_requests,
            max_tokens=limits.max_queued_tokens,
        ):
            return
        active, queued = tenants.tenant_load(record.tenant)
        if limits.max_active_batches and active >= limits.max_active_batches:
            reason = f"{active} batches not yet ended, its limit is {limits.max_active_batches}"
        elif limits.max_queued_requests and queued >= limits.max_queued_requests:
            reason = (
                f"{queued} requests queued in its batches, its limit is "
                f"{limits.max_queued_requests}"
            )
        else:
            tokens = tenants.queued_tokens(record.tenant)
            reason = (
                f"{tokens} estimated tokens queued in its batches, its limit is "
                f"{limits.max_queued_tokens}"
            )
        raise RateLimitError(
            f"This tenant has {reason}. Create this batch once an earlier one has ended."
        )

    def reserve_requests(
        self, record: BatchRecord, requests: int, tokens: int
    ) -> BatchError | None:
        """Hold a validated batch's requests and estimated tokens against its tenant's
        limits before it runs (at create they are unknown, so two batches created at once
        both passed a check made then). None when held; else the batch's error, saying
        which limit and by how much."""
        limits = self.keeps(record.tenant)
        if limits is None:
            return None
        max_requests, max_tokens = limits.max_queued_requests, limits.max_queued_tokens
        tenants = self.deps.table.tenants
        if tenants.count_slot_requests(
            record.tenant,
            record.id,
            requests,
            tokens=tokens,
            max_requests=max_requests,
            max_tokens=max_tokens,
        ):
            return None
        if max_requests and requests > max_requests:
            return _request_error(
                f"This batch has {requests} requests; a tenant may have at most {max_requests} "
                "queued. Split the input into smaller batches."
            )
        if max_tokens and tokens > max_tokens:
            return _token_error(
                f"This batch's estimated {tokens} tokens exceed its tenant's limit of "
                f"{max_tokens} queued tokens. Split the input into smaller batches."
            )
        _, queued = tenants.tenant_load(record.tenant)
        if max_requests and queued + requests > max_requests:
            return _request_error(
                f"This batch has {requests} requests and the tenant's other batches hold "
                f"{queued} of its limit of {max_requests} queued requests. Create it again "
                "once some have ended."
            )
        held = tenants.queued_tokens(record.tenant)
        return _token_error(
            f"This batch's estimated {tokens} tokens and the {held} its tenant's other batches "
            f"hold pass its limit of {max_tokens} queued tokens. Create it again once some "
            "have ended."
        )

    def release(self, record: BatchRecord) -> None:
        """The batch ended: its slot, requests and tokens are free (a failure is left for
        the sweep). Whatever the limits now: a slot taken under limits since changed (or
        set for the tenant alone, which another function's settings do not show) is still
        released; a batch that took none costs one read."""
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


def _request_error(message: str) -> BatchError:
    return BatchError(code=REQUEST_LIMIT_EXCEEDED, message=message)


def _token_error(message: str) -> BatchError:
    return BatchError(code=TOKEN_LIMIT_EXCEEDED, message=message)
