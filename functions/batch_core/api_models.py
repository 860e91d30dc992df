"""Request parameters and list envelopes of the HTTP API, in OpenAI's shapes."""

from __future__ import annotations

from typing import Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from batch_core.models import Batch, FileObject
from batch_core.retention import ExpiresAfter


class BatchCreateParams(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1)
    """A file uploaded with purpose `batch`."""
    endpoint: str
    """`/v1/chat/completions`, `/v1/completions` or `/v1/embeddings`."""
    completion_window: str = "24h"
    """`24h` (OpenAI's only value) up to `7d`."""
    metadata: dict[str, str] | None = None
    """Up to 16 pairs; keys up to 64 characters, values up to 512."""
    output_expires_after: ExpiresAfter | None = None
    """How long the output and error Files are kept (default: the deployment's 30 days)."""


class UploadCreateParams(BaseModel):
    """The body of POST /v1/uploads."""

    model_config = ConfigDict(extra="forbid")

    bytes: int = Field(gt=0)
    """The whole file's size; the parts must add up to it."""
    filename: str = Field(min_length=1)
    mime_type: str = "application/jsonl"
    purpose: str
    expires_after: ExpiresAfter | None = None
    """How long the File the upload becomes is kept (the upload itself: an hour)."""


class UploadCompleteParams(BaseModel):
    """The body of POST /v1/uploads/{id}/complete."""

    model_config = ConfigDict(extra="forbid")

    part_ids: list[str]
    """The parts, in the order they are joined."""
    md5: str | None = None
    """The whole file's MD5 (hex), checked when given."""


Item = TypeVar("Item", Batch, FileObject)


class _CursorList(BaseModel, Generic[Item]):
    """A page of a listing, with the ids the next page starts after."""

    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def of(cls, items: list[Item], has_more: bool) -> Self:
        return cls(
            data=items,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
            has_more=has_more,
        )


class BatchList(_CursorList[Batch]):
    """A page of GET /v1/batches."""


class FileList(_CursorList[FileObject]):
    """A page of GET /v1/files."""


class FileDeleted(BaseModel):
    """The answer to DELETE /v1/files/{id}."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ResultPartObject(BaseModel):
    """One result part of a batch (extension: GET /v1/batches/{id}/results)."""

    object: Literal["batch.result_part"] = "batch.result_part"
    kind: Literal["output", "error"]
    """`output`: successful lines; `error`: failed or never-run lines."""
    bytes: int
    url: str
    """A short-lived presigned URL of the part's JSONL."""


class BatchResultParts(BaseModel):
    object: Literal["list"] = "list"
    data: list[ResultPartObject]
