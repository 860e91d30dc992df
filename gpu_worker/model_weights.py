"""Model weights from S3, copied once to a cache on the instance.

MODEL=s3://bucket/prefix/ names a folder holding a Hugging Face model (config.json, tokenizer
files, *.safetensors, subfolders). Before the engine starts, the worker copies the folder to
MODEL_CACHE_DIR and hands vLLM the local directory. The ECS task mounts a host volume there,
so the copy outlives the task: the next worker on the instance starts without a download.

The cache is crash safe and shared by the workers of one instance:
- a copy is made in a temporary directory beside its final one and renamed into place only
  when complete, with a marker inside recording what was copied (keys, sizes, ETags): a
  leftover temporary directory is never used, only removed;
- checking and copying hold an exclusive flock on the model's lock file, so two workers
  starting together download once (the second waits, then finds the copy);
- each start lists the prefix again: the copy is used while the listing matches the marker,
  and replaced when the objects changed.

S3 keys become file names, so every key is checked first: one that would leave the copy's
directory (`..`, an absolute part, NUL) refuses the whole model, before anything is written.

The S3 client is injected (batch_core.wiring makes it): AWS's SDK stays in the data layer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gpu_worker.settings import EngineSettings

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
MARKER = ".openbatch-s3-copy.json"
"""Inside a finished copy: the URI and the objects copied. No marker, no copy."""
MARKER_FORMAT = 1
DOWNLOAD_THREADS = 8
"""Objects copied at once (boto3's managed transfer splits each large one further)."""

# S3's bucket naming rules (the legacy uppercase names of us-east-1 are not supported).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


class ModelDownloadError(RuntimeError):
    """The model could not be copied from S3 (the message names the URI)."""


class UnsafeKeyError(ModelDownloadError):
    """An S3 key that would be written outside the copy's directory."""


@dataclass(frozen=True)
class S3Prefix:
    """A model folder on S3: `prefix` is empty (the whole bucket) or ends with '/'."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"

    @property
    def name(self) -> str:
        """The folder's last segment (the bucket's name for a whole bucket)."""
        return self.prefix.rstrip("/").rsplit("/", 1)[-1] or self.bucket

    @property
    def directory_name(self) -> str:
        """The copy's directory in the cache: readable, and unique per URI by its hash (so
        folders nested in one another, or named alike in two buckets, never collide)."""
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        return f"{_UNSAFE_NAME_CHARACTERS.sub('_', self.name)}-{digest}"


@dataclass(frozen=True)
class RemoteObject:
    """One object of the listing, as the marker records it."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class ModelCopy:
    """The local copy, and what this start did to get it (nothing when it was cached)."""

    path: Path
    files: int
    total_bytes: int
    downloaded: bool
    seconds: float


def is_s3_uri(model: str | None) -> bool:
    return bool(model) and str(model).startswith(S3_SCHEME)


def parse_s3_uri(uri: str) -> S3Prefix:
    """`s3://bucket/prefix/` (the trailing '/' is optional: the prefix is always a folder, so
    s3://b/models/tiny never takes in s3://b/models/tiny-2/)."""
    if not is_s3_uri(uri):
        raise ModelDownloadError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len(S3_SCHEME) :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ModelDownloadError(f"{uri}: {bucket!r} is not an S3 bucket name")
    prefix = prefix.strip("/")
    if prefix:
        if _safe_parts(prefix) is None:
            raise ModelDownloadError(f"{uri}: the prefix {prefix!r} is not a safe folder path")
        prefix += "/"
    return S3Prefix(bucket, prefix)


def _safe_parts(path: str) -> PurePosixPath | None:
    """`path` as a relative path that stays where it is put, or None: no NUL, no absolute or
    empty part (a//b would alias a/b), no '.' or '..'."""
    parts = path.split("/")
    if "\x00" in path or any(part in {"", ".", ".."} for part in parts):
        return None
    return PurePosixPath(*parts)


def relative_path(key: str, location: S3Prefix) -> PurePosixPath:
    """Where the object `key` goes inside the copy; raises UnsafeKeyError for a key that
    could be written outside it (or over the marker)."""
    relative = _safe_parts(key[len(location.prefix) :]) if key.startswith(location.prefix) else None
    if relative is None or relative == PurePosixPath(MARKER):
        raise UnsafeKeyError(
            f"{location.uri}: refusing the model: key {key!r} does not name a file inside "
            "the prefix (no '..', '.', empty or absolute parts, no NUL, not the cache's "
            f"marker {MARKER})"
        )
    return relative


def list_model(s3: Any, location: S3Prefix) -> list[RemoteObject]:
    """The objects of the folder, by key (folder placeholders left out); raises
    ModelDownloadError when the bucket cannot be listed or the folder is empty."""
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.prefix
        )
        listed = [item for page in pages for item in page.get("Contents", [])]
    except Exception as error:  # no such bucket, access denied, no network...
        raise ModelDownloadError(f"cannot list the model at {location.uri}: {error}") from error
    objects = [
        RemoteObject(key=item["Key"], size=int(item["Size"]), etag=str(item.get("ETag", "")))
        for item in listed
        # The console's "Create folder" leaves empty objects named like folders.
        if not (item["Key"].endswith("/") and int(item["Size"]) == 0)
    ]
    if not objects:
        raise ModelDownloadError(f"no model at {location.uri}: the prefix holds no objects")
    return sorted(objects, key=lambda item: item.key)


def fetch_model(
    s3: Any,
    uri: str,
    cache_dir: Path,
    *,
    threads: int = DOWNLOAD_THREADS,
) -> ModelCopy:
    """The local copy of the model folder at `uri`, downloaded unless the cache already
    holds a complete copy of the objects listed now."""
    location = parse_s3_uri(uri)
    objects = list_model(s3, location)
    # Every key is checked before anything is written.
    files = {item: relative_path(item.key, location) for item in objects}
    try:
        copy = _cached_copy(s3, location, files, cache_dir, threads)
    except OSError as error:  # the cache's disk: not writable, full...
        raise ModelDownloadError(f"cannot cache {location.uri} in {cache_dir}: {error}") from error
    if copy.downloaded:
        logger.info(
            "model %s: copied %d files, %d bytes in %.1f s to %s",
            location.uri,
            copy.files,
            copy.total_bytes,
            copy.seconds,
            copy.path,
            extra={
                "model_uri": location.uri,
                "model_path": str(copy.path),
                "model_files": copy.files,
                "model_bytes": copy.total_bytes,
                "model_download_seconds": round(copy.seconds, 3),
            },
        )
    else:
        logger.info(
            "model %s: using the cached copy in %s",
            location.uri,
            copy.path,
            extra={"model_uri": location.uri, "model_path": str(copy.path)},
        )
    return copy


def local_model(
    settings: EngineSettings,
    s3: Callable[[], Any],
    *,
    on_copy: Callable[[ModelCopy], None] | None = None,
) -> EngineSettings:
    """The settings with an s3:// MODEL replaced by its local copy (the same settings for
    any other MODEL). SERVED_MODEL_NAME defaults to the folder's last segment, not the copy's
    path. `s3` makes the client, only when it is needed; `on_copy` sees each copy made."""
    if not settings.model or not is_s3_uri(settings.model):
        return settings
    location = parse_s3_uri(settings.model)
    copy = fetch_model(s3(), settings.model, settings.model_cache_dir)
    if on_copy is not None and copy.downloaded:
        on_copy(copy)
    return settings.model_copy(
        update={
            "model": str(copy.path),
            "served_model_name": settings.served_model_name or location.name,
        }
    )


# -- the cache --------------------------------------------------------------------------


def _cached_copy(
    s3: Any,
    location: S3Prefix,
    files: dict[RemoteObject, PurePosixPath],
    cache_dir: Path,
    threads: int,
) -> ModelCopy:
    """`files`: each listed object (in listing order) and where it goes in the copy."""
    objects = list(files)
    total = sum(item.size for item in objects)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / location.directory_name
    with _exclusive(cache_dir / f".{final.name}.lock", location):
        if _is_complete(final, location, files):
            return ModelCopy(final, len(objects), total, downloaded=False, seconds=0.0)
        _remove_leftovers(cache_dir, final.name)
        started = time.monotonic()
        partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=cache_dir))
        try:
            _download_all(s3, location, files, partial, threads)
            _write_marker(partial, location, objects)
            _move_into_place(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return ModelCopy(
        final, len(objects), total, downloaded=True, seconds=time.monotonic() - started
    )


@contextmanager
def _exclusive(lock_path: Path, location: S3Prefix) -> Iterator[None]:
    """Hold the model's lock: one worker of the instance checks or copies it at a time. The
    kernel drops the lock with the process, so a crashed worker never holds it."""
    with lock_path.open("a") as handle:  # "a": opening never truncates what another holds
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("model %s: waiting for another worker's copy", location.uri)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_objects(objects: list[RemoteObject]) -> list[dict[str, Any]]:
    return [asdict(item) for item in objects]


def _is_complete(final: Path, location: S3Prefix, files: dict[RemoteObject, PurePosixPath]) -> bool:
    """Whether `final` is a finished copy of exactly these objects, every file still there
    at its size (a file removed or cut short by hand means copying again)."""
    try:
        recorded = json.loads((final / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or (
        recorded.get("format"),
        recorded.get("uri"),
        recorded.get("objects"),
    ) != (MARKER_FORMAT, location.uri, _marker_objects(list(files))):
        return False
    for item, relative in files.items():
        try:
            if (final / relative).stat().st_size != item.size:
                return False
        except OSError:
            return False
    return True


def _remove_leftovers(cache_dir: Path, name: str) -> None:
    """Remove what an interrupted copy of this model left (only the lock's holder copies
    it, so no other worker is using these)."""
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for leftover in cache_dir.glob(pattern):
            logger.info("removing the unfinished copy %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _download_all(
    s3: Any,
    location: S3Prefix,
    files: dict[RemoteObject, PurePosixPath],
    into: Path,
    threads: int,
) -> None:
    root = into.resolve()

    def download(item: RemoteObject, relative: PurePosixPath) -> None:
        target = root.joinpath(*relative.parts)
        # relative_path already refused such keys; this keeps the promise if it ever changes.
        if not target.resolve().is_relative_to(root):
            raise UnsafeKeyError(f"{location.uri}: refusing key {item.key!r}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(location.bucket, item.key, str(target))
            size = target.stat().st_size
            if size != item.size:
                raise ModelDownloadError(f"got {size} bytes, the listing said {item.size}")
            _fsync(target)  # on disk before the rename makes the copy count as complete
        except Exception as error:
            raise ModelDownloadError(
                f"cannot copy s3://{location.bucket}/{item.key} (model {location.uri}): {error}"
            ) from error

    with ThreadPoolExecutor(
        max_workers=max(1, min(threads, len(files))), thread_name_prefix="model-download"
    ) as pool:
        futures = [pool.submit(download, item, relative) for item, relative in files.items()]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((future for future in done if future.exception()), None)
        if failed is not None:
            for future in futures:
                future.cancel()  # the copy is lost anyway: start no more downloads
            failed.result()


def _write_marker(directory: Path, location: S3Prefix, objects: list[RemoteObject]) -> None:
    marker = directory / MARKER
    marker.write_text(
        json.dumps(
            {
                "format": MARKER_FORMAT,
                "uri": location.uri,
                "objects": _marker_objects(objects),
                "copied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=1,
        )
    )
    _fsync(marker)
    _fsync(directory)


def _move_into_place(partial: Path, final: Path) -> None:
    """Rename the finished copy to its final name, replacing an outdated one. (A directory
    cannot be replaced in one rename: a crash between the two leaves no final copy, only
    leftovers, and the next start copies again.)"""
    if final.exists() or final.is_symlink():
        outdated = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(outdated)
        partial.rename(final)
        shutil.rmtree(outdated, ignore_errors=True)
    else:
        partial.rename(final)
    _fsync(final.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
