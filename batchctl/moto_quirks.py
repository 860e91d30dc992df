"""Where moto differs from AWS in a way our code depends on, mended for the local stack only.

- CopyObject keeps the source's composite checksum value but drops its type, so reading a
  copy of a multipart-uploaded object fails botocore's checksum check (AWS's copies read
  fine). Intake copies every dropped file, multipart ones included.
- S3 event notifications: AWS puts the object's `versionId` (in a versioned bucket) and a
  `sequencer` in every record; moto leaves both out. Intake reads exactly the version an
  event names, so without them the local stack could not show that a key overwritten before
  its event is handled still runs each upload as it was.

`apply()` runs in the process that holds moto's backends: the in-process mock (LocalStack)
or the moto server process (`python -m batchctl.moto_quirks`, see moto_server.py).
"""

from __future__ import annotations

import itertools
import sys
import threading
from typing import Any

_lock = threading.RLock()
_sequence = itertools.count(1)
_sequencers: dict[tuple[str, str, str], str] = {}


def _sequencer(bucket: str, key: Any) -> str:
    """One sequencer per object version, growing with each new one, as AWS's grows for a key.
    (moto sends two events for one multipart upload, Put and CompleteMultipartUpload; AWS
    sends one. The same sequencer makes them the duplicate they are.)"""
    identity = (bucket, key.name, str(getattr(key, "version_id", "")) + key.etag)
    with _lock:
        if identity not in _sequencers:
            _sequencers[identity] = f"{next(_sequence):016X}"
        return _sequencers[identity]


def apply() -> None:
    """Patch moto's S3 event records to carry `versionId` and `sequencer` as AWS's do."""
    with _lock:
        from moto.s3 import notifications

        original = notifications._get_s3_event
        if getattr(original, "mends_moto", False):
            return

        def with_version(
            event_name: str, bucket: Any, key: Any, notification_id: str
        ) -> dict[str, list[dict[str, Any]]]:
            event: dict[str, list[dict[str, Any]]] = original(
                event_name, bucket, key, notification_id
            )
            for record in event["Records"]:
                target = record["s3"]["object"]
                version = getattr(key, "version_id", None)
                if version and version != "null":
                    target["versionId"] = version
                target["sequencer"] = _sequencer(bucket.name, key)
            return event

        with_version.mends_moto = True  # type: ignore[attr-defined]
        notifications._get_s3_event = with_version
        _mend_copy_checksums()


def _mend_copy_checksums() -> None:
    from moto.s3.models import S3Backend

    original = S3Backend.copy_object

    def copy_object(
        self: Any, src_key: Any, dest_bucket_name: str, dest_key_name: str, *args: Any, **kw: Any
    ) -> None:
        original(self, src_key, dest_bucket_name, dest_key_name, *args, **kw)
        copied = self.get_object(dest_bucket_name, dest_key_name)
        if copied is not None and src_key.checksum_value:
            copied.checksum_type = src_key.checksum_type
            copied.checksum_parts = src_key.checksum_parts

    S3Backend.copy_object = copy_object


if __name__ == "__main__":
    apply()
    from moto.server import main

    main(sys.argv[1:])
