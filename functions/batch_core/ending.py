"""How a batch ends: cancel, expire (and the stuck sweep), a poison shard, finalize."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

from batch_core import s3keys
from batch_core.errors import ConflictError
from batch_core.ids import new_file_id, new_request_line_id
from batch_core.messaging import ShardTask
from batch_core.models import TERMINAL_STATUSES, BatchStatus
from batch_core.protocol import (
    BatchLineError,
    BatchRequestOutput,
)
from batch_core.records import BatchRecord, FileRecord, ShardRecord
from batch_core.retention import new_file_object
from batch_core.scheduling import UrgentShares, work_seconds
from batch_core.shard_parts import (
    ShardParts,
    jsonl,
)
from batch_core.storage import ObjectStore

logger = logging.getLogger(__name__)

_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_SHARD_FAILED_MESSAGE = (
    "This request could not be executed: the worker failed on its shard on every attempt."
)


def _concat(store: ObjectStore, keys: list[str]) -> Iterator[bytes]:
    for key in keys:
        yield from store.stream(key)


class Ending(ShardParts):
    """Every way to a terminal status, each merging the parts into the output and error files."""

    def cancel(self, batch_id: str, tenant: str | None = None) -> BatchRecord:
        """Ask a batch to stop. Workers stop at their next part; the tracker then writes a
        batch_cancelled line for every request that did not run, and the batch ends
        `cancelled` with the results finished so far. Cancelling twice is harmless.
        With `tenant`, only that tenant's batch can be cancelled."""
        record = self._require(batch_id) if tenant is None else self.get_for(tenant, batch_id)
        if record.status in {"cancelling", "cancelled"}:
            return record
        moved = self.repository.transition(
            batch_id,
            to_status="cancelling",
            from_statuses=["validating", "in_progress"],
            fields={"cancelling_at": self._now()},
        )
        current = self._require(batch_id)
        if not moved and current.status not in {"cancelling", "cancelled"}:
            raise ConflictError(f"Cannot cancel a batch that is {current.status}.")
        self._publish(current)
        return current

    def fail_shard(self, task: ShardTask) -> bool:
        """A shard that failed every delivery (SQS moved it to the dead-letter queue): each of
        its requests that never ran gets a `shard_failed` error line and the shard settles,
        so the batch still ends. False while a live worker still holds it (try again later).
        """
        shard = self.repository.get_shard(task.batch_id, task.shard_index)
        if shard is None or shard.status == "done":
            return True
        if shard.status == "running" and shard.lease_until > self._clock():
            return False
        self._close_unfinished_shard(shard, "shard_failed", _SHARD_FAILED_MESSAGE)
        logger.warning("shard %s:%d failed for good", task.batch_id, task.shard_index)
        self.let_next_shard_in(self.repository.get_batch(task.batch_id))
        return True

    def expire_overdue(self) -> list[BatchRecord]:
        """Expire every batch whose completion window has run out (the schedule's job).

        This is also the backstop that keeps anything from staying unfinished: a batch still
        not terminal `stuck_after_seconds` past its window (its tracker died, its finalize kept
        failing, a worker hangs on to a lease) is ended here, whatever state its shards or its
        intake are in, with an error line for every request that did not finish. The sweep
        (`batch_core.sweep`) runs it batch by batch, each guarded."""
        return [self.end_overdue(batch_id) for batch_id in self.overdue_batch_ids()]

    def overdue_batch_ids(self) -> list[str]:
        """Batches not yet ended whose completion window has run out."""
        return self.repository.overdue_batch_ids(self._now())

    def end_overdue(self, batch_id: str) -> BatchRecord:
        """Expire one overdue batch; end it outright if it is stuck past the backstop."""
        now = self._now()
        record = self.expire(batch_id)
        if (
            record.status not in TERMINAL_STATUSES
            and (record.expires_at or now) + self.settings.stuck_after_seconds <= now
        ):
            record = self._end_stuck(record)
        return record

    def _end_stuck(self, record: BatchRecord) -> BatchRecord:
        logger.error(
            "batch %s is still %s %d s after its window: ending it",
            record.id,
            record.status,
            self._now() - (record.expires_at or 0),
        )
        return self.finalize(record.id, force=True)

    def running_batches(self) -> list[BatchRecord]:
        """Every batch in progress (the expiry index's active batches, read once): the
        deadline checks below share one read of them per sweep."""
        active = self.repository.active_batches(self._now())
        return [batch for batch in active if batch.status == "in_progress"]

    def escalate_near_deadlines(self, running: list[BatchRecord] | None = None) -> list[str]:
        """Running batches whose deadline is now within the urgent tier's slack, with shards
        still waiting in a lower tier: their unfinished shards are sent to the urgent tier
        (a copy left behind below is skipped when a worker takes it: the shard is done or
        leased). Returns their ids."""
        now = self._now()
        soon = now + self.settings.urgent_slack_seconds
        shares = UrgentShares(self.repository, self.settings)
        moved = []
        for batch in self.running_batches() if running is None else running:
            if batch.tier == "urgent" or (batch.expires_at or 0) >= soon:
                continue
            work = self._remaining_work_seconds(batch)
            if not shares.admit(batch.tenant, batch.model, work, now):
                continue  # its tenant's share of the urgent tier is taken: a later sweep's
            if not self.repository.raise_tier(batch.id, "urgent", from_tier=batch.tier):
                continue
            waiting = [
                s.index
                for s in self.repository.list_shards(batch.id)
                if s.status != "done" and s.index < batch.shards_let_in  # held ones follow
            ]
            tasks = (ShardTask(batch_id=batch.id, shard_index=i) for i in waiting)
            self._queue_for(batch.model).send(tasks, "urgent", tenant=batch.tenant)
            logger.info("batch %s: %d shards moved to the urgent tier", batch.id, len(waiting))
            moved.append(batch.id)
        return moved

    def top_up_shards(self, running: list[BatchRecord] | None = None) -> dict[str, int]:
        """Let in the shards a crash kept out: a worker that died between settling a shard
        and letting the next one in leaves its batch with fewer than SHARDS_AHEAD queued or
        running. Returns how many were let in, by batch."""
        ahead = self.settings.shards_ahead
        let_in: dict[str, int] = {}
        for batch in self.running_batches() if running is None else running:
            if not ahead or batch.shards_released is None:
                continue
            settled = batch.shards_total - batch.shards_pending
            missing = min(ahead, batch.shards_total - settled) - (batch.shards_released - settled)
            if missing > 0 and (count := self.let_next_shard_in(batch, missing)):
                logger.warning("batch %s: %d held shards let in late", batch.id, count)
                let_in[batch.id] = count
        return let_in

    def deadline_pressures(
        self, horizon_seconds: int = 3600, running: list[BatchRecord] | None = None
    ) -> dict[str, float]:
        """The work due within `horizon_seconds` over what its fleet does in that time, per
        model ("" for batches that name none), each at its own fleet's speed: 1.0 means the
        fleet, at full speed, needs all of it for the batches due then. A worker-fleet scales
        out on its model's, the stack's workers on the sum, as well as on waiting shards."""
        due_before = self._now() + horizon_seconds
        pressures: dict[str, float] = {}
        for batch in self.running_batches() if running is None else running:
            if (batch.expires_at or 0) >= due_before:
                continue
            model = batch.model or ""
            due = self._remaining_work_seconds(batch)
            pressures[model] = pressures.get(model, 0.0) + due / horizon_seconds
        return pressures

    def _remaining_work_seconds(self, batch: BatchRecord) -> float:
        """How long its model's whole fleet needs for its share of the planner's estimate
        that has not run yet."""
        to_run = max(batch.request_total - batch.request_rejected, 1)
        ran = batch.request_completed + batch.request_failed - batch.request_rejected
        remaining = batch.estimated_tokens * max(to_run - ran, 0) / to_run
        return work_seconds(round(remaining), self.settings, self._throughput(batch.model))

    def flag_at_risk(self, running: list[BatchRecord] | None = None) -> list[str]:
        """Running batches that cannot finish by their deadline even if every worker the
        fleet may scale to ran only them (their remaining share of the planner's estimate at
        their model's tokens per second, else FLEET_TOKENS_PER_SECOND): each is marked once
        and announced as `Batch At Risk`, so its owner hears of it before it expires (and
        `batch.at_risk` goes to the tenant's subscribed webhook endpoints). Returns their
        ids."""
        now = self._now()
        flagged = []
        for batch in self.running_batches() if running is None else running:
            if batch.at_risk_at:
                continue
            if now + self._remaining_work_seconds(batch) <= (batch.expires_at or now):
                continue
            if self.repository.mark_at_risk(batch.id, now):
                flagged.append(batch.id)
                logger.warning("batch %s cannot make its deadline", batch.id)
                self._announce_at_risk(self._require(batch.id))
        return flagged

    def _announce_at_risk(self, marked: BatchRecord) -> None:
        """Notices, best-effort like every other: a failed one never stops the sweep (the
        batch is marked either way, so it is not announced twice)."""
        try:
            if self.events is not None:
                document = marked.to_batch().model_dump(mode="json")
                self.events.publish(document, detail_type=self.events.AT_RISK)
        except Exception:
            logger.exception("could not publish the at-risk event of %s", marked.id)
        try:
            if self.webhooks is not None:
                self.webhooks.batch_at_risk(marked)
        except Exception:
            logger.exception("could not queue the at-risk webhooks of %s", marked.id)

    def expire(self, batch_id: str) -> BatchRecord:
        """A running batch finalizes as `expired`: workers stop after their current part, the
        tracker writes batch_expired lines for what never ran and keeps finished results.
        A batch stuck in validation (no tracker runs for it) expires at once."""
        now = self._now()
        finalizing = self.repository.transition(
            batch_id,
            to_status="finalizing",
            from_statuses=["in_progress"],
            fields={"finalizing_at": now, "ending": "expired"},
        )
        expired_now = not finalizing and self.repository.transition(
            batch_id,
            to_status="expired",
            from_statuses=["validating"],
            fields={"expired_at": now},
        )
        if expired_now:
            self._announce(self._require(batch_id))
        current = self._require(batch_id)
        self._publish(current)
        return current

    def finalize(self, batch_id: str, *, force: bool = False) -> BatchRecord:
        """Merge the result parts into the output and error files; the batch completes.

        Running it twice gives the same files (ids derive from the batch id) and counts.
        With `force` (the stuck-batch backstop) a cancelled or expired batch ends without
        waiting for live leases.
        """
        record = self._require(batch_id)
        if record.status in TERMINAL_STATUSES:
            return record
        if record.status == "cancelling":
            return self._finish_unrun(
                record,
                code="batch_cancelled",
                message=_CANCELLED_MESSAGE,
                status="cancelled",
                from_status="cancelling",
                force=force,
            )
        if record.status == "finalizing" and record.ending == "expired":
            return self._finish_unrun(
                record,
                code="batch_expired",
                message=_EXPIRED_MESSAGE,
                status="expired",
                from_status="finalizing",
                force=force,
            )
        self.repository.transition(
            batch_id,
            to_status="finalizing",
            from_statuses=["in_progress"],
            fields={"finalizing_at": self._now()},
        )
        return self._end(record, "completed", from_status="finalizing")

    def _end(
        self, record: BatchRecord, status: BatchStatus, *, from_status: BatchStatus
    ) -> BatchRecord:
        """Merge the parts into the output and error files and move to a terminal status."""
        batch_id, tenant = record.id, record.tenant  # the output files are the batch owner's
        seconds = record.output_expires_after_seconds or self.settings.file_retention_seconds
        output_file_id = self._merge(batch_id, "output", tenant, seconds)
        error_file_id = self._merge(batch_id, "error", tenant, seconds)
        moved = self.repository.transition(
            batch_id,
            to_status=status,
            from_statuses=[from_status],
            fields={
                f"{status}_at": self._now(),
                "output_file_id": output_file_id,
                "error_file_id": error_file_id,
            },
        )
        final = self._require(batch_id)
        self._mirror_to_outbox(final)
        self._publish(final)
        if moved:
            self._announce(final)
        return final

    def _mirror_to_outbox(self, final: BatchRecord) -> None:
        if not final.outbox_name:
            return
        for file_id, filename in (
            (final.output_file_id, "output.jsonl"),
            (final.error_file_id, "errors.jsonl"),
        ):
            if not file_id:
                continue
            try:  # a copy for the dropper's convenience: the batch ends without it
                self.store.copy(
                    s3keys.file_key(file_id), s3keys.outbox_key(final.outbox_name, filename)
                )
            except Exception:
                logger.exception("could not copy %s of %s to its outbox", filename, final.id)

    def _finish_unrun(
        self,
        record: BatchRecord,
        *,
        code: str,
        message: str,
        status: BatchStatus,
        from_status: BatchStatus,
        force: bool = False,
    ) -> BatchRecord:
        """End a batch that stops early (cancelled, expired) once no worker runs its shards.

        A shard still leased by a live worker is waited for (the tracker asks again on its
        next poll): the worker stops after its current part. A dead worker's lease lapses,
        so this ends within one lease time whatever happened to the workers. Requests that
        never ran get an error line with `code`; finished results stay in the output.
        With `force` (the stuck-batch backstop) live leases are not waited for either.
        """
        now = self._clock()
        shards = self.repository.list_shards(record.id)
        if not force and any(s.status == "running" and s.lease_until > now for s in shards):
            return record
        for shard in shards:
            if shard.status != "done":
                self._close_unfinished_shard(shard, code, message)
        return self._end(record, status, from_status=from_status)

    def _close_unfinished_shard(self, shard: ShardRecord, code: str, message: str) -> None:
        """Write an error line (`response: null`) for each request of the shard that never
        ran, then settle the shard counting them failed, once."""
        finished, _ = self._recover_parts(shard)  # also counts parts written but not counted
        lines = [
            request
            if isinstance(request, BatchRequestOutput)
            else BatchRequestOutput(
                id=new_request_line_id(f"{shard.batch_id}/{request.custom_id}/{code}"),
                custom_id=request.custom_id,
                response=None,
                error=BatchLineError(code=code, message=message),
            )
            for request in self._unfinished(shard, finished)
        ]
        if lines:  # the same key and bytes if this runs again
            key = s3keys.errors_prefix(shard.batch_id, shard.index) + "never-ran.jsonl"
            self.store.put(key, jsonl(lines))
        self.repository.settle_shard(shard.batch_id, shard.index, never_ran=len(lines))

    def finalize_for_tracker(self, batch_id: str, task_token: str) -> BatchRecord:
        """Finalize, then tell the waiting tracker execution how it went."""
        record = self.finalize(batch_id)
        self.tracker.report_success(task_token, {"batch_id": batch_id, "status": record.status})
        return record

    def _merge(
        self, batch_id: str, kind: Literal["output", "error"], tenant: str, keep_seconds: int
    ) -> str | None:
        """Join the batch's result (or error) parts into one File, kept `keep_seconds`; None
        if there are none."""
        prefix = (
            s3keys.results_prefix(batch_id) if kind == "output" else s3keys.errors_prefix(batch_id)
        )
        keys = self.store.list_keys(prefix)
        if not keys:
            return None
        file_id = new_file_id(f"{batch_id}/{kind}")
        target = s3keys.file_key(file_id)
        size = self.store.put_stream(target, _concat(self.store, keys))
        now = self._now()
        file = new_file_object(
            file_id,
            size=size,
            created_at=now,
            filename=f"batch_{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            expires_at=now + keep_seconds,
        )
        self.repository.put_file(
            FileRecord(file=file, s3_key=target, batch_id=batch_id, tenant=tenant)
        )
        return file_id
