"""Retry: a new batch over the requests of an ended one that did not succeed."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from batch_core import s3keys
from batch_core.batch_params import MAX_METADATA_PAIRS, BatchParams, checked
from batch_core.batches import Batches
from batch_core.deps import Deps
from batch_core.errors import ConflictError
from batch_core.files import AssembledFile
from batch_core.ids import new_batch_id, new_file_id
from batch_core.intake_jobs import BuildRetryInput
from batch_core.messaging import IntakeJobs
from batch_core.records import BatchRecord, FileRecord
from batch_core.results import Results
from batch_core.retention import ExpiresAfter, new_file_object
from batch_core.validation import iter_lines


def _retry_input_file_id(child_id: str) -> str:
    return new_file_id(f"{child_id}/input")


def _linked(metadata: dict[str, str], key: str, value: str) -> dict[str, str]:
    """`metadata` plus one link pair, dropping the last pair if the 16-pair limit is reached."""
    linked = {k: v for k, v in metadata.items() if k != key}
    while len(linked) >= MAX_METADATA_PAIRS:
        linked.pop(next(reversed(linked)))
    return {**linked, key: value}


class Retries:
    """Retrying what failed, as a new batch with its own input file."""

    def __init__(
        self, deps: Deps, batches: Batches, results: Results, jobs: IntakeJobs | None
    ) -> None:
        self.deps = deps
        self.batches = batches
        self.results = results
        self.jobs = jobs

    def retry(self, tenant: str, batch_id: str) -> BatchRecord:
        """A child batch of the parent's requests that failed, expired or were cancelled (not
        the lines validation rejected: they would fail again). The two are linked in their
        metadata (`retry_of`, `retried_by`); retrying twice returns the same child."""
        parent = self.deps.tenant_batch(tenant, batch_id)
        if parent.status not in {"completed", "expired", "cancelled"}:
            raise ConflictError(
                f"Only a batch that ran can be retried; {batch_id} is {parent.status}."
            )
        child_id = new_batch_id(f"{tenant}/retry/{parent.id}")
        existing = self.deps.table.batches.get_batch(child_id)
        if existing is not None:
            return existing
        input_file = self.deps.table.files.get_file(parent.input_file_id)
        if input_file is None or input_file.expired(self.deps.now()):
            # The batch's own copy of its input outlives the File; a retry must not bring
            # back lines their owner deleted.
            raise ConflictError(
                f"The input file {parent.input_file_id} of batch {batch_id} was deleted or "
                "has expired; the batch can no longer be retried."
            )
        if parent.error_file_id and (
            not self.results.file_kept(parent.error_file_id)  # deleted or expired: its lines too
            or not self.deps.store.list_keys(s3keys.errors_prefix(parent.id))
        ):
            raise ConflictError(
                f"The error file or the working data of batch {batch_id} was deleted or has "
                "expired (the bucket keeps working data WorkingDataRetentionDays); it can no "
                "longer be retried."
            )
        if parent.request_failed - parent.request_rejected <= 0:
            raise ConflictError(f"Batch {batch_id} has no failed requests to retry.")
        # The child's input (the parent's failed lines, found by reading its error parts and
        # its input, which may be gigabytes) is assembled by an intake job, not in this
        # request: until then its File is `uploaded` and the child waits for it, as any batch
        # created on an upload still being joined does.
        input_file_id = _retry_input_file_id(child_id)
        now = self.deps.now()
        self.deps.table.files.put_file(
            FileRecord(
                file=new_file_object(
                    input_file_id,
                    size=0,
                    created_at=now,
                    filename=f"{parent.id}_retry.jsonl",
                    status="uploaded",
                    expires_at=now + self.deps.settings.file_retention_seconds,
                ),
                s3_key=s3keys.file_key(input_file_id),
                tenant=tenant,
            )
        )
        inherited = {k: v for k, v in (parent.metadata or {}).items() if k != "retried_by"}
        params = checked(
            BatchParams,
            {
                "endpoint": parent.endpoint,
                "completion_window": parent.completion_window,
                "metadata": _linked(inherited, "retry_of", parent.id),
                "invalid_lines": parent.invalid_lines,
                "priority": parent.priority,
                # The child's results are kept as long as the parent's.
                "output_expires_after": (
                    ExpiresAfter(anchor="created_at", seconds=parent.output_expires_after_seconds)
                    if parent.output_expires_after_seconds
                    else None
                ),
            },
        )
        child = self.batches.create_as(tenant, child_id, params, input_file_id=input_file_id)
        self.deps.table.batches.set_metadata(
            parent.id, _linked(dict(parent.metadata or {}), "retried_by", child.id)
        )
        if self.jobs is None:
            raise RuntimeError("no intake queue to build the retry's input")
        self.jobs.send(BuildRetryInput(parent_id=parent.id))
        return child

    def build_retry_input(self, parent_id: str) -> AssembledFile | None:
        """The retry job: write the child's input file (the parent's failed, expired,
        cancelled and shard_failed lines, byte for byte, in input order). The child, waiting
        on that File, then starts (`start_waiting_batches`). None when there is nothing (more)
        to do, so a redelivered job changes nothing."""
        parent = self.deps.batch(parent_id)
        file_id = _retry_input_file_id(new_batch_id(f"{parent.tenant}/retry/{parent.id}"))
        input_file = self.deps.table.files.get_file(file_id)
        if input_file is None or input_file.file.status != "uploaded":
            return None
        error: str | None = None
        size = 0
        try:
            source = self._input_source(parent)
            input_of_parent = self.deps.table.files.get_file(parent.input_file_id)
            if input_of_parent is None or input_of_parent.expired(self.deps.now()):
                raise ConflictError(f"The input file of batch {parent.id} was deleted.")
        except ConflictError as gone:
            error = str(gone)
        else:
            failed = self.results.failed_custom_ids(parent.id)
            size = self.deps.store.put_stream(input_file.s3_key, self._lines_of(source, failed))
            if size == 0:
                error = f"Batch {parent.id} has no lines to retry."
        waiting = self.deps.table.files.finish_file(
            file_id, status="error" if error else "processed", status_details=error, size=size
        )
        return AssembledFile(file_id=file_id, error=error, waiting_batches=waiting)

    def fail_retry_input(self, parent_id: str) -> AssembledFile | None:
        """The retry job failed every attempt: its File ends `error` (and its child fails)."""
        parent = self.deps.batch(parent_id)
        file_id = _retry_input_file_id(new_batch_id(f"{parent.tenant}/retry/{parent.id}"))
        error = "The retry's input could not be built after several attempts; retry again."
        waiting = self.deps.table.files.finish_file(file_id, status="error", status_details=error)
        return AssembledFile(file_id=file_id, error=error, waiting_batches=waiting)

    def _input_source(self, record: BatchRecord) -> str:
        """Where the batch's input lines still are: its own copy, else its input File."""
        if self.deps.store.exists(record.input_key):
            return record.input_key
        input_file = self.deps.table.files.get_file(record.input_file_id)
        if input_file is not None and self.deps.store.exists(input_file.s3_key):
            return input_file.s3_key
        raise ConflictError(f"The input of batch {record.id} no longer exists.")

    def _lines_of(self, input_key: str, custom_ids: set[str]) -> Iterator[bytes]:
        """The input lines whose custom_id is in `custom_ids` (the first of each), as read."""
        wanted = set(custom_ids)
        for _, raw in iter_lines(
            self.deps.store.stream(input_key), self.deps.settings.max_line_bytes
        ):
            if not raw or not wanted:
                continue
            try:
                custom_id = orjson.loads(raw).get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # a line validation rejected
            if isinstance(custom_id, str) and custom_id in wanted:
                wanted.discard(custom_id)
                yield raw + b"\n"  # iter_lines has already taken the line ending off
