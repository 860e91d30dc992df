"""Batches through the API: create (with an Idempotency-Key), read, list, cancel, and the
result parts of a batch's output while it runs."""

from __future__ import annotations

import hashlib
import re

import orjson

from batch_core import s3keys
from batch_core.batch_params import BatchParams, window_seconds
from batch_core.deps import Deps
from batch_core.ending import Ending
from batch_core.errors import InvalidRequestError, NotFoundError
from batch_core.ids import new_batch_id
from batch_core.records import BatchRecord
from batch_core.result_pages import DEFAULT_LIMIT, ResultPage, ResultPages
from batch_core.results import ResultPart, Results
from batch_core.reuse import REUSE_RESULTS, check_reuse_option
from batch_core.table_codec import Page
from batch_core.tenant_slots import TenantSlots

__all__ = ["Batches", "ResultPart"]

_PRINTABLE_KEY = re.compile(r"[\x20-\x7e]{1,255}")
"""An Idempotency-Key: printable ASCII (it is echoed in logs and seeds the batch id)."""


def fingerprint_of(input_file_id: str, params: BatchParams) -> str:
    """What an Idempotency-Key's batch was asked to be: a retried create must repeat it."""
    parameters: list[object] = [
        input_file_id,
        params.endpoint,
        params.completion_window,
        params.metadata,
        params.invalid_lines,
    ]
    if params.output_expires_after is not None:  # keeps earlier batches' fingerprints
        parameters.append(params.output_expires_after.model_dump())
    if params.priority:  # as does the default priority
        parameters.append({"priority": params.priority})
    return hashlib.sha256(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Batches:
    def __init__(self, deps: Deps, slots: TenantSlots, ending: Ending, results: Results) -> None:
        self.deps = deps
        self.slots = slots
        self.ending = ending
        self.results = results

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        return self.deps.table.batches.get_batch(batch_id)

    def get_for(self, tenant: str, batch_id: str) -> BatchRecord:
        """The tenant's batch; NotFoundError for unknown ids and other tenants' batches alike."""
        return self.deps.tenant_batch(tenant, batch_id)

    def list_batches(
        self, tenant: str, *, after: str | None = None, limit: int = 20
    ) -> Page[BatchRecord]:
        """The tenant's batches, newest first; `after` is the last id of the previous page."""
        table = self.deps.table
        cursor = None
        if after is not None:
            cursor = table.access.listing_position(tenant, "batch", after)
            if cursor is None:
                raise NotFoundError(f"No such Batch object: {after}", param="after")
        return table.batches.list_batches(tenant, after=cursor, limit=limit)

    def cancel(self, tenant: str, batch_id: str) -> BatchRecord:
        """Ask the tenant's batch to stop (`Ending.cancel`)."""
        return self.ending.cancel(batch_id, tenant=tenant)

    def result_parts(self, tenant: str, batch_id: str) -> list[ResultPart]:
        """The result and error parts written so far, readable while the batch runs."""
        return self.results.parts(self.get_for(tenant, batch_id))

    def result_page(
        self,
        tenant: str,
        batch_id: str,
        *,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
        custom_id: str | None = None,
    ) -> ResultPage:
        """Result and error lines in input order after `after`, readable while the batch
        runs (`result_pages`); with `custom_id`, that custom_id's."""
        record = self.get_for(tenant, batch_id)
        return ResultPages(self.results).page(record, after=after, limit=limit, custom_id=custom_id)

    def create_batch(
        self,
        tenant: str,
        params: BatchParams,
        *,
        input_file_id: str,
        idempotency_key: str | None = None,
    ) -> BatchRecord:
        """Create a batch over an uploaded file: its input is copied to
        `batches/<id>/input.jsonl`, whose S3 event starts the same validation a dropped
        file gets. The same `idempotency_key` always returns the same batch."""
        if idempotency_key is not None and not _PRINTABLE_KEY.fullmatch(idempotency_key):
            raise InvalidRequestError(
                "The Idempotency-Key header must be 1 to 255 printable ASCII characters "
                "(no control characters).",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        seed = f"{tenant}/idempotency/{idempotency_key}" if idempotency_key else None
        fingerprint = fingerprint_of(input_file_id, params) if idempotency_key else None
        return self.create_as(
            tenant, new_batch_id(seed), params, input_file_id=input_file_id, fingerprint=fingerprint
        )

    def create_as(
        self,
        tenant: str,
        batch_id: str,
        params: BatchParams,
        *,
        input_file_id: str,
        fingerprint: str | None = None,
    ) -> BatchRecord:
        """Create the batch `batch_id` (a retry's child has its own); the same id again
        returns the batch made first, if `fingerprint` matches it."""
        endpoint, completion_window = params.endpoint, params.completion_window
        invalid_lines, output_expires_after = params.invalid_lines, params.output_expires_after
        seconds = window_seconds(params.completion_window)
        metadata = params.metadata or None
        check_reuse_option(metadata, f"metadata.{REUSE_RESULTS}")
        # A replayed Idempotency-Key answers with its batch and takes no slot (one taken for
        # a batch that has ended would never be released), even once its input is gone.
        existing = self.deps.table.batches.get_batch(batch_id)
        if existing is not None:
            replayed = self._replayed(tenant, batch_id, fingerprint)
            if replayed.status != "validating" or self.deps.store.exists(replayed.input_key):
                return replayed
        input_file = self.deps.table.files.get_file(input_file_id)
        if input_file is None or input_file.tenant != tenant or input_file.expired(self.deps.now()):
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
        now = self.deps.now()
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
            priority=params.priority,
            gpu_hourly_price=self.deps.settings.gpu_hourly_price,
            idempotency_fingerprint=fingerprint,
            output_expires_after_seconds=(
                output_expires_after.seconds if output_expires_after else None
            ),
        )
        if existing is None:
            self.slots.take(record)  # 429 at the tenant's limit
        if existing is not None or not self.deps.table.batches.create_batch(record):
            existing = self._replayed(tenant, batch_id, fingerprint)  # a retried create
            if existing.status != "validating" or self.deps.store.exists(existing.input_key):
                return existing
            record = existing  # the first attempt died before copying the input
        if input_file.file.status == "uploaded" and self.deps.table.files.wait_for_file(
            input_file_id, batch_id
        ):
            return record  # its upload is still being joined: the join job copies it
        self.deps.store.copy(input_file.s3_key, record.input_key)
        return record

    def _replayed(self, tenant: str, batch_id: str, fingerprint: str | None) -> BatchRecord:
        """The batch an Idempotency-Key made, if this create repeats its parameters."""
        existing = self.deps.tenant_batch(tenant, batch_id)
        if existing.idempotency_fingerprint != fingerprint:
            raise InvalidRequestError(
                "This Idempotency-Key was already used with other parameters; a key may "
                "only be reused to retry the same request. Use a new key for a new batch.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return existing
