"""The batch service: intake, running a shard, finalizing. Every business rule lives here.

Handlers and the worker loop translate an event into one call on this class.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import orjson

from batch_core import s3keys
from batch_core.drop_options import (
    MAX_METADATA_PAIRS,
    DropOptions,
    InvalidLines,
    check_metadata,
    drop_options,
)
from batch_core.errors import (
    ConflictError,
    InvalidRequestError,
    MissingObjectError,
    NotFoundError,
)
from batch_core.files import AssembledFile
from batch_core.ids import new_batch_id, new_file_id, new_request_id, new_request_line_id
from batch_core.intake_jobs import BuildRetryInput
from batch_core.media_urls import MediaPolicy, first_refused
from batch_core.messaging import IntakeJobs, ShardQueue, ShardTask, StatusEvents, Tracker
from batch_core.models import SUPPORTED_ENDPOINTS, TERMINAL_STATUSES, BatchError, FileObject
from batch_core.protocol import (
    BatchLineError,
    BatchRequestOutput,
    BatchResponse,
    Engine,
    EngineRequest,
    ErrorDetail,
    ShardRequest,
    UnreadableShardLine,
    read_output_line,
    read_shard_line,
    usage_of,
)
from batch_core.records import BatchRecord, FileRecord, ShardRecord
from batch_core.repository import BatchRepository
from batch_core.retention import ExpiresAfter
from batch_core.settings import Settings
from batch_core.sharding import PlannedShard, ShardBounds, ShardPlanner
from batch_core.storage import ObjectStore
from batch_core.validation import (
    BatchValidator,
    RejectedLine,
    ValidationLimits,
    ValidationReport,
    iter_lines,
)
from batch_core.webhooks import WebhookService
from batch_core.windows import window_seconds

logger = logging.getLogger(__name__)

ShardOutcome = Literal["done", "interrupted", "stopped", "busy", "skipped"]
"""done: settled; interrupted: the worker is stopping, another finishes it; stopped: the batch
is no longer running; busy: another worker holds the shard's lease; skipped: nothing to do
(already done, or the batch is not running)."""


@dataclass
class ShardRun:
    """What one attempt at a shard did (for the worker's logs and metrics)."""

    outcome: ShardOutcome
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ResultPart:
    """One part file of a batch's results, for reading them while the batch runs."""

    kind: Literal["output", "error"]
    bytes: int
    url: str
    """A short-lived presigned GET URL."""


@dataclass(frozen=True)
class DroppedObject:
    """An object that landed in the bucket (from an S3 event)."""

    key: str
    etag: str = ""
    sequencer: str = ""
    version_id: str = ""

    @property
    def identity(self) -> str:
        """The same upload always has the same identity; a new upload of the key does not."""
        return f"{self.key}#{self.version_id}#{self.sequencer or self.etag}"


@dataclass
class _Tally:
    """The counts one part adds to its batch."""

    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, succeeded: bool, usage: tuple[int, int, int]) -> None:
        if not succeeded:
            self.failed += 1
            return
        self.completed += 1
        self.input_tokens += usage[0]
        self.cached_tokens += usage[1]
        self.output_tokens += usage[2]


@dataclass
class _Part:
    """Results gathered for the next part file of a shard."""

    succeeded: list[BatchRequestOutput] = field(default_factory=list)
    failed: list[BatchRequestOutput] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.succeeded) + len(self.failed)

    def tally(self) -> _Tally:
        tally = _Tally(failed=len(self.failed))
        for line in self.succeeded:
            assert line.response is not None
            tally.add(True, usage_of(line.response.body))
        return tally


@dataclass
class _Finished:
    """What earlier attempts at a shard already wrote: by custom_id, and by line id for
    shard lines that could not be read (they may have no custom_id)."""

    custom_ids: set[str] = field(default_factory=set)
    line_ids: set[str] = field(default_factory=set)


def _unreadable_line(shard: ShardRecord, line: UnreadableShardLine) -> BatchRequestOutput:
    """The error line of a shard line that cannot be read; its id is fixed by its place, so
    a later attempt recognises it as written."""
    return _refused_line(
        f"{shard.batch_id}/{shard.index}/unreadable/{line.line_number}",
        line.custom_id,
        message=f"The request could not be read: {line.reason}",
        code="unreadable_request",
    )


def _media_refused_line(
    shard: ShardRecord, request: ShardRequest, param: str, reason: str
) -> BatchRequestOutput:
    return _refused_line(
        f"{shard.batch_id}/{request.custom_id}/media",
        request.custom_id,
        message=f"Invalid '{param}': {reason}.",
        code="media_url_refused",
        param=param,
    )


def _refused_line(
    seed: str, custom_id: str | None, *, message: str, code: str | None, param: str | None = None
) -> BatchRequestOutput:
    """An error line with a 400 response in OpenAI's shape, its ids derived from `seed`."""
    return BatchRequestOutput(
        id=new_request_line_id(seed),
        custom_id=custom_id,
        response=BatchResponse(
            status_code=400,
            request_id=new_request_id(seed),
            body={"error": ErrorDetail(message=message, param=param, code=code).model_dump()},
        ),
    )


class BatchService:
    """The batch lifecycle over the table, the bucket, the shard queue and the tracker."""

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

    def _now(self) -> int:
        return int(self._clock())

    # -- reads ------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        return self.repository.get_batch(batch_id)

    def get_for(self, tenant: str, batch_id: str) -> BatchRecord:
        """The tenant's batch; NotFoundError for unknown ids and other tenants' batches alike."""
        record = self.repository.get_batch(batch_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"No batch found with id {batch_id!r}.", param="batch_id")
        return record

    def list_batches(
        self, tenant: str, *, after: str | None = None, limit: int = 20
    ) -> tuple[list[BatchRecord], bool]:
        """The tenant's batches, newest first; `after` is the last id of the previous page."""
        cursor = None
        if after is not None:
            cursor = self.repository.listing_position(tenant, "batch", after)
            if cursor is None:
                raise NotFoundError(f"No such Batch object: {after}", param="after")
        return self.repository.list_batches(tenant, after=cursor, limit=limit)

    # -- batches created through the API ------------------------------------------------

    def create_batch(
        self,
        tenant: str,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        invalid_lines: InvalidLines = "fail",
        output_expires_after: ExpiresAfter | None = None,
    ) -> BatchRecord:
        """Create a batch over an uploaded file: its input is copied to
        `batches/<id>/input.jsonl`, whose S3 event starts the same validation a dropped
        file gets. The same `idempotency_key` always returns the same batch."""
        seed = f"{tenant}/idempotency/{idempotency_key}" if idempotency_key else None
        fingerprint = None
        if idempotency_key:
            parameters: list[object] = [
                input_file_id,
                endpoint,
                completion_window,
                metadata,
                invalid_lines,
            ]
            if output_expires_after is not None:  # keeps earlier batches' fingerprints
                parameters.append(output_expires_after.model_dump())
            fingerprint = hashlib.sha256(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS))
        return self._create_batch(
            tenant,
            new_batch_id(seed),
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            invalid_lines=invalid_lines,
            fingerprint=fingerprint.hexdigest() if fingerprint else None,
            output_expires_after=output_expires_after,
        )

    def _create_batch(
        self,
        tenant: str,
        batch_id: str,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        invalid_lines: InvalidLines,
        fingerprint: str | None = None,
        output_expires_after: ExpiresAfter | None = None,
    ) -> BatchRecord:
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise InvalidRequestError(
                f"Unsupported endpoint {endpoint!r}; use one of {', '.join(SUPPORTED_ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        seconds = window_seconds(completion_window)
        metadata = check_metadata(metadata) if metadata else None
        input_file = self.repository.get_file(input_file_id)
        if input_file is None or input_file.tenant != tenant or input_file.expired(self._now()):
            raise NotFoundError(f"No such File object: {input_file_id}", param="input_file_id")
        if input_file.file.purpose != "batch":
            raise InvalidRequestError(
                f"File {input_file_id} has purpose {input_file.file.purpose!r}; a batch needs "
                "a file uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_value",
            )
        if input_file.file.status == "error":
            raise InvalidRequestError(
                f"File {input_file_id} could not be assembled: {input_file.file.status_details}",
                param="input_file_id",
                code="invalid_value",
            )
        now = self._now()
        record = BatchRecord(
            id=batch_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status="validating",
            created_at=now,
            expires_at=now + seconds,
            metadata=metadata,
            input_key=s3keys.batch_input_key(batch_id),
            invalid_lines=invalid_lines,
            tenant=tenant,
            idempotency_fingerprint=fingerprint,
            output_expires_after_seconds=(
                output_expires_after.seconds if output_expires_after else None
            ),
        )
        if not self.repository.create_batch(record):
            existing = self.get_for(tenant, batch_id)  # a retried create: the same batch
            if existing.idempotency_fingerprint != fingerprint:
                raise InvalidRequestError(
                    "This Idempotency-Key was already used with other parameters; a key may "
                    "only be reused to retry the same request. Use a new key for a new batch.",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            if existing.status != "validating" or self.store.exists(existing.input_key):
                return existing
            record = existing  # the first attempt died before copying the input
        if input_file.file.status == "uploaded" and self.repository.wait_for_file(
            input_file_id, batch_id
        ):
            return record  # its upload is still being joined: the join job copies it
        self.store.copy(input_file.s3_key, record.input_key)
        return record

    def start_waiting_batches(self, joined: AssembledFile | None) -> None:
        """A File assembled off the request path is done (an upload's join, a retry's input):
        the batches created on it meanwhile get their input (and start validating), or fail
        when it could not be assembled."""
        if joined is None:
            return
        file_id, error = joined.file_id, joined.error
        file = self.repository.get_file(file_id)
        for batch_id in joined.waiting_batches:
            record = self.repository.get_batch(batch_id)
            if record is None or record.status not in {"validating", "cancelling"}:
                continue
            if error is None and file is not None:
                self.store.copy(file.s3_key, record.input_key)
            elif record.status == "validating":
                self._fail_validation(
                    record, [BatchError(code="invalid_input_file", message=error)]
                )
            else:
                self._end(record, "cancelled", from_status="cancelling")

    def _ingest_created_batch(self, batch_id: str) -> BatchRecord | None:
        """The S3 event of a batch created through the API: validate it (once)."""
        record = self.repository.get_batch(batch_id)
        if record is None:
            logger.warning("input for unknown batch %s", batch_id)
            return None
        if record.status == "cancelling" and not record.shards_queued and not record.request_total:
            # Cancelled before validation began: nothing to run, nothing to report.
            return self._end(record, "cancelled", from_status="cancelling")
        return self._resume_intake(record, record.endpoint)

    # -- retry and partial results ----------------------------------------------------

    def retry(self, tenant: str, batch_id: str) -> BatchRecord:
        """A child batch of the parent's requests that failed, expired or were cancelled (not
        the lines validation rejected: they would fail again). The two are linked in their
        metadata (`retry_of`, `retried_by`); retrying twice returns the same child."""
        parent = self.get_for(tenant, batch_id)
        if parent.status not in {"completed", "expired", "cancelled"}:
            raise ConflictError(
                f"Only a batch that ran can be retried; {batch_id} is {parent.status}."
            )
        child_id = new_batch_id(f"{tenant}/retry/{parent.id}")
        existing = self.repository.get_batch(child_id)
        if existing is not None:
            return existing
        if parent.error_file_id and not self.store.list_keys(s3keys.errors_prefix(parent.id)):
            raise ConflictError(
                f"The working data of batch {batch_id} has expired (the bucket keeps it "
                "WorkingDataRetentionDays); it can no longer be retried."
            )
        if parent.request_failed - parent.request_rejected <= 0:
            raise ConflictError(f"Batch {batch_id} has no failed requests to retry.")
        # The child's input (the parent's failed lines, found by reading its error parts and
        # its input, which may be gigabytes) is assembled by an intake job, not in this
        # request: until then its File is `uploaded` and the child waits for it, as any batch
        # created on an upload still being joined does.
        input_file_id = _retry_input_file_id(child_id)
        now = self._now()
        self.repository.put_file(
            FileRecord(
                file=FileObject(
                    id=input_file_id,
                    bytes=0,
                    created_at=now,
                    filename=f"{parent.id}_retry.jsonl",
                    purpose="batch",
                    status="uploaded",
                    expires_at=now + self.settings.file_retention_seconds,
                ),
                s3_key=s3keys.file_key(input_file_id),
                tenant=tenant,
            )
        )
        inherited = {k: v for k, v in (parent.metadata or {}).items() if k != "retried_by"}
        child = self._create_batch(
            tenant,
            child_id,
            input_file_id=input_file_id,
            endpoint=parent.endpoint,
            completion_window=parent.completion_window,
            metadata=_linked(inherited, "retry_of", parent.id),
            invalid_lines=parent.invalid_lines,
            output_expires_after=(  # the child's results are kept as long as the parent's
                ExpiresAfter(anchor="created_at", seconds=parent.output_expires_after_seconds)
                if parent.output_expires_after_seconds
                else None
            ),
        )
        self.repository.set_metadata(
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
        parent = self._require(parent_id)
        file_id = _retry_input_file_id(new_batch_id(f"{parent.tenant}/retry/{parent.id}"))
        input_file = self.repository.get_file(file_id)
        if input_file is None or input_file.file.status != "uploaded":
            return None
        error: str | None = None
        size = 0
        try:
            source = self._input_source(parent)
        except ConflictError as gone:
            error = str(gone)
        else:
            failed = self._failed_custom_ids(parent.id)
            size = self.store.put_stream(input_file.s3_key, self._lines_of(source, failed))
            if size == 0:
                error = f"Batch {parent.id} has no lines to retry."
        waiting = self.repository.finish_file(
            file_id, status="error" if error else "processed", status_details=error, size=size
        )
        return AssembledFile(file_id=file_id, error=error, waiting_batches=waiting)

    def fail_retry_input(self, parent_id: str) -> AssembledFile | None:
        """The retry job failed every attempt: its File ends `error` (and its child fails)."""
        parent = self._require(parent_id)
        file_id = _retry_input_file_id(new_batch_id(f"{parent.tenant}/retry/{parent.id}"))
        error = "The retry's input could not be built after several attempts; retry again."
        waiting = self.repository.finish_file(file_id, status="error", status_details=error)
        return AssembledFile(file_id=file_id, error=error, waiting_batches=waiting)

    def _input_source(self, record: BatchRecord) -> str:
        """Where the batch's input lines still are: its own copy, else its input File."""
        if self.store.exists(record.input_key):
            return record.input_key
        input_file = self.repository.get_file(record.input_file_id)
        if input_file is not None and self.store.exists(input_file.s3_key):
            return input_file.s3_key
        raise ConflictError(f"The input of batch {record.id} no longer exists.")

    def _failed_custom_ids(self, batch_id: str) -> set[str]:
        """custom_ids of the requests that ran and failed or never ran."""
        rejected = s3keys.rejected_lines_key(batch_id)
        failed: set[str] = set()
        for key in self.store.list_keys(s3keys.errors_prefix(batch_id)):
            if key == rejected:
                continue
            for _, raw in iter_lines(self.store.stream(key)):
                facts = read_output_line(raw) if raw else None
                if facts is not None and facts.custom_id is not None:
                    failed.add(facts.custom_id)
        return failed

    def _lines_of(self, input_key: str, custom_ids: set[str]) -> Iterator[bytes]:
        """The input lines whose custom_id is in `custom_ids` (the first of each), as read."""
        wanted = set(custom_ids)
        for _, raw in iter_lines(self.store.stream(input_key), self.settings.max_line_bytes):
            if not raw or not wanted:
                continue
            try:
                custom_id = orjson.loads(raw).get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # a line validation rejected
            if isinstance(custom_id, str) and custom_id in wanted:
                wanted.discard(custom_id)
                yield raw + b"\n"  # iter_lines has already taken the line ending off

    def result_parts(self, tenant: str, batch_id: str) -> list[ResultPart]:
        """The result and error parts written so far, readable while the batch runs."""
        record = self.get_for(tenant, batch_id)
        parts: list[ResultPart] = []
        prefixes: list[tuple[Literal["output", "error"], str]] = [
            ("output", s3keys.results_prefix(record.id)),
            ("error", s3keys.errors_prefix(record.id)),
        ]
        for kind, prefix in prefixes:
            for key, size in self.store.list_sizes(prefix):
                url = self.store.presigned_url(key, self.settings.presigned_url_seconds)
                parts.append(ResultPart(kind=kind, bytes=size, url=url))
        return parts

    # -- intake -----------------------------------------------------------------------

    def ingest_dropped_object(self, dropped: DroppedObject) -> BatchRecord | None:
        """Create and validate a batch for a file dropped under inbox/.

        A duplicated event (same identity) maps to the same batch id and does nothing new;
        an intake interrupted halfway is resumed. The file's options (endpoint, window,
        metadata, invalid_lines) come from its S3 metadata or key (see `drop_options`).
        """
        created = s3keys.batch_id_of_input(dropped.key)
        if created is not None:
            return self._ingest_created_batch(created)
        name = s3keys.outbox_name(dropped.key)
        if name is None:
            logger.info("ignoring object outside the inbox: %s", dropped.key)
            return None
        seed = self._drop_seed(dropped)
        batch_id, input_file_id = new_batch_id(seed), new_file_id(seed)
        # Exactly the version the event announced: the key may hold a newer upload by now.
        # Intake reads its own copy of it (files/, the input File's object), never the key.
        version = dropped.version_id or None
        input_key = s3keys.file_key(input_file_id)
        try:
            info = self.store.head(dropped.key, version_id=version)
            self.store.copy(dropped.key, input_key, version_id=version)
        except MissingObjectError:
            logger.warning("%s (version %s) is gone before intake: no batch", dropped.key, version)
            return None
        if not self.repository.claim_outbox(name, batch_id):
            name = s3keys.unique_outbox_name(name, batch_id)  # x dropped again, or x beside x.jsonl
            self.repository.claim_outbox(name, batch_id)
        option_error: InvalidRequestError | None = None
        try:
            options = drop_options(dropped.key, info.metadata)
        except InvalidRequestError as error:
            options, option_error = DropOptions(), error
        now = self._now()
        window = options.completion_window or self.settings.default_completion_window
        record = BatchRecord(
            id=batch_id,
            endpoint=options.endpoint or self.settings.default_endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            status="validating",
            created_at=now,
            expires_at=now + window_seconds(window),
            metadata=options.metadata,
            input_key=input_key,
            outbox_name=name,
            invalid_lines=options.invalid_lines,
        )
        input_file = FileObject(
            id=input_file_id,
            bytes=info.size,
            created_at=now,
            filename=posixpath.basename(dropped.key),
            purpose="batch",
            status="processed",
            expires_at=now + self.settings.file_retention_seconds,
        )
        if not self.repository.create_batch(record):
            existing = self.repository.get_batch(batch_id)
            logger.info("duplicate event for %s (batch %s)", dropped.key, batch_id)
            if existing is None:
                return None
            if option_error is not None and existing.status == "validating":
                return self._fail_validation(existing, [_option_error(option_error)])
            return self._resume_intake(existing, options.endpoint)
        self.repository.put_file(FileRecord(file=input_file, s3_key=input_key))
        if option_error is not None:
            return self._fail_validation(record, [_option_error(option_error)])
        return self._validate_and_plan(record, endpoint=options.endpoint, size=info.size)

    def _drop_seed(self, dropped: DroppedObject) -> str:
        return f"{self.store.bucket}/{dropped.identity}"

    def fail_intake(self, dropped: DroppedObject) -> BatchRecord | None:
        """An intake that failed every attempt (its event reached the dead-letter queue): the
        batch ends `failed` with an `intake_failed` error instead of staying `validating`, and
        a batch cancelled meanwhile ends `cancelled`. None when no batch was ever recorded."""
        batch_id = s3keys.batch_id_of_input(dropped.key)
        if batch_id is None:
            if s3keys.outbox_name(dropped.key) is None:
                return None
            batch_id = new_batch_id(self._drop_seed(dropped))
        record = self.repository.get_batch(batch_id)
        if record is None:
            logger.error("intake of batch %s failed before it was recorded", batch_id)
            return None
        if record.status == "cancelling" and not record.shards_queued:
            return self._end(record, "cancelled", from_status="cancelling")
        if record.status != "validating":
            return record
        self.store.delete_prefix(s3keys.shard_prefix(record.id))  # shards of a cut-off attempt
        logger.error("intake of batch %s failed on every attempt", record.id)
        error = BatchError(
            code="intake_failed",
            message="The input file could not be validated after several attempts, so no "
            "request ran. Submit it again; if this repeats, the operator has the logs.",
        )
        return self._fail_validation(record, [error])

    def _resume_intake(self, record: BatchRecord, endpoint: str | None) -> BatchRecord:
        if record.status == "validating":
            return self._validate_and_plan(
                record, endpoint=endpoint, size=self.store.size(record.input_key)
            )
        if record.status == "in_progress" and not record.shards_queued:
            # A crash came between the status change and the messages: start the tracker
            # again (harmless) and queue the shards.
            self._start_running(record.id, range(record.shards_total))
            return self._require(record.id)
        return record

    def _start_running(self, batch_id: str, shard_indexes: Iterable[int]) -> None:
        self.tracker.start(batch_id, poll=self.settings.poll_schedule)
        self.shard_queue.send(ShardTask(batch_id=batch_id, shard_index=i) for i in shard_indexes)
        self.repository.mark_shards_queued(batch_id)

    def new_validator(
        self,
        endpoint: str | None,
        on_rejected: Callable[[RejectedLine], None] | None = None,
    ) -> BatchValidator:
        """A validator with this deployment's limits and served models."""
        settings = self.settings
        return BatchValidator(
            endpoint=endpoint,
            default_endpoint=settings.default_endpoint,
            served_models=settings.served_models,
            limits=ValidationLimits(
                max_requests=settings.max_requests_per_batch,
                max_line_bytes=settings.max_line_bytes,
                max_reported_errors=settings.max_reported_errors,
            ),
            on_rejected=on_rejected,
            media=MediaPolicy.of(settings.allowed_media_domains),
        )

    def _validate_and_plan(
        self, record: BatchRecord, *, endpoint: str | None, size: int
    ) -> BatchRecord:
        settings = self.settings
        if size > settings.max_batch_bytes:
            error = BatchError(
                code="file_too_large",
                message=f"The input file is {size} bytes; the limit is {settings.max_batch_bytes}.",
            )
            return self._fail_validation(record, [error])
        skip = record.invalid_lines == "skip"
        shards: list[ShardRecord] = []
        with _RejectedLines(record.id) as rejected:
            with self.store.parallel_uploads() as uploads:

                def store_shard(shard: PlannedShard) -> None:
                    uploads.submit(s3keys.shard_key(record.id, shard.index), shard.data)
                    shards.append(
                        ShardRecord(
                            batch_id=record.id,
                            index=shard.index,
                            request_count=shard.request_count,
                            slot=shard.slot,
                            estimated_tokens=shard.work_tokens,
                        )
                    )

                validator = self.new_validator(endpoint, rejected.add if skip else None)
                planner = ShardPlanner(store_shard, shard_bounds(settings))
                chunks = self.store.stream_ahead(record.input_key)
                for line in validator.validate(iter_lines(chunks, settings.max_line_bytes)):
                    if skip or not validator.has_errors:
                        planner.add(line)  # fail mode: no more shards after the first bad line
                report = validator.report()
                runnable = report.runnable(skip_invalid_lines=skip)
                if runnable:
                    planner.close()
                else:
                    planner.discard()
            if not runnable:
                self.store.delete_prefix(s3keys.shard_prefix(record.id))
                return self._fail_validation(record, report.errors, total_errors=report.error_count)
            if report.rejected_lines:
                rejected.store(self.store)
        self.repository.put_shards(record.id, shards)
        plan = _plan_fields(report, len(shards))
        moved = self.repository.transition(
            record.id,
            to_status="in_progress",
            from_statuses=["validating"],
            fields={**plan, "in_progress_at": self._now()},
        )
        if moved:
            self._start_running(record.id, (s.index for s in shards))
        else:
            self._track_cancelled_intake(record.id, plan)
        current = self._require(record.id)
        self._publish(current)
        if moved:
            self._announce(current)
        return current

    def _track_cancelled_intake(self, batch_id: str, plan: dict[str, object]) -> None:
        """Cancelled while validating: record what was planned and let the tracker end it
        (every request becomes a batch_cancelled line); no shard is queued."""
        counted = self.repository.transition(
            batch_id,
            to_status="cancelling",
            from_statuses=["cancelling"],
            fields={**plan, "shards_queued": True},
        )
        if counted:
            self.tracker.start(batch_id, poll=self.settings.poll_schedule)

    def _fail_validation(
        self, record: BatchRecord, errors: list[BatchError], total_errors: int | None = None
    ) -> BatchRecord:
        if total_errors is not None and total_errors > len(errors):
            errors = [
                *errors,
                BatchError(
                    code="too_many_errors",
                    message=f"{total_errors} errors in all; the first {len(errors)} are listed.",
                ),
            ]
        moved = self.repository.transition(
            record.id,
            to_status="failed",
            from_statuses=["validating"],
            fields={"failed_at": self._now()},
            errors=errors,
        )
        current = self._require(record.id)
        self._publish(current)
        if moved:
            self._announce(current)
        return current

    # -- running a shard (the GPU worker) ---------------------------------------------

    def process_shard(
        self,
        task: ShardTask,
        engine: Engine,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        owner: str | None = None,
        lease_seconds: float = 300,
    ) -> ShardRun:
        """Run one shard through the engine, writing results in crash-safe parts.

        Parts already written by an earlier attempt are counted (once) and their requests
        skipped, so a redelivered message never produces a result twice. A part is written
        every `results_part_size` results or `results_part_seconds`, whichever comes first;
        after each part the batch's status is read again, so a batch that is no longer
        running (cancelling, expired) stops its shards, and `should_stop` (the worker is
        shutting down) interrupts the shard for another worker to finish.
        """
        started = time.monotonic()
        owner = owner or uuid.uuid4().hex
        now = self._clock()
        # One transaction checks the batch is in progress and takes the shard's lease.
        shard = self.repository.begin_shard_attempt(
            task.batch_id, task.shard_index, owner=owner, lease_until=now + lease_seconds, now=now
        )
        if shard is None:
            latest = self.repository.get_batch(task.batch_id)
            if latest is None or latest.status != "in_progress":
                logger.info("skipping shard %s: batch is %s", task, latest and latest.status)
                return ShardRun("skipped")
            current = self.repository.get_shard(task.batch_id, task.shard_index)
            if current is not None and current.status != "done":
                return ShardRun("busy")  # another worker holds its lease: a duplicated message
            return ShardRun("skipped")  # already done
        # A first attempt has nothing to recover: no part can exist before an attempt began.
        finished, next_part = (
            self._recover_parts(shard)
            if shard.attempts > 1 or shard.parts_committed
            else (_Finished(), 0)
        )
        run = ShardRun("done")
        part = _Part()
        pending: list[EngineRequest] = []
        media = MediaPolicy.of(self.settings.allowed_media_domains)
        for request in self._unfinished(shard, finished):
            if isinstance(request, BatchRequestOutput):
                part.failed.append(request)  # an unreadable line: not the engine's to run
                continue
            refused = first_refused(request.body.get("messages"), media)
            if refused is not None:  # checked at intake; shards are data, so again here
                part.failed.append(_media_refused_line(shard, request, *refused))
                continue
            pending.append(
                EngineRequest(custom_id=request.custom_id, url=request.url, body=request.body)
            )
        part_started = time.monotonic()
        remaining = len(pending)
        results = engine.run(pending)
        try:
            for result in results:
                line = result.to_output_line()
                (part.succeeded if line.succeeded else part.failed).append(line)
                remaining -= 1
                if remaining and (
                    len(part) >= self.settings.results_part_size
                    or time.monotonic() - part_started >= self.settings.results_part_seconds
                ):
                    status = self._write_part(shard, next_part, part, run)
                    next_part, part, part_started = next_part + 1, _Part(), time.monotonic()
                    if status != "in_progress":
                        run.outcome = "stopped"
                        break
                    if should_stop():
                        break
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # abort what the engine still runs for us
        if remaining:
            if len(part):
                self._write_part(shard, next_part, part, run, check_status=False)
            # Give the lease up so whoever takes the shard next need not wait for it to lapse.
            self.repository.renew_lease(task.batch_id, shard.index, owner=owner, lease_until=0)
            run.seconds = time.monotonic() - started
            if run.outcome == "stopped":
                logger.info("batch %s is not running: shard %d stops", task.batch_id, shard.index)
            else:
                run.outcome = "interrupted"
            return run
        # The last part and the shard's settlement are one transaction.
        self._write_part(shard, next_part, part, run, check_status=False, settle=True)
        run.seconds = time.monotonic() - started
        return run

    def renew_shard_lease(self, task: ShardTask, owner: str, lease_seconds: float) -> bool:
        """Keep running a shard; False means the lease was lost (another worker took over)."""
        return self.repository.renew_lease(
            task.batch_id,
            task.shard_index,
            owner=owner,
            lease_until=self._clock() + lease_seconds,
        )

    def _unfinished(
        self, shard: ShardRecord, finished: _Finished
    ) -> Iterator[ShardRequest | BatchRequestOutput]:
        """The shard's requests that earlier attempts did not finish, in file order. A line
        that cannot be read comes as its own error line (never the worker's death), unless
        an earlier attempt already wrote it."""
        task = ShardTask(batch_id=shard.batch_id, shard_index=shard.index)
        for request in self._read_shard(task):
            if isinstance(request, UnreadableShardLine):
                line = _unreadable_line(shard, request)
                if line.id not in finished.line_ids:
                    yield line
            elif request.custom_id not in finished.custom_ids:
                yield request

    def _read_shard(self, task: ShardTask) -> Iterator[ShardRequest | UnreadableShardLine]:
        key = s3keys.shard_key(task.batch_id, task.shard_index)
        for number, raw in iter_lines(self.store.stream(key)):
            if raw:
                yield read_shard_line(raw, number)

    def _part_keys(self, shard: ShardRecord, part_index: int) -> tuple[str, str]:
        name = s3keys.part_name(part_index)
        return (
            s3keys.results_prefix(shard.batch_id, shard.index) + name,
            s3keys.errors_prefix(shard.batch_id, shard.index) + name,
        )

    def _recover_parts(self, shard: ShardRecord) -> tuple[_Finished, int]:
        """What earlier attempts already wrote, and the next free part number. Parts are read
        for their facts only (ids, success, usage), so no response body can break this."""
        keys = self.store.list_keys(
            s3keys.results_prefix(shard.batch_id, shard.index)
        ) + self.store.list_keys(s3keys.errors_prefix(shard.batch_id, shard.index))
        by_part: dict[int, list[str]] = {}
        for key in keys:
            if s3keys.is_part_key(key):  # not never-ran.jsonl, written when a shard is closed
                by_part.setdefault(s3keys.part_index_of(key), []).append(key)
        finished = _Finished()
        for part_index in sorted(by_part):
            tally = _Tally()
            for key in by_part[part_index]:
                for _, raw in iter_lines([self.store.read(key)]):
                    facts = read_output_line(raw) if raw else None
                    if facts is None:
                        continue
                    tally.add(facts.succeeded, facts.usage)
                    finished.line_ids.add(facts.id)
                    if facts.custom_id:
                        finished.custom_ids.add(facts.custom_id)
            if part_index >= shard.parts_committed:
                self._commit(shard, part_index, tally)
        return finished, (max(by_part) + 1 if by_part else 0)

    def _write_part(
        self,
        shard: ShardRecord,
        part_index: int,
        part: _Part,
        run: ShardRun,
        *,
        check_status: bool = True,
        settle: bool = False,
    ) -> str | None:
        """Store and commit one part (with `settle`, the shard's last: the shard settles in
        the same transaction); returns the batch's status as it is now when `check_status`
        (None otherwise)."""
        results_key, errors_key = self._part_keys(shard, part_index)
        if part.succeeded:
            self.store.put(results_key, _jsonl(part.succeeded))
        if part.failed:
            self.store.put(errors_key, _jsonl(part.failed))
        input_tokens, output_tokens = self._commit(shard, part_index, part.tally(), settle=settle)
        run.succeeded += len(part.succeeded)
        run.failed += len(part.failed)
        run.input_tokens += input_tokens
        run.output_tokens += output_tokens
        if not check_status:
            return None
        batch = self.repository.get_batch(shard.batch_id)
        if batch is None:
            return "deleted"
        self._publish(batch)  # live request_counts for people watching outbox batch.json
        return batch.status

    def _commit(
        self, shard: ShardRecord, part_index: int, tally: _Tally, *, settle: bool = False
    ) -> tuple[int, int]:
        """Add a part's counts to the batch (once); returns its input and output tokens."""
        self.repository.commit_part(
            shard.batch_id,
            shard.index,
            part_index=part_index,
            completed=tally.completed,
            failed=tally.failed,
            input_tokens=tally.input_tokens,
            cached_tokens=tally.cached_tokens,
            output_tokens=tally.output_tokens,
            settle=settle,
        )
        return tally.input_tokens, tally.output_tokens

    # -- cancel -----------------------------------------------------------------------

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

    # -- poison shards ----------------------------------------------------------------

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
        return True

    # -- expire -----------------------------------------------------------------------

    def expire_overdue(self) -> list[BatchRecord]:
        """Expire every batch whose completion window has run out (the schedule's job).

        This is also the backstop that keeps anything from staying unfinished: a batch still
        not terminal `stuck_after_seconds` past its window (its tracker died, its finalize kept
        failing, a worker hangs on to a lease) is ended here, whatever state its shards or its
        intake are in, with an error line for every request that did not finish."""
        now = self._now()
        ended: list[BatchRecord] = []
        for batch_id in self.repository.overdue_batch_ids(now):
            record = self.expire(batch_id)
            if (
                record.status not in TERMINAL_STATUSES
                and (record.expires_at or now) + self.settings.stuck_after_seconds <= now
            ):
                record = self._end_stuck(record)
            ended.append(record)
        return ended

    def _end_stuck(self, record: BatchRecord) -> BatchRecord:
        logger.error(
            "batch %s is still %s %d s after its window: ending it",
            record.id,
            record.status,
            self._now() - (record.expires_at or 0),
        )
        return self.finalize(record.id, force=True)

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

    # -- finalize ---------------------------------------------------------------------

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

    def _end(self, record: BatchRecord, status: str, *, from_status: str) -> BatchRecord:
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
            if file_id:
                self.store.copy(
                    s3keys.file_key(file_id), s3keys.outbox_key(final.outbox_name, filename)
                )

    def _finish_unrun(
        self,
        record: BatchRecord,
        *,
        code: str,
        message: str,
        status: str,
        from_status: str,
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
            self.store.put(key, _jsonl(lines))
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
        file = FileObject(
            id=file_id,
            bytes=size,
            created_at=now,
            filename=f"batch_{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            status="processed",
            expires_at=now + keep_seconds,
        )
        self.repository.put_file(
            FileRecord(file=file, s3_key=target, batch_id=batch_id, tenant=tenant)
        )
        return file_id

    # -- helpers ----------------------------------------------------------------------

    def _require(self, batch_id: str) -> BatchRecord:
        record = self.repository.get_batch(batch_id)
        if record is None:
            raise NotFoundError(f"No batch found with id {batch_id!r}.")
        return record

    def _announce(self, record: BatchRecord) -> None:
        """Tell subscribers a batch reached a new status (in_progress or a terminal one)."""
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
        """Keep outbox/<name>/batch.json current for batches that came in as dropped files."""
        if record.outbox_name:
            key = s3keys.outbox_key(record.outbox_name, "batch.json")
            self.store.put_json(key, record.to_batch().model_dump(mode="json"))


def _retry_input_file_id(child_id: str) -> str:
    return new_file_id(f"{child_id}/input")


def _linked(metadata: dict[str, str], key: str, value: str) -> dict[str, str]:
    """`metadata` plus one link pair, dropping the last pair if the 16-pair limit is reached."""
    linked = {k: v for k, v in metadata.items() if k != key}
    while len(linked) >= MAX_METADATA_PAIRS:
        linked.pop(next(reversed(linked)))
    return {**linked, key: value}


def _jsonl(lines: Iterable[BatchRequestOutput]) -> bytes:
    return b"".join(line.model_dump_json().encode() + b"\n" for line in lines)


def _concat(store: ObjectStore, keys: list[str]) -> Iterator[bytes]:
    for key in keys:
        yield from store.stream(key)


_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_SHARD_FAILED_MESSAGE = (
    "This request could not be executed: the worker failed on its shard on every attempt."
)


def _plan_fields(report: ValidationReport, shards: int) -> dict[str, object]:
    """What intake records on the batch once the file is validated and sharded."""
    return {
        "endpoint": report.endpoint,
        "model": report.model,
        "request_total": report.valid_requests + report.rejected_lines,
        "request_failed": report.rejected_lines,
        "request_rejected": report.rejected_lines,
        "shards_total": shards,
        "shards_pending": shards,
    }


def shard_bounds(settings: Settings) -> ShardBounds:
    return ShardBounds(
        max_requests=settings.max_requests_per_shard,
        max_bytes=settings.max_shard_bytes,
        max_work_tokens=settings.max_shard_tokens,
        default_output_tokens=settings.default_output_tokens,
        prefix_slots=settings.prefix_slots,
    )


def _option_error(error: InvalidRequestError) -> BatchError:
    return BatchError(code=error.code, message=str(error), param=error.param)


class _RejectedLines:
    """Error lines for input lines skipped by validation (invalid_lines=skip), spooled."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        # Closed by __exit__; spooled so that a file of bad lines cannot fill memory.
        self._data = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115

    def __enter__(self) -> _RejectedLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._data.close()

    def add(self, rejected: RejectedLine) -> None:
        error = rejected.error
        line = _refused_line(
            f"{self._batch_id}/line/{rejected.line}",
            rejected.custom_id,
            message=f"Line {rejected.line}: {error.message}",
            code=error.code,
            param=error.param,
        )
        self._data.write(line.model_dump_json().encode() + b"\n")

    def store(self, store: ObjectStore) -> None:
        self._data.seek(0)
        store.upload(s3keys.rejected_lines_key(self._batch_id), self._data)
