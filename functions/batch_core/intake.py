"""Intake: a dropped or created batch's file validated, planned into shards and queued, or
failed with every bad line named.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
from collections.abc import Callable
from contextlib import closing

from batch_core import result_index, s3keys
from batch_core.batch_params import window_seconds
from batch_core.deps import Deps
from batch_core.drop_options import (
    DropOptions,
    drop_options,
)
from batch_core.ending import CANCELLED, Ending
from batch_core.errors import (
    InvalidRequestError,
    MissingObjectError,
    RateLimitError,
)
from batch_core.files import AssembledFile, FileService
from batch_core.fleet_scaling import FleetScaling
from batch_core.ids import new_batch_id, new_file_id
from batch_core.intake_jobs import BuildRetryInput, DroppedObject, IntakeWork, JoinUpload
from batch_core.media_urls import MediaPolicy
from batch_core.messaging import Tracker
from batch_core.model_registry import ModelRegistry
from batch_core.models import BatchError
from batch_core.notices import Notices
from batch_core.records import BatchRecord, FileRecord, ShardRecord
from batch_core.repeats import RepeatFinder
from batch_core.result_index import IdIndexWriter
from batch_core.results import refused_line
from batch_core.retention import new_file_object
from batch_core.retries import Retries
from batch_core.reuse import opted_in
from batch_core.settings import Settings
from batch_core.sharding import PlannedShard, ShardBounds, ShardPlanner
from batch_core.storage import ObjectStore
from batch_core.tenant_slots import TenantSlots
from batch_core.turns import Turns
from batch_core.validation import (
    BatchValidator,
    RejectedLine,
    ValidationLimits,
    ValidationReport,
    ValidLine,
    iter_lines,
    stored_errors,
)

logger = logging.getLogger(__name__)


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
        context_tokens=settings.model_context_tokens,
    )


def _count_repeats(shards: list[ShardRecord], counts: dict[int, int]) -> None:
    """Each shard's lines include the repeats of its primaries (the counts that must add up
    to the batch's total: reserved requests, completed + failed)."""
    for shard in shards:
        shard.repeats = counts.get(shard.index, 0)
        shard.request_count += shard.repeats


def _plan_line(
    line: ValidLine, planner: ShardPlanner, repeats: RepeatFinder, ids: IdIndexWriter
) -> None:
    """A valid line into its shard, unless it repeats an earlier one (`repeats`); either
    way into the custom_id index (a repeat's shard is its primary's, not known here)."""
    digest = repeats.repeat(line)
    serial = None
    if digest is not None:
        serial = planner.add(line)
        repeats.primary(digest, line, serial)
    ids.add(line.custom_id, line.line, serial)


def _option_error(error: InvalidRequestError) -> BatchError:
    return BatchError(code=error.code, message=str(error), param=error.param)


class _RejectedLines:
    """Error lines for the input lines validation rejected, spooled: the skip mode's share
    of the error file, or every error of a batch that failed (its item keeps only the first)."""

    def __init__(self, batch_id: str, ids: IdIndexWriter | None = None) -> None:
        self._batch_id = batch_id
        # Closed by __exit__; spooled so that a file of bad lines cannot fill memory.
        self._data = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
        # Their result index entries (`result_index`), in input order, spooled as well.
        self._entries = tempfile.SpooledTemporaryFile(max_size=256 * 1024)  # noqa: SIM115
        self._ids = ids
        self.size = 0

    def __enter__(self) -> _RejectedLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._data.close()
        self._entries.close()

    def add(self, rejected: RejectedLine) -> None:
        error = rejected.error
        offset = self.size
        line_id = self._write(
            f"{self._batch_id}/line/{rejected.line}",
            rejected.custom_id,
            error.model_copy(update={"message": f"Line {rejected.line}: {error.message}"}),
            line=rejected.line,
        )
        entry = result_index.Entry(
            rejected.line,
            line_id,
            "error",
            offset,
            self.size - offset,
            result_index.custom_id_digest(rejected.custom_id),
        )
        self._entries.write(entry.encode())
        if self._ids is not None:
            self._ids.add(rejected.custom_id, rejected.line, result_index.REJECTED)

    def add_file_errors(self, errors: list[BatchError]) -> None:
        """The errors about the whole file (no line of their own), after the lines'."""
        for error in errors:
            if error.line is None:
                self._write(f"{self._batch_id}/file/{error.code}", None, error)

    def _write(
        self, seed: str, custom_id: str | None, error: BatchError, line: int | None = None
    ) -> str:
        refused = refused_line(
            seed, custom_id, message=error.message or "", code=error.code, param=error.param
        )
        if line is not None:  # its input line in its id, as every indexed line's
            refused.id = result_index.placed_id(refused.id, line)
        data = refused.model_dump_json().encode() + b"\n"
        self._data.write(data)
        self.size += len(data)
        return refused.id

    def store(self, store: ObjectStore, key: str | None = None) -> None:
        """Upload the lines to `key` (default: the skip mode's part of the error file, then
        its result index)."""
        self._data.seek(0)
        store.upload(key or s3keys.rejected_lines_key(self._batch_id), self._data)
        if key is None:
            self._entries.seek(0)
            entries = result_index.read_entries(self._entries.read())
            result_index.write_chunks(
                store, self._batch_id, result_index.REJECTED, "part-00000", entries
            )


class Intake:
    """From an input file to queued shards."""

    def __init__(
        self,
        deps: Deps,
        *,
        registry: ModelRegistry,
        slots: TenantSlots,
        turns: Turns,
        notices: Notices,
        ending: Ending,
        tracker: Tracker,
        files: FileService,
        retries: Retries,
        fleet_scaling: FleetScaling | None = None,
    ) -> None:
        self.deps = deps
        self.registry = registry
        self.slots = slots
        self.turns = turns
        self.notices = notices
        self.ending = ending
        self.tracker = tracker
        self.files = files
        self.retries = retries
        self.fleet_scaling = fleet_scaling

    def run(self, work: IntakeWork) -> BatchRecord | None:
        """One intake message's work: a dropped object validated and planned (its batch), an
        upload joined or a retry's input built, and the batches waiting on it started."""
        if isinstance(work, JoinUpload):
            self.start_waiting_batches(self.files.join_upload(work.upload_id))
            return None
        if isinstance(work, BuildRetryInput):
            self.start_waiting_batches(self.retries.build_retry_input(work.parent_id))
            return None
        return self.ingest_dropped_object(work)

    def give_up(self, work: IntakeWork) -> BatchRecord | None:
        """Work that failed every attempt (the intake dead-letter queue): its File ends
        `error` and the batches waiting on it fail, or the dropped object's batch fails."""
        if isinstance(work, JoinUpload):
            self.start_waiting_batches(self.files.fail_join(work.upload_id))
            return None
        if isinstance(work, BuildRetryInput):
            self.start_waiting_batches(self.retries.fail_retry_input(work.parent_id))
            return None
        return self.fail_intake(work)

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
            info = self.deps.store.head(dropped.key, version_id=version)
            self.deps.store.copy(dropped.key, input_key, version_id=version)
        except MissingObjectError:
            logger.warning("%s (version %s) is gone before intake: no batch", dropped.key, version)
            return None
        if not self.deps.table.batches.claim_outbox(name, batch_id):
            name = s3keys.unique_outbox_name(name, batch_id)  # x dropped again, or x beside x.jsonl
            self.deps.table.batches.claim_outbox(name, batch_id)
        option_error: InvalidRequestError | None = None
        try:
            options = drop_options(dropped.key, info.metadata)
        except InvalidRequestError as error:
            options, option_error = DropOptions(), error
        now = self.deps.now()
        window = options.completion_window or self.deps.settings.default_completion_window
        record = BatchRecord(
            id=batch_id,
            endpoint=options.endpoint or self.deps.settings.default_endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            status="validating",
            created_at=now,
            expires_at=now + window_seconds(window),
            metadata=options.metadata,
            input_key=input_key,
            outbox_name=name,
            invalid_lines=options.invalid_lines,
            priority=options.priority,
            gpu_hourly_price=self.deps.settings.gpu_hourly_price,
        )
        input_file = new_file_object(
            input_file_id,
            size=info.size,
            created_at=now,
            filename=posixpath.basename(dropped.key),
            expires_at=now + self.deps.settings.file_retention_seconds,
        )
        if not self.deps.table.batches.create_batch(record):
            existing = self.deps.table.batches.get_batch(batch_id)
            logger.info("duplicate event for %s (batch %s)", dropped.key, batch_id)
            if existing is None:
                return None
            if option_error is not None and existing.status == "validating":
                return self._fail_validation(existing, [_option_error(option_error)])
            return self._resume_intake(existing, options.endpoint)
        self.deps.table.files.put_file(FileRecord(file=input_file, s3_key=input_key))
        if option_error is not None:
            return self._fail_validation(record, [_option_error(option_error)])
        try:
            self.slots.take(record)
        except RateLimitError as refused:  # a dropped file has no request to answer 429
            limit = BatchError(code=refused.code, message=str(refused))
            return self._fail_validation(record, [limit])
        return self._validate_and_plan(record, endpoint=options.endpoint, size=info.size)

    def _context_tokens(self, model: str | None) -> int:
        """`model`'s context window from the registry; 0 when it gives none (the planner
        then assumes MODEL_CONTEXT_TOKENS)."""
        served = self.registry.served(model)
        return served.context_length if served is not None else 0

    def _drop_seed(self, dropped: DroppedObject) -> str:
        return f"{self.deps.store.bucket}/{dropped.identity}"

    def fail_intake(self, dropped: DroppedObject) -> BatchRecord | None:
        """An intake that failed every attempt (its event reached the dead-letter queue): the
        batch ends `failed` with an `intake_failed` error instead of staying `validating`, and
        a batch cancelled meanwhile ends `cancelled`. None when no batch was ever recorded."""
        batch_id = s3keys.batch_id_of_input(dropped.key)
        if batch_id is None:
            if s3keys.outbox_name(dropped.key) is None:
                return None
            batch_id = new_batch_id(self._drop_seed(dropped))
        record = self.deps.table.batches.get_batch(batch_id)
        if record is None:
            logger.error("intake of batch %s failed before it was recorded", batch_id)
            return None
        if record.status == "cancelling" and not record.shards_queued:
            return self.ending.end(record, CANCELLED)
        if record.status != "validating":
            return record
        self._drop_plan(record.id)  # shards of a cut-off attempt
        logger.error("intake of batch %s failed on every attempt", record.id)
        error = BatchError(
            code="intake_failed",
            message="The input file could not be validated after several attempts, so no "
            "request ran. Submit it again; if this repeats, the operator has the logs.",
        )
        return self._fail_validation(record, [error])

    def _drop_plan(self, batch_id: str) -> None:
        """What planning wrote for a batch that will not run: its shards, its result index."""
        self.deps.store.delete_prefix(s3keys.shard_prefix(batch_id))
        self.deps.store.delete_prefix(s3keys.index_prefix(batch_id))

    def _resume_intake(self, record: BatchRecord, endpoint: str | None) -> BatchRecord:
        if record.status == "validating":
            return self._validate_and_plan(
                record, endpoint=endpoint, size=self.deps.store.size(record.input_key)
            )
        if record.status == "in_progress" and not record.shards_queued:
            # A crash came between the status change and the messages: start the tracker
            # again (harmless) and queue the shards.
            self._start_running(record)
            return self.deps.batch(record.id)
        return record

    def _start_running(self, record: BatchRecord) -> None:
        self.tracker.start(record.id, poll=self.deps.settings.poll_schedule)
        self.turns.queue_first_shards(record)
        self._scale_out_for(record)

    def _scale_out_for(self, record: BatchRecord) -> None:
        """Its fleet's workers started now, as many as it needs (`fleet_scaling`). A batch
        never fails for it: the sweep sizes every fleet again within 5 minutes."""
        if self.fleet_scaling is None:
            return
        try:
            self.fleet_scaling.size_for_batch(record)
        except Exception:
            logger.exception("intake: sizing the fleet of %s failed; the sweep will", record.id)

    def new_validator(
        self,
        endpoint: str | None,
        on_rejected: Callable[[RejectedLine], None] | None = None,
    ) -> BatchValidator:
        """A validator with this deployment's limits and served models."""
        settings = self.deps.settings
        return BatchValidator(
            endpoint=endpoint,
            default_endpoint=settings.default_endpoint,
            served_models=self.registry.served_model_names(),
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
        settings = self.deps.settings
        if size > settings.max_batch_bytes:
            error = BatchError(
                code="file_too_large",
                message=f"The input file is {size} bytes; the limit is {settings.max_batch_bytes}.",
            )
            return self._fail_validation(record, [error])
        skip = record.invalid_lines == "skip"
        shards: list[ShardRecord] = []
        reuse_results = opted_in(record.metadata)
        # Identical requests run once: a repeat is answered by its primary (`repeats`).
        repeats = RepeatFinder(settings.max_requests_per_shard)
        ids = IdIndexWriter(self.deps.store, record.id)  # custom_id -> line (`result_index`)
        with _RejectedLines(record.id, ids) as rejected, closing(repeats):
            with self.deps.store.parallel_uploads() as uploads:

                def store_shard(shard: PlannedShard) -> None:
                    uploads.submit(s3keys.shard_key(record.id, shard.index), shard.data)
                    repeats.placed(shard.serial, shard.index)
                    ids.placed(shard.serial, shard.index)
                    shards.append(
                        ShardRecord(
                            batch_id=record.id,
                            index=shard.index,
                            request_count=shard.request_count,
                            slot=shard.slot,
                            estimated_tokens=shard.work_tokens,
                            reuse_results=reuse_results,
                        )
                    )

                # Every rejected line is spooled, in either mode: a failed batch's item keeps
                # only its first errors, and its error file has them all.
                validator = self.new_validator(endpoint, rejected.add)
                planner = ShardPlanner(
                    store_shard,
                    shard_bounds(settings),
                    context_tokens=lambda: self._context_tokens(validator.model),
                )
                chunks = self.deps.store.stream_ahead(record.input_key)
                for line in validator.validate(iter_lines(chunks, settings.max_line_bytes)):
                    # fail mode: no more shards after the first bad line
                    if skip or not validator.has_errors:
                        _plan_line(line, planner, repeats, ids)
                report = validator.report()
                runnable = report.runnable(skip_invalid_lines=skip)
                if runnable:
                    planner.close()
                    repeats.store(self.deps.store, record.id)
                    _count_repeats(shards, repeats.counts())
                    ids.close()
                else:
                    planner.discard()
            if not runnable:
                self._drop_plan(record.id)
                return self._fail_validation(
                    record, report.errors, total_errors=report.error_count, every_error=rejected
                )
            if report.rejected_lines:
                rejected.store(self.deps.store)
        work = sum(shard.estimated_tokens for shard in shards)
        requests = sum(shard.request_count for shard in shards)
        over_limit = self.slots.reserve_requests(record, requests, work)
        if over_limit is not None:  # request_limit_exceeded or token_limit_exceeded
            failed = self._fail_validation(record, [over_limit])
            if failed.status == "failed":
                self._drop_plan(record.id)
                return failed
            # Cancelled while validating: it ends below as cancelled, every line reported.
        self.deps.table.shards.put_shards(record.id, shards)
        plan = {
            **_plan_fields(report, len(shards)),
            "tier": self.turns.first_tier(record, work, report.model),
            "estimated_tokens": work,
            "shards_released": self.turns.shards_let_in_first(len(shards)),
        }
        moved = self.deps.table.batches.transition(
            record.id,
            to_status="in_progress",
            from_statuses=["validating"],
            fields={**plan, "in_progress_at": self.deps.now()},
        )
        if moved is None:
            current = self._track_cancelled_intake(record.id, plan)
            self.notices.outbox(current)
            return current
        self._start_running(moved)
        self.notices.outbox(moved)
        self.notices.moved(moved)
        return moved

    def _track_cancelled_intake(self, batch_id: str, plan: dict[str, object]) -> BatchRecord:
        """Cancelled while validating: record what was planned and let the tracker end it
        (every request becomes a batch_cancelled line); no shard is queued."""
        counted = self.deps.table.batches.transition(
            batch_id,
            to_status="cancelling",
            from_statuses=["cancelling"],
            fields={**plan, "shards_queued": True},
        )
        if counted is None:
            return self.deps.batch(batch_id)
        self.tracker.start(batch_id, poll=self.deps.settings.poll_schedule)
        return counted

    def _fail_validation(
        self,
        record: BatchRecord,
        errors: list[BatchError],
        total_errors: int | None = None,
        every_error: _RejectedLines | None = None,
    ) -> BatchRecord:
        """End a batch that cannot run as `failed` with its errors: the first of them, within
        a byte budget, on the batch (`validation.stored_errors`); with `every_error`, all of
        them in its error file when the batch could not keep them all."""
        total = max(total_errors or 0, len(errors))
        stored = stored_errors(errors, total, error_file=every_error is not None)
        fields: dict[str, object] = {"failed_at": self.deps.now()}
        if every_error is not None and not stored.complete:
            every_error.add_file_errors(errors)
            fields["error_file_id"] = self._store_error_file(record, every_error)
        moved = self.deps.table.batches.transition(
            record.id,
            to_status="failed",
            from_statuses=["validating"],
            fields=fields,
            errors=stored.errors,
        )
        if moved is None:  # cancelled meanwhile, or a repeated intake's: as it is now
            current = self.deps.batch(record.id)
            self.notices.outbox(current)
            return current
        self.notices.mirror_results(moved)
        self.notices.outbox(moved)
        self.notices.moved(moved)
        return moved

    def _store_error_file(self, record: BatchRecord, lines: _RejectedLines) -> str:
        """Every error of a failed batch as its error File (the error file's line format),
        the batch owner's, kept as its output would be. The same id on a repeated intake."""
        file_id = new_file_id(f"{record.id}/error")
        key = s3keys.file_key(file_id)
        lines.store(self.deps.store, key)
        now = self.deps.now()
        seconds = record.output_expires_after_seconds or self.deps.settings.file_retention_seconds
        file = new_file_object(
            file_id,
            size=lines.size,
            created_at=now,
            filename=f"batch_{record.id}_error.jsonl",
            purpose="batch_output",
            expires_at=now + seconds,
        )
        self.deps.table.files.put_file(
            FileRecord(file=file, s3_key=key, batch_id=record.id, tenant=record.tenant)
        )
        return file_id

    def start_waiting_batches(self, joined: AssembledFile | None) -> None:
        """A File assembled off the request path is done (an upload's join, a retry's input):
        the batches created on it meanwhile get their input (and start validating), or fail
        when it could not be assembled."""
        if joined is None:
            return
        file_id, error = joined.file_id, joined.error
        file = self.deps.table.files.get_file(file_id)
        for batch_id in joined.waiting_batches:
            record = self.deps.table.batches.get_batch(batch_id)
            if record is None or record.status not in {"validating", "cancelling"}:
                continue
            if error is None and file is not None:
                self.deps.store.copy(file.s3_key, record.input_key)
            elif record.status == "validating":
                self._fail_validation(
                    record, [BatchError(code="invalid_input_file", message=error)]
                )
            else:
                self.ending.end(record, CANCELLED)

    def _ingest_created_batch(self, batch_id: str) -> BatchRecord | None:
        """The S3 event of a batch created through the API: validate it (once)."""
        record = self.deps.table.batches.get_batch(batch_id)
        if record is None:
            logger.warning("input for unknown batch %s", batch_id)
            return None
        if record.status == "cancelling" and not record.shards_queued and not record.request_total:
            # Cancelled before validation began: nothing to run, nothing to report.
            return self.ending.end(record, CANCELLED)
        return self._resume_intake(record, record.endpoint)
