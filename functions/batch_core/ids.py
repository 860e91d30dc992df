"""Identifiers in OpenAI's shapes: batch_..., file-..., batch_req_..."""

from __future__ import annotations

import hashlib
import uuid


def _hex(seed: str | None, length: int) -> str:
    if seed is None:
        return uuid.uuid4().hex[:length]
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def new_batch_id(seed: str | None = None) -> str:
    """A batch id; the same seed (e.g. an S3 event's identity) always gives the same id."""
    return f"batch_{_hex(seed, 32)}"


def new_file_id(seed: str | None = None) -> str:
    """A file id; seeded ids make re-running finalize produce the same files."""
    return f"file-{_hex(seed, 24)}"


def new_request_line_id(seed: str | None = None) -> str:
    """The `id` of one output line."""
    return f"batch_req_{_hex(seed, 32)}"


def new_request_id(seed: str | None = None) -> str:
    """The `response.request_id` of one output line."""
    return _hex(None if seed is None else f"request/{seed}", 32)


def new_upload_id() -> str:
    return f"upload_{_hex(None, 32)}"


def new_upload_part_id() -> str:
    return f"part_{_hex(None, 32)}"


def new_webhook_endpoint_id() -> str:
    return f"we_{_hex(None, 24)}"


def new_event_id(seed: str) -> str:
    """The same event (a batch reaching a status) always has the same id."""
    return f"evt_{_hex(f'event/{seed}', 24)}"
