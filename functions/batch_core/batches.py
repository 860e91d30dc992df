"""Batches through the API: create, list, and the result parts of a batch's output."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import orjson

from batch_core import s3keys
from batch_core.batch_params import BatchParams, InvalidLines, checked, window_seconds
from batch_core.errors import (
    InvalidRequestError,
    NotFoundError,
)
from batch_core.ids import new_batch_id
from batch_core.intake import Intake
from batch_core.models import TERMINAL_STATUSES
from batch_core.records import BatchRecord
from batch_core.retention import ExpiresAfter
from batch_core.table_codec import Page

_PRINTABLE_KEY = re.compile(r"[\x20-\x7e]{1,255}")
"""An Idempotency-Key: printable ASCII (it is echoed in logs and seeds the batch id)."""


@dataclass(frozen=True)
class ResultPart:
    """One part file of a batch's results, for reading them while the batch runs."""

    kind: Literal["output", "error"]
    bytes: int
    url: str
    """A short-lived presigned GET URL."""


class Batches(Intake):
    """The API's batch calls."""

    def list_batches(
        self, tenant: str, *, after: str | None = None, limit: int = 20
    ) -> Page[BatchRecord]:
        """The tenant's batches, newest first; `after` is the last id of the previous page."""
        cursor = None
        if after is not None:
            cursor = self.repository.listing_position(tenant, "batch", after)
            if cursor is None:
                raise NotFoundError(f"No such Batch object: {after}", param="after")
        return self.repository.list_batches(tenant, after=cursor, limit=limit)

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
        if idempotency_key is not None and not _PRINTABLE_KEY.fullmatch(idempotency_key):
            raise InvalidRequestError(
                "The Idempotency-Key header must be 1 to 255 printable ASCII characters "
                "(no control characters).",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
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
        params = checked(  # the API's body was checked; retries and direct calls were not
            BatchParams,
            {
                "endpoint": endpoint,
                "completion_window": completion_window,
                "metadata": metadata or None,
                "invalid_lines": invalid_lines,
            },
        )
        seconds = window_seconds(params.completion_window)
        metadata = params.metadata
        # A replayed Idempotency-Key answers with its batch and takes no slot (one taken for
        # a batch that has ended would never be released), even once its input is gone.
        existing = self.repository.get_batch(batch_id)
        if existing is not None:
            replayed = self._replayed(tenant, batch_id, fingerprint)
            if replayed.status != "validating" or self.store.exists(replayed.input_key):
                return replayed
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
        if existing is None:
            self._take_slot(record)  # 429 at the tenant's limit
        if existing is not None or not self.repository.create_batch(record):
            existing = self._replayed(tenant, batch_id, fingerprint)  # a retried create
            if existing.status != "validating" or self.store.exists(existing.input_key):
                return existing
            record = existing  # the first attempt died before copying the input
        if input_file.file.status == "uploaded" and self.repository.wait_for_file(
            input_file_id, batch_id
        ):
            return record  # its upload is still being joined: the join job copies it
        self.store.copy(input_file.s3_key, record.input_key)
        return record

    def _replayed(self, tenant: str, batch_id: str, fingerprint: str | None) -> BatchRecord:
        """The batch an Idempotency-Key made, if this create repeats its parameters."""
        existing = self.get_for(tenant, batch_id)
        if existing.idempotency_fingerprint != fingerprint:
            raise InvalidRequestError(
                "This Idempotency-Key was already used with other parameters; a key may "
                "only be reused to retry the same request. Use a new key for a new batch.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return existing

    def result_parts(self, tenant: str, batch_id: str) -> list[ResultPart]:
        """The result and error parts written so far, readable while the batch runs."""
        record = self.get_for(tenant, batch_id)
        parts: list[ResultPart] = []
        prefixes: list[tuple[Literal["output", "error"], str, str | None]] = [
            ("output", s3keys.results_prefix(record.id), record.output_file_id),
            ("error", s3keys.errors_prefix(record.id), record.error_file_id),
        ]
        for kind, prefix, file_id in prefixes:
            if file_id is not None and not self._file_kept(file_id):
                continue  # its File was deleted or has expired: so have the parts it holds
            if file_id is None and record.status in TERMINAL_STATUSES:
                continue  # ended with none: nothing of this kind to read
            for key, size in self.store.list_sizes(prefix):
                url = self.store.presigned_url(key, self.settings.presigned_url_seconds)
                parts.append(ResultPart(kind=kind, bytes=size, url=url))
        return parts

    def _file_kept(self, file_id: str) -> bool:
        """The File exists and has not expired (the sweep may not have deleted it yet)."""
        record = self.repository.get_file(file_id)
        return record is not None and not record.expired(self._now())
