"""How a batch ends: cancel, expire (and the stuck backstop), a poison shard, finalize. Every
end merges the result parts into the output and error Files; an early end (cancelled,
expired) first writes an error line for each request that never ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from batch_core.deps import Deps
from batch_core.errors import ConflictError
from batch_core.messaging import ShardTask, Tracker
from batch_core.models import TERMINAL_STATUSES, BatchStatus
from batch_core.notices import Notices
from batch_core.records import BatchRecord
from batch_core.results import Results
from batch_core.turns import Turns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndingKind:
    """One way a running batch ends: the status it leaves and the one it reaches, and the
    error line each request that never ran gets (none for a batch that completes)."""

    from_status: BatchStatus
    status: BatchStatus
    code: str | None = None
    message: str = ""


COMPLETED = EndingKind("finalizing", "completed")
CANCELLED = EndingKind(
    "cancelling",
    "cancelled",
    "batch_cancelled",
    "This request was not executed because the batch was cancelled.",
)
EXPIRED = EndingKind(
    "finalizing",
    "expired",
    "batch_expired",
    "This request could not be executed before the completion window expired.",
)
SHARD_FAILED = EndingKind(
    "in_progress",
    "in_progress",
    "shard_failed",
    "This request could not be executed: the worker failed on its shard on every attempt.",
)
"""Not a batch's end: one shard's, whose requests that never ran get this line."""


def ending_of(record: BatchRecord) -> EndingKind:
    """How a batch on its way to a terminal status ends."""
    if record.status == "cancelling":
        return CANCELLED
    if record.status == "finalizing" and record.ending == "expired":
        return EXPIRED
    return COMPLETED


class Ending:
    def __init__(
        self, deps: Deps, results: Results, turns: Turns, notices: Notices, tracker: Tracker
    ) -> None:
        self.deps = deps
        self.results = results
        self.turns = turns
        self.notices = notices
        self.tracker = tracker

    def cancel(self, batch_id: str, tenant: str | None = None) -> BatchRecord:
        """Ask a batch to stop. Workers stop at their next part; the tracker then writes a
        batch_cancelled line for every request that did not run, and the batch ends
        `cancelled` with the results finished so far. Cancelling twice is harmless.
        With `tenant`, only that tenant's batch can be cancelled."""
        deps = self.deps
        record = deps.batch(batch_id) if tenant is None else deps.tenant_batch(tenant, batch_id)
        if record.status in {"cancelling", "cancelled"}:
            return record
        moved = deps.table.batches.transition(
            batch_id,
            to_status="cancelling",
            from_statuses=["validating", "in_progress"],
            fields={"cancelling_at": deps.now()},
        )
        current = moved or deps.batch(batch_id)
        if moved is None and current.status not in {"cancelling", "cancelled"}:
            raise ConflictError(f"Cannot cancel a batch that is {current.status}.")
        self.notices.outbox(current)
        return current

    def fail_shard(self, task: ShardTask) -> bool:
        """A shard that failed every delivery (SQS moved it to the dead-letter queue): each of
        its requests that never ran gets a `shard_failed` error line and the shard settles,
        so the batch still ends. False while a live worker still holds it (try again later).
        """
        table = self.deps.table
        shard = table.shards.get_shard(task.batch_id, task.shard_index)
        if shard is None or shard.status == "done":
            return True
        if shard.status == "running" and shard.lease_until > self.deps.clock():
            return False
        assert SHARD_FAILED.code is not None
        self.results.close_unfinished(shard, SHARD_FAILED.code, SHARD_FAILED.message)
        logger.warning("shard %s:%d failed for good", task.batch_id, task.shard_index)
        self.turns.let_next_shard_in(table.batches.get_batch(task.batch_id))
        return True

    def expire(self, batch_id: str) -> BatchRecord:
        """A running batch finalizes as `expired`: workers stop after their current part, the
        tracker writes batch_expired lines for what never ran and keeps finished results.
        A batch stuck in validation (no tracker runs for it) expires at once."""
        now, batches = self.deps.now(), self.deps.table.batches
        finalizing = batches.transition(
            batch_id,
            to_status="finalizing",
            from_statuses=["in_progress"],
            fields={"finalizing_at": now, "ending": "expired"},
        )
        expired = None
        if finalizing is None:
            expired = batches.transition(
                batch_id,
                to_status="expired",
                from_statuses=["validating"],
                fields={"expired_at": now},
            )
            if expired is not None:
                self.notices.moved(expired)
        current = finalizing or expired or self.deps.batch(batch_id)
        self.notices.outbox(current)
        return current

    def overdue_batch_ids(self) -> list[str]:
        """Batches not yet ended whose completion window has run out."""
        return self.deps.table.batches.overdue_batch_ids(self.deps.now())

    def end_overdue(self, batch_id: str) -> BatchRecord:
        """Expire one overdue batch. This is also the backstop that keeps anything from
        staying unfinished: a batch still not terminal `stuck_after_seconds` past its window
        (its tracker died, its finalize kept failing, a worker hangs on to a lease) is ended
        here, whatever state its shards or its intake are in."""
        now = self.deps.now()
        record = self.expire(batch_id)
        if (
            record.status not in TERMINAL_STATUSES
            and (record.expires_at or now) + self.deps.settings.stuck_after_seconds <= now
        ):
            logger.error(
                "batch %s is still %s %d s after its window: ending it",
                record.id,
                record.status,
                now - (record.expires_at or 0),
            )
            record = self.finalize(record.id, force=True)
        return record

    def expire_overdue(self) -> list[BatchRecord]:
        """`end_overdue` for every overdue batch (the sweep does it batch by batch, each
        guarded)."""
        return [self.end_overdue(batch_id) for batch_id in self.overdue_batch_ids()]

    def finalize(self, batch_id: str, *, force: bool = False) -> BatchRecord:
        """End a batch whose shards have all settled, or which was cancelled or expired: the
        parts merged into the output and error files, the batch in its terminal status.

        Running it twice gives the same files (ids derive from the batch id) and counts.
        A cancelled or expired batch waits for live leases (the tracker asks again), unless
        `force` (the stuck-batch backstop)."""
        record = self.deps.batch(batch_id)
        if record.status in TERMINAL_STATUSES:
            return record
        kind = ending_of(record)
        if kind.code is not None:
            return self._finish_unrun(record, kind, force=force)
        self.deps.table.batches.transition(
            batch_id,
            to_status="finalizing",
            from_statuses=["in_progress"],
            fields={"finalizing_at": self.deps.now()},
        )
        return self.end(record, kind)

    def finalize_for_tracker(self, batch_id: str, task_token: str) -> BatchRecord:
        """Finalize, then tell the waiting tracker execution how it went."""
        record = self.finalize(batch_id)
        self.tracker.report_success(task_token, {"batch_id": batch_id, "status": record.status})
        return record

    def end(self, record: BatchRecord, kind: EndingKind) -> BatchRecord:
        """Merge the parts into the output and error files and move to `kind`'s status."""
        output_file_id = self.results.merge(record, "output")
        error_file_id = self.results.merge(record, "error")
        moved = self.deps.table.batches.transition(
            record.id,
            to_status=kind.status,
            from_statuses=[kind.from_status],
            fields={
                f"{kind.status}_at": self.deps.now(),
                "output_file_id": output_file_id,
                "error_file_id": error_file_id,
            },
        )
        final = moved or self.deps.batch(record.id)
        self.notices.mirror_results(final)
        self.notices.outbox(final)
        if moved is not None:
            self.notices.moved(moved)
        return final

    def _finish_unrun(self, record: BatchRecord, kind: EndingKind, *, force: bool) -> BatchRecord:
        """End a batch that stops early (cancelled, expired) once no worker runs its shards.

        A shard still leased by a live worker is waited for (the tracker asks again on its
        next poll): the worker stops after its current part. A dead worker's lease lapses,
        so this ends within one lease time whatever happened to the workers. Requests that
        never ran get `kind`'s error line; finished results stay in the output."""
        assert kind.code is not None
        now = self.deps.clock()
        shards = self.deps.table.shards.list_shards(record.id)
        if not force and any(s.status == "running" and s.lease_until > now for s in shards):
            return record
        for shard in shards:
            if shard.status != "done":
                self.results.close_unfinished(shard, kind.code, kind.message)
        return self.end(record, kind)
