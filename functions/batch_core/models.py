"""OpenAI's Batch API objects, field for field (the openai SDK's types are the oracle)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from batch_core.endpoints import ENDPOINTS

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})

SUPPORTED_ENDPOINTS: tuple[str, ...] = tuple(ENDPOINTS)
"""The endpoint paths served, in the registry's order (`batch_core.endpoints`)."""


def _served(path: str) -> str:
    """An endpoint the registry serves; pydantic's own wording for a refused literal."""
    if path in ENDPOINTS:
        return path
    *first, last = (repr(served) for served in ENDPOINTS)
    expected = f"{', '.join(first)} or {last}" if first else last
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


Endpoint = Annotated[
    str,
    AfterValidator(_served),
    WithJsonSchema({"enum": list(SUPPORTED_ENDPOINTS), "type": "string"}),
]
"""A path of the endpoint registry: a new family module is served everywhere a batch names
its endpoint, the OpenAPI document's enum included."""


class BatchError(BaseModel):
    """One validation error of the input file."""

    code: str | None = None
    """A machine-readable code, e.g. `invalid_json_line`."""
    line: int | None = None
    """1-based line number of the input file where the error was found."""
    message: str | None = None
    """What is wrong, for a person."""
    param: str | None = None
    """The offending field, e.g. `custom_id` or `body.messages`."""


class BatchErrors(BaseModel):
    """The list of validation errors of a failed batch."""

    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class BatchRequestCounts(BaseModel):
    """Request counts, live while the batch runs."""

    total: int = 0
    """Requests in the batch."""
    completed: int = 0
    """Requests that finished successfully."""
    failed: int = 0
    """Requests that ended with an error."""


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0
    """Output tokens spent on reasoning."""


class BatchUsage(BaseModel):
    """Token usage summed over every request of the batch."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class BatchTimestamps(BaseModel):
    """When the batch reached each status (unix seconds), as OpenAI names them."""

    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None


class BatchFields(BatchTimestamps):
    """What the Batch object and the stored batch (`records.BatchRecord`) share, field for
    field: declared once, copied by name."""

    id: str
    """`batch_...`"""
    endpoint: str
    """The endpoint every request of the batch goes to."""
    model: str | None = None
    """The model every request names."""
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    """The successful lines; null when nothing succeeded."""
    error_file_id: str | None = None
    """The failed lines; null when nothing failed."""
    metadata: dict[str, str] | None = None
    priority: int = 0
    """Extension: orders a tenant's own batches inside a scheduling tier (higher first); it
    never moves another tenant's work."""


class Batch(BatchFields):
    """The Batch object, as OpenAI returns it."""

    object: Literal["batch"] = "batch"
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    errors: BatchErrors | None = None
    """Validation errors (status `failed`)."""
    usage: BatchUsage | None = None
    eta_at: int | None = None
    """Extension: when a running batch is expected to finish, from its pace so far."""
    at_risk_at: int | None = None
    """Extension: when it was found unable to finish by `expires_at`, even with every worker
    the fleet may scale to (the `Batch At Risk` event went out then)."""
    reused_requests: int = 0
    """Extension: requests answered from an identical request's result (a repeat within the
    batch, or, opted in, a tenant's earlier batch) instead of running again."""
    gpu_seconds: float = 0.0
    """Extension: GPU time its requests took so far (engine seconds times the engine's GPUs,
    shared among the shards an engine runs at once)."""
    estimated_cost: float = 0.0
    """Extension: `gpu_seconds` at the deployment's price per GPU-hour when the batch was
    created (USD; `GpuHourlyPrice`), an estimate: idle and cold-start time are not in it."""


BATCH_EXTENSIONS = frozenset(
    {"eta_at", "at_risk_at", "priority", "reused_requests", "gpu_seconds", "estimated_cost"}
)
"""Batch fields OpenAI's object does not have (clients ignore them)."""


FilePurpose = Literal["batch", "batch_output"]
FileStatus = Literal["uploaded", "processed", "error"]


class FileObject(BaseModel):
    """The File object, as OpenAI returns it."""

    id: str
    """`file-...`"""
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: FileStatus = "processed"
    expires_at: int | None = None
    status_details: str | None = None


UploadStatus = Literal["pending", "completed", "cancelled", "expired"]


class Upload(BaseModel):
    """The Upload object, as OpenAI returns it (a large file sent in parts)."""

    id: str
    """`upload_...`"""
    object: Literal["upload"] = "upload"
    bytes: int
    """The size the whole file must have once its parts are joined."""
    created_at: int
    expires_at: int
    """An upload not completed by then cannot be completed any more."""
    filename: str
    purpose: str
    status: UploadStatus
    file: FileObject | None = None
    """The File created on completion."""


class UploadPart(BaseModel):
    """One part of an Upload."""

    id: str
    """`part_...`"""
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


class WebhookEndpoint(BaseModel):
    """A registered endpoint, as OpenAI returns it (never with its secret)."""

    id: str
    """`we_...`"""
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret_hint: str | None = None
    """The secret's last characters, to tell secrets apart."""
    updated_at: int | None = None
    status: Literal["enabled", "disabled"] = "enabled"
    """Extension: `disabled` once deliveries to it failed again and again (nothing is sent to
    it any more, until an update enables it again)."""


WEBHOOK_ENDPOINT_EXTENSIONS = frozenset({"status"})
"""Webhook endpoint fields OpenAI's object does not have (clients ignore them)."""
