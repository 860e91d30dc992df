"""Where moto differs from AWS in a way our code depends on, mended for the local stack only.

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

_lock = threading.Lock()
_sequence = itertools.count(1)


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
                # AWS's sequencer only grows for one key; a process-wide counter does too.
                target["sequencer"] = f"{next(_sequence):016X}"
            return event

        with_version.mends_moto = True  # type: ignore[attr-defined]
        notifications._get_s3_event = with_version


if __name__ == "__main__":
    apply()
    from moto.server import main

    main(sys.argv[1:])
