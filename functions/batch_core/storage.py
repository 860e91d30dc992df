"""S3 access: the only module that talks to S3."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from batch_core.errors import MissingObjectError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHUNK = 1024 * 1024
# put_stream's multipart parts: one is held in memory at a time.
_PART_BYTES = 16 * 1024 * 1024
MIN_COPY_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part but the last


@dataclass(frozen=True)
class ObjectInfo:
    """An object's size and its S3 user metadata (`x-amz-meta-*`, keys lowercased)."""

    size: int
    metadata: dict[str, str]


def _is_missing(error: Any) -> bool:
    code = error.response.get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


class ObjectStore:
    """Reads and writes the objects of the one bucket."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def stream(self, key: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The object's bytes, chunk by chunk (never the whole object in memory)."""
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def stream_ahead(self, key: str, chunk_size: int = _CHUNK, depth: int = 4) -> Iterator[bytes]:
        """`stream`, with a thread reading up to `depth` chunks ahead: the download (which
        releases the GIL while it waits on the socket) overlaps with the caller's work."""
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def download() -> None:
            try:
                for chunk in self.stream(key, chunk_size):
                    while not stop.is_set():
                        try:
                            chunks.put(chunk, timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                chunks.put(None)
            except BaseException as error:  # handed to the reader, which raises it
                chunks.put(error)

        reader = threading.Thread(target=download, name=f"read-ahead {key}", daemon=True)
        reader.start()
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            reader.join(timeout=5)

    def parallel_uploads(self, max_in_flight: int = 8) -> ParallelUploads:
        """Upload many objects at once (S3 serves one PUT in tens of milliseconds)."""
        return ParallelUploads(self, max_in_flight)

    def read(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def read_if_there(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        try:
            return self.read(key)
        except self._s3.exceptions.ClientError as error:
            if _is_missing(error):
                return None
            raise

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of the object from `offset` (one ranged GET: a page of results reads
        its lines, never whole parts)."""
        if length <= 0:
            return b""
        byte_range = f"bytes={offset}-{offset + length - 1}"
        return self._s3.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"].read()

    def size(self, key: str) -> int:
        return self.head(key).size

    def head(self, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """Size and metadata of the object (of that version); MissingObjectError if gone."""
        try:
            if version_id:
                response = self._s3.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            else:
                response = self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as error:
            if _is_missing(error):
                raise MissingObjectError(f"{key} ({version_id or 'current'}) is gone") from error
            raise
        return ObjectInfo(
            size=int(response["ContentLength"]), metadata=response.get("Metadata", {})
        )

    def upload(self, key: str, data: IO[bytes]) -> None:
        """Upload a file object from its current position (multipart when it is large)."""
        self._s3.upload_fileobj(
            data, self.bucket, key, ExtraArgs={"ContentType": "application/jsonl"}
        )

    def put(self, key: str, data: bytes, content_type: str = "application/jsonl") -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, document: Any) -> None:
        data = json.dumps(document, indent=2).encode()
        self.put(key, data, content_type="application/json")

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Upload a stream of unknown length; returns its size. One PUT when it is small,
        else a multipart upload of `_PART_BYTES` parts: memory holds one part, and nothing
        touches the disk (a Lambda's /tmp is smaller than a 2 GB file)."""
        with _MultipartWriter(self._s3, self.bucket, key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.size

    def join(self, key: str, sources: list[tuple[str, int]]) -> None:
        """Join objects (key, size), in order, into `key` without their bytes passing through
        here: S3 copies each source into one part of a multipart upload (UploadPartCopy). S3
        wants every part but the last to be at least 5 MiB; ValueError when one is not (use
        `put_stream` then)."""
        if any(size < MIN_COPY_PART_BYTES for _, size in sources[:-1]):
            raise ValueError("every source but the last must have at least 5 MiB")
        with _MultipartWriter(self._s3, self.bucket, key) as writer:
            for source, _ in sources:
                writer.copy_part(source)

    def copy(self, source_key: str, target_key: str, *, version_id: str | None = None) -> None:
        """Server-side copy; `version_id` copies that version of the source, not the current
        one. MissingObjectError when the source (version) is gone."""
        source: Any = {"Bucket": self.bucket, "Key": source_key}
        if version_id:
            source["VersionId"] = version_id
        try:
            self._s3.copy_object(Bucket=self.bucket, Key=target_key, CopySource=source)
        except self._s3.exceptions.ClientError as error:
            if _is_missing(error):
                message = f"{source_key} ({version_id or 'current'}) is gone"
                raise MissingObjectError(message) from error
            raise

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as error:
            if _is_missing(error):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def presigned_url(self, key: str, seconds: int, disposition: str | None = None) -> str:
        """A short-lived GET URL for one object (large downloads bypass the API);
        `disposition` is the Content-Disposition S3 answers with."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if disposition:
            params["ResponseContentDisposition"] = disposition
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    def list_sizes(self, prefix: str) -> list[tuple[str, int]]:
        """Every key under prefix with its size, in key order."""
        found: list[tuple[str, int]] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend((item["Key"], int(item["Size"])) for item in page.get("Contents", []))
        return sorted(found)

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under prefix, in key order."""
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), 1000):
            batch: list[Any] = [{"Key": key} for key in keys[start : start + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)


class _MultipartWriter:
    """Bytes written in order, or objects copied in as parts, become one object: a single PUT
    if only a few bytes were written, else a multipart upload (aborted if the writer is left
    by an exception)."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Any] = []
        self.size = 0

    def __enter__(self) -> _MultipartWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self._abort()
            return
        if self._upload_id is None:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=bytes(self._buffer),
                ContentType="application/jsonl",
            )
            return
        try:
            if self._buffer:
                self._flush()
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except BaseException:
            # The last part or the completion failed: its parts would cost storage until the
            # lifecycle rule's two days were up.
            self._abort()
            raise

    def _abort(self) -> None:
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= _PART_BYTES:
            self._flush()

    def copy_part(self, source_key: str) -> None:
        """The next part is the object `source_key`, copied by S3 (nothing written may be
        waiting in the buffer: a part is one or the other)."""
        if self._buffer:
            raise ValueError("copy_part after unflushed writes")
        response = self._s3.upload_part_copy(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._started(),
            PartNumber=len(self._parts) + 1,
            CopySource={"Bucket": self._bucket, "Key": source_key},
        )
        self._parts.append(
            {"PartNumber": len(self._parts) + 1, "ETag": response["CopyPartResult"]["ETag"]}
        )

    def _started(self) -> str:
        if self._upload_id is None:
            created = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType="application/jsonl"
            )
            self._upload_id = created["UploadId"]
        return self._upload_id

    def _flush(self) -> None:
        response = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._started(),
            PartNumber=len(self._parts) + 1,
            Body=bytes(self._buffer),
        )
        self._parts.append({"PartNumber": len(self._parts) + 1, "ETag": response["ETag"]})
        self._buffer.clear()


class ParallelUploads:
    """Uploads running in a few threads; leaving the `with` block waits for all of them.

    `submit` blocks while `max_in_flight` uploads are pending, so memory stays bounded, and
    the first failed upload is raised on exit.
    """

    def __init__(self, store: ObjectStore, max_in_flight: int) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="upload")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._futures: list[Future[None]] = []

    def __enter__(self) -> ParallelUploads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)

    def submit(self, key: str, data: IO[bytes]) -> None:
        """Upload `data` from its current position, then close it (the upload owns it)."""
        self._slots.acquire()

        def upload() -> None:
            try:
                self._store.upload(key, data)
            finally:
                data.close()
                self._slots.release()

        self._futures.append(self._pool.submit(upload))
