"""Request parameters and list envelopes of the HTTP API, in OpenAI's shapes."""

from __future__ import annotations

from typing import Annotated, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from batch_core.batch_params import CompletionWindow, Metadata, Priority
from batch_core.files import MAX_FILENAME_CHARS
from batch_core.json_bounds import JsonInt
from batch_core.models import Batch, Endpoint, FileObject, WebhookEndpoint
from batch_core.protocol import BatchLineError, BatchResponse
from batch_core.retention import ExpiresAfter
from batch_core.settings import DEFAULT_MAX_BATCH_BYTES

MAX_ID_CHARS = 128
"""Ids longer than any this API issues are refused before they reach a table key."""
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Filename = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_FILENAME_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
"""A name that can go back in a header: no control characters."""


class BatchCreateParams(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: ObjectId
    """A file uploaded with purpose `batch`."""
    endpoint: Endpoint
    """`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, or
    vLLM's `/v1/score` and `/v1/rerank` (pooling models)."""
    completion_window: CompletionWindow = "24h"
    """`24h` (OpenAI's only value); `1h` to `168h` or `1d` to `7d`."""
    metadata: Metadata | None = None
    """Up to 16 pairs; keys up to 64 characters, values up to 512."""
    output_expires_after: ExpiresAfter | None = None
    """How long the output and error Files are kept (default: the deployment's 30 days)."""
    priority: Priority = 0
    """Extension: -1000 to 1000 (default 0). Among this tenant's own batches in the same
    scheduling tier, a higher one's shards are let in first; another tenant's are not moved."""


class UploadCreateParams(BaseModel):
    """The body of POST /v1/uploads."""

    model_config = ConfigDict(extra="forbid")

    bytes: JsonInt = Field(gt=0, le=DEFAULT_MAX_BATCH_BYTES)
    """The whole file's size; the parts must add up to it."""
    filename: Filename
    mime_type: Annotated[str, StringConstraints(max_length=255)] = "application/jsonl"
    purpose: Literal["batch"]
    expires_after: ExpiresAfter | None = None
    """How long the File the upload becomes is kept (the upload itself: an hour)."""


class UploadCompleteParams(BaseModel):
    """The body of POST /v1/uploads/{id}/complete."""

    model_config = ConfigDict(extra="forbid")

    part_ids: list[ObjectId] = Field(min_length=1, json_schema_extra={"uniqueItems": True})
    """The parts, in the order they are joined."""
    md5: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{32}$")] | None = None
    """The whole file's MD5 (hex), checked when given."""


class ResultLine(BaseModel):
    """One line of a batch's output or error file, as the file has it, with its input line
    (extension: GET /v1/batches/{id}/results)."""

    id: str
    """`batch_req_...`: a page's last id is the next page's `after`."""
    custom_id: str | None
    response: BatchResponse | None
    error: BatchLineError | None = None
    line: int
    """The 1-based line of the input file it answers (extension)."""


Item = TypeVar("Item", Batch, FileObject, WebhookEndpoint, ResultLine)


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


class WebhookEndpointList(_CursorList[WebhookEndpoint]):
    """A page of GET /v1/webhook_endpoints."""


class FileDeleted(BaseModel):
    """The answer to DELETE /v1/files/{id}."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ResultLineList(_CursorList[ResultLine]):
    """A page of GET /v1/batches/{id}/results: result and error lines in input order."""


class ResultPartObject(BaseModel):
    """One result part of a batch (extension: GET /v1/batches/{id}/result_parts)."""

    object: Literal["batch.result_part"] = "batch.result_part"
    kind: Literal["output", "error"]
    """`output`: successful lines; `error`: failed or never-run lines."""
    bytes: int
    url: str
    """A short-lived presigned URL of the part's JSONL."""


class BatchResultParts(BaseModel):
    object: Literal["list"] = "list"
    data: list[ResultPartObject]


class ErrorObject(BaseModel):
    """What went wrong, as OpenAI's API says it."""

    message: str
    type: str
    """`invalid_request_error`, `rate_limit_error` or `server_error`."""
    param: str | None
    """The parameter at fault, if one is."""
    code: str | None
    """A machine-readable reason, such as `not_found` or `invalid_json`."""


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorObject
