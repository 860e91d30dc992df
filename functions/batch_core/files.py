"""Files and uploads: what `/v1/files` and `/v1/uploads` do, per tenant.

A File's bytes live at `files/<id>`; an Upload collects parts under `uploads/<id>/` and joins
them into a File on completion (an S3 multipart upload when large). Another tenant's ids are
answered exactly like unknown ones.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from batch_core import s3keys
from batch_core.errors import ConflictError, InvalidRequestError, NotFoundError
from batch_core.ids import new_file_id, new_upload_id, new_upload_part_id
from batch_core.intake_jobs import JoinUpload
from batch_core.messaging import IntakeJobs
from batch_core.models import FileObject, FileStatus, Upload, UploadPart
from batch_core.records import (
    FileRecord,
    UploadPartRecord,
    UploadRecord,
)
from batch_core.repository import BatchRepository
from batch_core.retention import ExpiresAfter, expires_at, new_file_object
from batch_core.settings import Settings
from batch_core.storage import MIN_COPY_PART_BYTES, ObjectStore
from batch_core.table_codec import Page

INPUT_PURPOSE = "batch"
"""The only purpose a client may upload: this API runs batches."""


@dataclass(frozen=True)
class FileContent:
    """A file's content: the bytes themselves, or a short-lived URL for large files."""

    file: FileObject
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class AssembledFile:
    """What a job that assembles a File off the request path (an upload's join, a retry's
    input) left: the File, why it failed (or None), and the batches created on it meanwhile."""

    file_id: str
    error: str | None
    waiting_batches: list[str]


class FileService:
    """Files and uploads of one deployment."""

    def __init__(
        self,
        settings: Settings,
        repository: BatchRepository,
        store: ObjectStore,
        jobs: IntakeJobs | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.store = store
        self.jobs = jobs
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    # -- files ------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        *,
        filename: str,
        purpose: str,
        data: bytes,
        expires_after: ExpiresAfter | None = None,
    ) -> FileObject:
        """Store an uploaded batch input file."""
        _check_purpose(purpose)
        check_filename(filename or "upload.jsonl")  # before the bytes: none left unrecorded
        if not data:
            raise InvalidRequestError("The file is empty.", param="file", code="empty_file")
        file_id = new_file_id()
        key = s3keys.file_key(file_id)
        self.store.put(key, data)
        return self._record(tenant, file_id, filename, len(data), key, expires_after=expires_after)

    def _record(
        self,
        tenant: str,
        file_id: str,
        filename: str,
        size: int,
        key: str,
        status: FileStatus = "processed",
        *,
        expires_after: ExpiresAfter | None = None,
    ) -> FileObject:
        now = self._now()
        file = new_file_object(
            file_id,
            size=size,
            created_at=now,
            filename=check_filename(filename or "upload.jsonl"),
            status=status,
            expires_at=expires_at(now, expires_after, self.settings.file_retention_seconds),
        )
        self.repository.files.put_file(FileRecord(file=file, s3_key=key, tenant=tenant))
        return file

    def get(self, tenant: str, file_id: str) -> FileRecord:
        """The tenant's file; NotFoundError for unknown ids, other tenants' files and expired
        files alike (an expired one is gone at once, before the sweep deletes its bytes)."""
        record = self.repository.files.get_file(file_id)
        if record is None or record.tenant != tenant or record.expired(self._now()):
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
    ) -> Page[FileObject]:
        cursor = self._cursor(tenant, after)
        page = self.repository.files.list_files(
            tenant, after=cursor, limit=limit, ascending=order == "asc", purpose=purpose
        )
        now = self._now()
        return Page([r.file for r in page.items if not r.expired(now)], page.has_more)

    def _cursor(self, tenant: str, after: str | None) -> str | None:
        if after is None:
            return None
        position = self.repository.access.listing_position(tenant, "file", after)
        if position is None:
            raise NotFoundError(f"No such File object: {after}", param="after")
        return position

    def expired_file_ids(self, limit: int = 1000) -> list[str]:
        """Up to `limit` Files past their `expires_at`, oldest first."""
        return self.repository.batches.expired_file_ids(self._now(), limit)

    def delete_expired_file(self, file_id: str) -> str:
        """Delete one expired File (its bytes, what was made of them, its record)."""
        record = self.repository.files.get_file(file_id)
        if record is not None:
            self._delete_record(record)
        return file_id

    def delete(self, tenant: str, file_id: str) -> None:
        """Delete the file's bytes and its record. Batches keep their own copy of their input,
        so deleting an input file never breaks a batch."""
        self._delete_record(self.get(tenant, file_id))

    def _delete_record(self, record: FileRecord) -> None:
        """The File's bytes, and the copies a batch made of them, then its record (last: a
        failure halfway leaves it for the sweep to finish). A batch's output or error File
        takes the result parts it was merged from (`/results` read them) and its outbox
        copy with it."""
        self.store.delete(record.s3_key)
        batch = self.repository.batches.get_batch(record.batch_id) if record.batch_id else None
        if batch is not None:
            kinds = (
                (batch.output_file_id, s3keys.results_prefix(batch.id), "output.jsonl"),
                (batch.error_file_id, s3keys.errors_prefix(batch.id), "errors.jsonl"),
            )
            for file_id, prefix, filename in kinds:
                if file_id == record.file.id:
                    self.store.delete_prefix(prefix)
                    if batch.outbox_name:
                        self.store.delete(s3keys.outbox_key(batch.outbox_name, filename))
            # The result index (`result_index`) points into both kinds: it goes with the
            # last of them (pages hide a deleted kind's lines until then).
            others = [kind[0] for kind in kinds if kind[0] not in (None, record.file.id)]
            if any(kind[0] == record.file.id for kind in kinds) and not any(
                self._kept(other) for other in others if other is not None
            ):
                self.store.delete_prefix(s3keys.index_prefix(batch.id))
        self.repository.files.delete_file(record.file.id)

    def _kept(self, file_id: str) -> bool:
        other = self.repository.files.get_file(file_id)
        return other is not None and not other.expired(self._now())

    def content(self, tenant: str, file_id: str) -> FileContent:
        """Small files inline; large ones as a presigned URL (the client follows a redirect)."""
        record = self.get(tenant, file_id)
        if record.file.status != "processed":
            raise ConflictError(
                f"File {file_id} is {record.file.status}: "
                + (record.file.status_details or "its parts are still being joined.")
            )
        if record.file.bytes <= self.settings.max_inline_content_bytes:
            return FileContent(file=record.file, data=self.store.read(record.s3_key))
        url = self.store.presigned_url(
            record.s3_key,
            self.settings.presigned_url_seconds,
            disposition=content_disposition(record.file.filename),
        )
        return FileContent(file=record.file, url=url)

    # -- uploads ----------------------------------------------------------------------

    def create_upload(
        self,
        tenant: str,
        *,
        filename: str,
        purpose: str,
        size: int,
        mime_type: str,
        expires_after: ExpiresAfter | None = None,
    ) -> Upload:
        _check_purpose(purpose)
        check_filename(filename)
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
        self.repository.files.put_upload(
            UploadRecord(
                upload=upload, tenant=tenant, mime_type=mime_type, expires_after=expires_after
            )
        )
        return upload

    def _pending_upload(self, tenant: str, upload_id: str) -> UploadRecord:
        record = self.repository.files.get_upload(upload_id)
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
        if not self.repository.files.reserve_upload_bytes(
            upload_id, len(data), record.upload.bytes
        ):
            raise ConflictError(
                f"This part would take upload {upload_id} past the {record.upload.bytes} bytes "
                "it was created for.",
                param="data",
            )
        part = UploadPart(id=new_upload_part_id(), created_at=self._now(), upload_id=upload_id)
        key = s3keys.upload_part_key(upload_id, part.id)
        self.store.put(key, data, content_type=record.mime_type or "application/octet-stream")
        self.repository.files.put_upload_part(
            UploadPartRecord(part=part, bytes=len(data), s3_key=key)
        )
        return part

    def complete_upload(
        self, tenant: str, upload_id: str, *, part_ids: list[str], md5: str | None = None
    ) -> Upload:
        """Join the parts, in the order given, into a new File; their sizes must add up to
        the upload's `bytes` (and their MD5 to `md5`, when given)."""
        record = self._pending_upload(tenant, upload_id)
        parts = {p.part.id: p for p in self.repository.files.list_upload_parts(upload_id)}
        unknown = [part_id for part_id in part_ids if part_id not in parts]
        if not part_ids or unknown:
            shown = ", ".join(repr(part_id[:64]) for part_id in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise ConflictError(  # the upload holds no such parts (yet)
                f"Unknown part ids for upload {upload_id}: {shown or '(none given)'}{more}.",
                param="part_ids",
            )
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequestError("part_ids lists a part twice.", param="part_ids")
        total = sum(parts[part_id].bytes for part_id in part_ids)
        if total != record.upload.bytes:  # what was sent does not fit what was announced
            raise ConflictError(
                f"The parts add up to {total} bytes; the upload was created for "
                f"{record.upload.bytes}.",
                param="part_ids",
            )
        file_id = new_file_id(f"{upload_id}/file")
        key = s3keys.file_key(file_id)
        ordered = [(parts[part_id].s3_key, parts[part_id].bytes) for part_id in part_ids]
        upload_file, keep = (record.upload.filename, total, key), record.expires_after
        if total <= self.settings.inline_join_bytes:
            # Small enough to join within the request (streamed, one part in memory), so a
            # wrong MD5 is a 400 now and the upload stays open for another try.
            actual = self._join(key, ordered, want_md5=bool(md5))
            if md5 and md5.lower() != actual:
                self.store.delete(key)
                raise ConflictError(f"The parts' MD5 is {actual}, not {md5}.", param="md5")
            file = self._record(tenant, file_id, *upload_file, expires_after=keep)
            completed = record.upload.model_copy(update={"status": "completed", "file": file})
            if not self.repository.files.finish_upload(record, completed):
                self.store.delete(key)
                self.repository.files.delete_file(file_id)
                raise ConflictError(f"Upload {upload_id} was completed or cancelled meanwhile.")
            self.store.delete_prefix(f"{s3keys.UPLOADS_PREFIX}{upload_id}/")
            return completed
        # Larger files are joined off the request path (2 GB take longer than API Gateway
        # waits): the File is `uploaded` until the join job makes it `processed`.
        file = self._record(tenant, file_id, *upload_file, "uploaded", expires_after=keep)
        completed = record.upload.model_copy(update={"status": "completed", "file": file})
        planned = record.model_copy(update={"part_ids": part_ids, "md5": md5})
        if not self.repository.files.finish_upload(planned, completed):
            self.repository.files.delete_file(file_id)
            raise ConflictError(f"Upload {upload_id} was completed or cancelled meanwhile.")
        if self.jobs is None:
            raise RuntimeError("no intake queue to join the upload's parts")
        self.jobs.send(JoinUpload(upload_id=upload_id))
        return completed

    def _join(self, key: str, ordered: list[tuple[str, int]], *, want_md5: bool) -> str | None:
        """Join part objects into `key`; their MD5 when asked. Without an MD5 to check and
        with parts S3 can copy (5 MiB but the last), no byte passes through here."""
        if not want_md5 and all(size >= MIN_COPY_PART_BYTES for _, size in ordered[:-1]):
            self.store.join(key, ordered)
            return None
        digest = hashlib.md5(usedforsecurity=False)

        def hashed() -> Iterator[bytes]:
            for part_key, _ in ordered:
                for chunk in self.store.stream(part_key):
                    digest.update(chunk)
                    yield chunk

        self.store.put_stream(key, hashed())
        return digest.hexdigest()

    def join_upload(self, upload_id: str) -> AssembledFile | None:
        """The join job: the parts, in their recorded order, become the File's bytes (its
        MD5 checked when the client gave one); the File is then `processed`, or `error`
        with the reason. Returns the batches that were waiting for it; None when there is
        nothing (more) to do, so a redelivered job changes nothing."""
        record = self.repository.files.get_upload(upload_id)
        if record is None or record.upload.file is None or record.upload.status != "completed":
            return None
        current = self.repository.files.get_file(record.upload.file.id)
        if current is None or current.file.status != "uploaded":
            return None
        parts = {p.part.id: p for p in self.repository.files.list_upload_parts(upload_id)}
        ordered = [(parts[part_id].s3_key, parts[part_id].bytes) for part_id in record.part_ids]
        error = None
        actual = self._join(current.s3_key, ordered, want_md5=record.md5 is not None)
        if record.md5 and record.md5.lower() != actual:
            error = f"The parts' MD5 is {actual}, not {record.md5}."
            self.store.delete(current.s3_key)
        waiting = self.repository.files.finish_file(
            current.file.id, status="error" if error else "processed", status_details=error
        )
        self.store.delete_prefix(f"{s3keys.UPLOADS_PREFIX}{upload_id}/")
        return AssembledFile(file_id=current.file.id, error=error, waiting_batches=waiting)

    def fail_join(self, upload_id: str) -> AssembledFile | None:
        """The join job failed every attempt: the File ends `error`, its waiting batches
        are returned so that they fail too."""
        record = self.repository.files.get_upload(upload_id)
        if record is None or record.upload.file is None:
            return None
        error = "The upload's parts could not be joined after several attempts; upload again."
        file_id = record.upload.file.id
        waiting = self.repository.files.finish_file(file_id, status="error", status_details=error)
        return AssembledFile(file_id=file_id, error=error, waiting_batches=waiting)

    def cancel_upload(self, tenant: str, upload_id: str) -> Upload:
        record = self._pending_upload(tenant, upload_id)
        cancelled = record.upload.model_copy(update={"status": "cancelled"})
        if not self.repository.files.finish_upload(record, cancelled):
            raise ConflictError(f"Upload {upload_id} was completed or cancelled meanwhile.")
        self.store.delete_prefix(f"{s3keys.UPLOADS_PREFIX}{upload_id}/")
        return cancelled


def content_disposition(filename: str) -> str:
    """`attachment` with the name as RFC 6266 wants it: an ASCII fallback without quotes,
    backslashes or control characters, and the exact name percent-encoded (RFC 5987), so no
    name can break out of the header or inject another."""
    fallback = "".join(
        char if 32 <= ord(char) < 127 and char not in '"\\' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


MAX_FILENAME_CHARS = 255


def content_type_of(filename: str) -> str:
    """The media type a file's bytes are served with: JSONL for batch input and results
    (OpenAI serves `application/jsonl`), raw bytes otherwise."""
    if filename.lower().endswith((".jsonl", ".ndjson")):
        return "application/jsonl"
    return "application/octet-stream"


def check_filename(filename: str) -> str:
    """A filename we can store and send back in a header: at most 255 characters, no
    control characters (CR/LF would let a name inject headers into its download)."""
    if len(filename) > MAX_FILENAME_CHARS:
        raise InvalidRequestError(
            f"The filename has {len(filename)} characters; at most {MAX_FILENAME_CHARS} are "
            "accepted.",
            param="filename",
            code="invalid_value",
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in filename):
        raise InvalidRequestError(
            "The filename contains control characters (such as a line break).",
            param="filename",
            code="invalid_value",
        )
    return filename


def _check_purpose(purpose: str) -> None:
    if purpose != INPUT_PURPOSE:
        raise InvalidRequestError(
            f"Invalid purpose {purpose!r}: this API accepts 'batch' files only.",
            param="purpose",
            code="invalid_value",
        )
