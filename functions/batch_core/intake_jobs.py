"""Work the API hands to the validate function instead of doing it inside a request: joining
an upload's parts into a File, and building a retry's input file. Both can take minutes for
a 2 GB file, far past API Gateway's 29 seconds; the intake queue gives them the validate
function's 15 minutes, retries and its dead-letter queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError


class JoinUpload(BaseModel):
    """Join a completed Upload's parts, in their recorded order, into its File."""

    job: Literal["join_upload"] = "join_upload"
    upload_id: str


class BuildRetryInput(BaseModel):
    """Write the input file of a retry batch (the parent's failed lines); the child, waiting
    on that File, then starts."""

    job: Literal["retry_input"] = "retry_input"
    parent_id: str
    """The batch being retried (its child's and its File's ids derive from it)."""


IntakeJob = Annotated[JoinUpload | BuildRetryInput, Field(discriminator="job")]
_JOBS: TypeAdapter[JoinUpload | BuildRetryInput] = TypeAdapter(IntakeJob)


@dataclass(frozen=True)
class DroppedObject:
    """An object that landed in the bucket (from an S3 event): a dropped file, or the input
    of a batch created through the API."""

    key: str
    etag: str = ""
    sequencer: str = ""
    version_id: str = ""

    @property
    def identity(self) -> str:
        """The same upload always has the same identity; a new upload of the key does not."""
        return f"{self.key}#{self.version_id}#{self.sequencer or self.etag}"


IntakeWork = JoinUpload | BuildRetryInput | DroppedObject
"""What one intake message asks of the validate function."""


def parse_job(body: str) -> JoinUpload | BuildRetryInput | None:
    """The job a queue message carries; None for anything else (an S3 event)."""
    if '"job"' not in body:
        return None
    try:
        return _JOBS.validate_json(body)
    except ValidationError:
        return None
