"""Files and uploads: what `/v1/files` and `/v1/uploads` do, per tenant.

A File's bytes live at `files/<id>`; an Upload collects parts under `uploads/<id>/` and joins
them into a File on completion (an S3 multipart upload when large). Another tenant's ids are
answered exactly like unknown ones.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from batch_core import s3keys
from batch_core.errors import ConflictError, InvalidRequestError, NotFoundError
from batch_core.ids import new_file_id, new_upload_id, new_upload_part_id
from batch_core.models import FileObject
from batch_core.records import (
    FileRecord,
    Upload,
    UploadPart,
    UploadPartRecord,
    UploadRecord,
)
from batch_core.repository import BatchRepository
from batch_core.settings import Settings
from batch_core.storage import ObjectStore

INPUT_PURPOSE = "batch"
"""The only purpose a client may upload: this API runs batches."""


@dataclass(frozen=True)
class FileContent:
    """A file's content: the bytes themselves, or a short-lived URL for large files."""

    file: FileObject
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class FilePage:
    data: list[FileObject]
    has_more: bool


class FileService:
    """Files and uploads of one deployment."""

    def __init__(
        self,
        settings: Settings,
        repository: BatchRepository,
        store: ObjectStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.store = store
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    # -- files ------------------------------------------------------------------------

    def create(self, tenant: str, *, filename: str, purpose: str, data: bytes) -> FileObject:
        """Store an uploaded batch input file."""
        _check_purpose(purpose)
        if not data:
            raise InvalidRequestError("The file is empty.", param="file", code="empty_file")
        file_id = new_file_id()
        key = s3keys.file_key(file_id)
        self.store.put(key, data)
        return self._record(tenant, file_id, filename, len(data), key)

    def _record(self, tenant: str, file_id: str, filename: str, size: int, key: str) -> FileObject:
        file = FileObject(
            id=file_id,
            bytes=size,
            created_at=self._now(),
            filename=filename or "upload.jsonl",
            purpose="batch",
            status="processed",
        )
        self.repository.put_file(FileRecord(file=file, s3_key=key, tenant=tenant))
        return file

    def get(self, tenant: str, file_id: str) -> FileRecord:
        """The tenant's file; NotFoundError for unknown ids and other tenants' files alike."""
        record = self.repository.get_file(file_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id")
        return record

    def list_files(
        self,
        tenant: str,
        *,
        after: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> FilePage:
        cursor = self._cursor(tenant, after)
        records, has_more = self.repository.list_files(
            tenant, after=cursor, limit=limit, ascending=order == "asc", purpose=purpose
        )
        return FilePage(data=[r.file for r in records], has_more=has_more)

    def _cursor(self, tenant: str, after: str | None) -> str | None:
        if after is None:
            return None
        position = self.repository.listing_position(tenant, "file", after)
        if position is None:
            raise InvalidRequestError(f"No such File object: {after}", param="after")
        return position

    def delete(self, tenant: str, file_id: str) -> None:
        """Delete the file's bytes and its record. Batches keep their own copy of their input,
        so deleting an input file never breaks a batch."""
        record = self.get(tenant, file_id)
        self.store.delete(record.s3_key)
        self.repository.delete_file(file_id)

    def content(self, tenant: str, file_id: str) -> FileContent:
        """Small files inline; large ones as a presigned URL (the client follows a redirect)."""
        record = self.get(tenant, file_id)
        if record.file.bytes <= self.settings.max_inline_content_bytes:
            return FileContent(file=record.file, data=self.store.read(record.s3_key))
        url = self.store.presigned_url(
            record.s3_key, self.settings.presigned_url_seconds, filename=record.file.filename
        )
        return FileContent(file=record.file, url=url)

    # -- uploads ----------------------------------------------------------------------

    def create_upload(
        self, tenant: str, *, filename: str, purpose: str, size: int, mime_type: str
    ) -> Upload:
        _check_purpose(purpose)
        if not 0 < size <= self.settings.max_batch_bytes:
            raise InvalidRequestError(
                f"bytes must be between 1 and {self.settings.max_batch_bytes}.", param="bytes"
            )
        now = self._now()
        upload = Upload(
            id=new_upload_id(),
            bytes=size,
            created_at=now,
            expires_at=now + self.settings.upload_expiry_seconds,
            filename=filename,
            purpose=purpose,
            status="pending",
        )
        self.repository.put_upload(UploadRecord(upload=upload, tenant=tenant, mime_type=mime_type))
        return upload

    def _pending_upload(self, tenant: str, upload_id: str) -> UploadRecord:
        record = self.repository.get_upload(upload_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"No such Upload object: {upload_id}", param="upload_id")
        upload = record.upload
        if upload.status == "pending" and upload.expires_at < self._now():
            raise ConflictError(f"Upload {upload_id} expired at {upload.expires_at}.")
        if upload.status != "pending":
            raise ConflictError(f"Upload {upload_id} is already {upload.status}.")
        return record

    def add_upload_part(self, tenant: str, upload_id: str, data: bytes) -> UploadPart:
        record = self._pending_upload(tenant, upload_id)
        if not data:
            raise InvalidRequestError("The part is empty.", param="data")
        part = UploadPart(id=new_upload_part_id(), created_at=self._now(), upload_id=upload_id)
        key = s3keys.upload_part_key(upload_id, part.id)
        self.store.put(key, data, content_type=record.mime_type or "application/octet-stream")
        self.repository.put_upload_part(UploadPartRecord(part=part, bytes=len(data), s3_key=key))
        return part

    def complete_upload(
        self, tenant: str, upload_id: str, *, part_ids: list[str], md5: str | None = None
    ) -> Upload:
        """Join the parts, in the order given, into a new File; their sizes must add up to
        the upload's `bytes` (and their MD5 to `md5`, when given)."""
        record = self._pending_upload(tenant, upload_id)
        parts = {p.part.id: p for p in self.repository.list_upload_parts(upload_id)}
        unknown = [part_id for part_id in part_ids if part_id not in parts]
        if not part_ids or unknown:
            raise InvalidRequestError(
                f"Unknown part ids for upload {upload_id}: {unknown or '(none given)'}",
                param="part_ids",
            )
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequestError("part_ids lists a part twice.", param="part_ids")
        ordered = [parts[part_id] for part_id in part_ids]
        total = sum(p.bytes for p in ordered)
        if total != record.upload.bytes:
            raise InvalidRequestError(
                f"The parts add up to {total} bytes; the upload was created for "
                f"{record.upload.bytes}.",
                param="part_ids",
            )
        digest = hashlib.md5(usedforsecurity=False)

        def joined() -> Iterator[bytes]:
            for chunk in itertools.chain.from_iterable(
                self.store.stream(p.s3_key) for p in ordered
            ):
                digest.update(chunk)
                yield chunk

        file_id = new_file_id()
        key = s3keys.file_key(file_id)
        self.store.put_stream(key, joined())
        if md5 and md5.lower() != digest.hexdigest():
            self.store.delete(key)
            raise InvalidRequestError(
                f"The parts' MD5 is {digest.hexdigest()}, not {md5}.", param="md5"
            )
        file = self._record(tenant, file_id, record.upload.filename, total, key)
        completed = record.upload.model_copy(update={"status": "completed", "file": file})
        if not self.repository.finish_upload(record, completed):
            self.store.delete(key)
            self.repository.delete_file(file_id)
            raise ConflictError(f"Upload {upload_id} was completed or cancelled meanwhile.")
        self.store.delete_prefix(f"{s3keys.UPLOADS_PREFIX}{upload_id}/")
        return completed

    def cancel_upload(self, tenant: str, upload_id: str) -> Upload:
        record = self._pending_upload(tenant, upload_id)
        cancelled = record.upload.model_copy(update={"status": "cancelled"})
        if not self.repository.finish_upload(record, cancelled):
            raise ConflictError(f"Upload {upload_id} was completed or cancelled meanwhile.")
        self.store.delete_prefix(f"{s3keys.UPLOADS_PREFIX}{upload_id}/")
        return cancelled


def _check_purpose(purpose: str) -> None:
    if purpose != INPUT_PURPOSE:
        raise InvalidRequestError(
            f"Invalid purpose {purpose!r}: this API accepts 'batch' files only.",
            param="purpose",
            code="invalid_value",
        )
