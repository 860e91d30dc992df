"""What a user of a dropped file does: put it in inbox/, watch outbox/<name>/, download it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from batch_core import s3keys
from batch_core.models import TERMINAL_STATUSES, Batch

if TYPE_CHECKING:
    import boto3


class Outbox:
    """The bucket's inbox/ and outbox/, as `aws s3 cp` sees them."""

    def __init__(self, session: boto3.session.Session, bucket: str) -> None:
        self.session = session
        self.bucket = bucket

    def drop(
        self, path: Path, name: str | None = None, *, metadata: dict[str, str] | None = None
    ) -> str:
        """Upload a file into inbox/ as `aws s3 cp [--metadata ...]` would; returns its outbox
        name (`name` may hold folders, e.g. `endpoint=embeddings/run1`)."""
        name = name or path.stem
        self.session.client("s3").upload_file(
            str(path),
            self.bucket,
            f"{s3keys.INBOX_PREFIX}{name}.jsonl",
            ExtraArgs={"Metadata": metadata} if metadata else None,
        )
        return name

    def read(self, name: str, filename: str) -> bytes | None:
        """An outbox object's bytes, None if it is not there yet.

        moto's in-process S3 closes an object's buffer when the key is overwritten, so a read
        racing the worker's rewrite of batch.json can fail with ValueError or come back empty
        (a batch.json never is); read it again.
        """
        s3 = self.session.client("s3")
        for attempt in range(20):
            try:
                response = s3.get_object(Bucket=self.bucket, Key=s3keys.outbox_key(name, filename))
                data: bytes = response["Body"].read()
                if data or filename != "batch.json":
                    return data
            except s3.exceptions.NoSuchKey:
                return None
            except ValueError:
                if attempt == 19:
                    raise
            time.sleep(0.05)
        return None  # pragma: no cover - the loop returns or raises

    def batch(self, name: str) -> Batch | None:
        data = self.read(name, "batch.json")
        return None if data is None else Batch.model_validate_json(data)

    def wait(
        self,
        name: str,
        *,
        timeout: float = 1800,
        on_progress: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """Wait until outbox/<name>/batch.json shows a terminal status."""
        deadline = time.monotonic() + timeout
        last: Batch | None = None
        while time.monotonic() < deadline:
            batch = self.batch(name)
            if batch is not None:
                if on_progress and (last is None or batch.model_dump() != last.model_dump()):
                    on_progress(batch)
                last = batch
                if batch.status in TERMINAL_STATUSES:
                    return batch
            time.sleep(0.1)
        raise TimeoutError(
            f"batch for {name!r} did not finish within {timeout:.0f} s "
            f"(last status: {last.status if last else 'no batch yet'})"
        )

    def download(self, name: str, out_dir: Path) -> dict[str, Path]:
        """Copy outbox/<name>/ into out_dir: batch.json, output.jsonl, errors.jsonl."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for filename in ("batch.json", "output.jsonl", "errors.jsonl"):
            target = out_dir / filename
            target.write_bytes(self.read(name, filename) or b"")
            paths[filename] = target
        return paths
