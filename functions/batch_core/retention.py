"""How long files are kept: OpenAI's `expires_after` policy, and the deployment's default.

Every File carries `expires_at`. Past it the File answers 404 at once, and the expiry sweep
deletes its bytes and its record (`FileService.delete_expired`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_core.json_bounds import JsonInt
from batch_core.models import FileObject, FilePurpose, FileStatus

MIN_EXPIRES_AFTER_SECONDS = 3600
"""OpenAI's bounds on `expires_after.seconds`: one hour..."""
MAX_EXPIRES_AFTER_SECONDS = 30 * 24 * 3600
"""... to thirty days."""
DEFAULT_FILE_RETENTION_SECONDS = MAX_EXPIRES_AFTER_SECONDS
"""OpenAI keeps batch files 30 days unless told otherwise."""


class ExpiresAfter(BaseModel):
    """An expiration policy: `seconds` after the File's `created_at`."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    """The timestamp the policy counts from (OpenAI's only anchor)."""
    seconds: JsonInt = Field(ge=MIN_EXPIRES_AFTER_SECONDS, le=MAX_EXPIRES_AFTER_SECONDS)
    """How long after the anchor the File expires: 3600 (1 hour) to 2592000 (30 days)."""


def expires_at(created_at: int, policy: ExpiresAfter | None, default_seconds: int) -> int:
    """When a File created at `created_at` expires, by its policy or the default."""
    return created_at + (policy.seconds if policy is not None else default_seconds)


def new_file_object(
    file_id: str,
    *,
    size: int,
    created_at: int,
    filename: str,
    expires_at: int,
    purpose: FilePurpose = "batch",
    status: FileStatus = "processed",
) -> FileObject:
    """The one place a File object is made (uploads, dropped inputs, retry inputs, outputs):
    every File has an expiry, which the sweep deletes it by."""
    return FileObject(
        id=file_id,
        bytes=size,
        created_at=created_at,
        filename=filename,
        purpose=purpose,
        status=status,
        expires_at=expires_at,
    )
