"""What the table stores: the Batch object plus the counters and bookkeeping around it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from batch_core.batch_params import InvalidLines
from batch_core.models import (
    Batch,
    BatchError,
    BatchErrors,
    BatchFields,
    BatchRequestCounts,
    BatchUsage,
    FileObject,
    InputTokensDetails,
    OutputTokensDetails,
    Upload,
    UploadPart,
    WebhookEndpoint,
)
from batch_core.retention import ExpiresAfter
from batch_core.scheduling import ShardTier

DEFAULT_TENANT = "default"
"""The tenant of dropped files, and of the local server's key."""


class BatchRecord(BatchFields):
    """The `BATCH#<id>/META` item: the Batch object's own fields plus the counters and
    bookkeeping around them."""

    errors: list[BatchError] | None = None
    request_total: int = 0
    request_completed: int = 0
    request_failed: int = 0
    request_rejected: int = 0
    """Of the failed: lines validation skipped (invalid_lines=skip); a retry leaves them out."""
    request_reused: int = 0
    """Of the completed and failed: lines answered from an identical request's result."""
    output_expires_after_seconds: int | None = None
    """How long its output and error Files are kept (`output_expires_after`; None: the
    deployment's default)."""
    idempotency_fingerprint: str | None = None
    """For a batch created with an Idempotency-Key: a digest of its parameters, so the same
    key with other parameters is refused."""
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    gpu_seconds: float = 0.0
    """Engine time times GPUs its shards' committed parts took (`gpu_time`)."""
    gpu_hourly_price: float = 0.0
    """USD per GPU-hour when it was created (`GPU_HOURLY_PRICE`): its cost estimate keeps the
    price it ran at."""
    shards_total: int = 0
    shards_pending: int = 0
    """Shards not yet settled; the tracker finalizes when it reaches 0."""
    shards_queued: bool = False
    """Every shard message was sent (a redelivered intake event must not send them again)."""
    shards_released: int | None = None
    """How many of its shards, in index order, have been let into a queue (`SHARDS_AHEAD`);
    None: all of them."""
    input_key: str
    """Where the input lines are in the bucket."""
    outbox_name: str | None = None
    """Set for dropped files: results are mirrored under outbox/<name>/."""
    active: str | None = "1"
    """Set until the batch is terminal: the key of the sparse index of batches by expiry."""
    ending: Literal["expired"] | None = None
    """Set when the batch is finalizing because its completion window ran out."""
    invalid_lines: InvalidLines = "fail"
    """What validation does with a bad line: fail the batch, or skip it to the error file."""
    tenant: str = DEFAULT_TENANT
    """Whose batch it is: API calls see only their tenant's batches (dropped files: default)."""
    estimated_tokens: int = 0
    """The planner's estimate of its work (prompt plus output tokens), for its slack."""
    at_risk_at: int | None = None
    """When it was found unable to make its deadline (see `Ending.flag_at_risk`)."""
    tier: ShardTier = "normal"
    """The priority tier its shards wait in (`scheduling`): by its slack, raised as its
    deadline nears."""

    @property
    def shards_let_in(self) -> int:
        """How many of its shards have been sent to a queue (all, when none is held back)."""
        return self.shards_total if self.shards_released is None else self.shards_released

    def eta_at(self, now: int) -> int | None:
        """When a running batch should finish at the pace it has kept since it started."""
        to_run = self.request_total - self.request_rejected
        ran = self.request_completed + self.request_failed - self.request_rejected
        if self.status != "in_progress" or not self.in_progress_at or ran <= 0:
            return None
        elapsed = now - self.in_progress_at
        if elapsed <= 0:
            return None
        return now + round((to_run - ran) * elapsed / ran)

    def to_batch(self) -> Batch:
        usage = None
        if self.request_completed or self.request_failed or self.status in {"completed"}:
            usage = BatchUsage(
                input_tokens=self.input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=self.cached_tokens),
                output_tokens=self.output_tokens,
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                total_tokens=self.input_tokens + self.output_tokens,
            )
        return Batch(
            **self.model_dump(include=set(BatchFields.model_fields)),
            eta_at=self.eta_at(int(time.time())),
            at_risk_at=self.at_risk_at,
            reused_requests=self.request_reused,
            gpu_seconds=round(self.gpu_seconds, 3),
            estimated_cost=round(self.gpu_seconds / 3600 * self.gpu_hourly_price, 6),
            request_counts=BatchRequestCounts(
                total=self.request_total,
                completed=self.request_completed,
                failed=self.request_failed,
            ),
            errors=BatchErrors(data=self.errors) if self.errors else None,
            usage=usage,
        )


ShardStatus = Literal["queued", "running", "done"]


@dataclass
class PartCounts:
    """What one part of a shard's results adds to its shard and its batch."""

    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reused: int = 0
    """Of the completed and failed: lines answered from an identical request's result."""
    gpu_seconds: float = 0.0
    """The engine time the part took times its GPUs (`gpu_time`); 0 for a part an earlier
    attempt wrote but did not count (that attempt's time is not known)."""

    def add(self, succeeded: bool, usage: tuple[int, int, int], *, reused: bool = False) -> None:
        """One result line: its success, and its usage (input, cached, output tokens). A
        reused line ran no engine request: it adds no tokens (usage counts them once)."""
        self.reused += reused
        if not succeeded:
            self.failed += 1
            return
        self.completed += 1
        if reused:
            return
        self.input_tokens += usage[0]
        self.cached_tokens += usage[1]
        self.output_tokens += usage[2]


class ShardRecord(BaseModel):
    """The `BATCH#<id>/SHARD#<n>` item."""

    batch_id: str
    index: int
    request_count: int
    """Its lines: the requests in its shard file and their `repeats`."""
    repeats: int = 0
    """Lines answered by a primary in this shard (`repeats.RepeatFinder`), stored beside it."""
    reuse_results: bool = False
    """Its batch opted in to reuse results across the tenant's batches (`reuse`)."""
    slot: int = 0
    """The planner's prefix slot: requests sharing leading messages share a slot (0: none)."""
    estimated_tokens: int = 0
    """Estimated prompt plus output tokens: the work the planner sized the shard by."""
    status: ShardStatus = "queued"
    attempts: int = 0
    parts_committed: int = 0
    """Result parts whose counts are already in the batch counters."""
    lease_owner: str | None = None
    """The attempt running it; others leave it alone until `lease_until` (epoch seconds)."""
    lease_until: float = 0
    completed: int = 0
    failed: int = 0


class FileRecord(BaseModel):
    """The `FILE#<id>/META` item: the File object and where its bytes are."""

    file: FileObject
    s3_key: str
    batch_id: str | None = Field(default=None, description="The batch that produced it, if any.")
    tenant: str = DEFAULT_TENANT

    def expired(self, now: int) -> bool:
        """Past its `expires_at`: answered as unknown, and deleted by the next sweep."""
        return self.file.expires_at is not None and self.file.expires_at <= now


class UploadRecord(BaseModel):
    """The `UPLOAD#<id>/META` item."""

    upload: Upload
    tenant: str
    mime_type: str
    part_ids: list[str] = Field(default_factory=list)
    """Once completed: the parts in the order the client gave, for the join job."""
    md5: str | None = None
    """Once completed: the MD5 the client expects of the joined file, if it gave one."""
    expires_after: ExpiresAfter | None = None
    """The expiration policy of the File the upload becomes (None: the default)."""


class UploadPartRecord(BaseModel):
    """The `UPLOAD#<id>/PART#<part id>` item: where a part's bytes are."""

    part: UploadPart
    bytes: int
    s3_key: str


class ApiKeyRecord(BaseModel):
    """The `APIKEY#<sha256 of the key>/META` item: the key itself is never stored."""

    key_hash: str
    tenant: str
    created_at: int
    name: str = ""


class WebhookRecord(BaseModel):
    """The `WEBHOOK#<id>/META` item: the endpoint, its owner, its secret, and how many
    attempts in a row failed (a 2xx resets it; enough of them disable the endpoint)."""

    endpoint: WebhookEndpoint
    tenant: str
    secret: str
    consecutive_failures: int = 0
    previous_secret: str | None = None
    """The secret a rotation replaced, when it was asked to keep it a day
    (`keep_old_secret_active_for_24_hours`): deliveries are signed by it too until
    `previous_secret_until`."""
    previous_secret_until: int | None = None
    revision: int = 0
    """One more on every update and rotation: each writes the record only if it is still at
    the revision read (`replace_webhook`), so two at once cannot undo each other."""


ModelStatus = Literal["active", "retiring"]


class ServedModel(BaseModel):
    """The `MODELS/MODEL#<name>` item: a model the deployment serves and its shard queues."""

    name: str
    """The name requests use (`body.model`)."""
    queue_url: str
    """Its normal tier's shard queue, which its workers pull from."""
    urgent_queue_url: str = ""
    bulk_queue_url: str = ""
    status: ModelStatus = "active"
    """`retiring`: new batches for it are refused; running ones finish."""
    retired_at: int | None = None
    """When it began retiring."""
    fleet: str = ""
    """The workers that serve it (the worker-fleet stack's name), for operators."""
    context_length: int = 0
    """Its context window in tokens (0: not given), for operators."""
    tokens_per_second: int = 0
    """What its whole fleet gets through at its largest (prompt plus output tokens per
    second), for its batches' slack (0: FLEET_TOKENS_PER_SECOND)."""
    engines_per_worker: int = 1
    """Engines (each running one shard at a time) in one of its workers (`GPUS_PER_ENGINE`)."""
    cold_start_seconds: int = 0
    """What a new worker of its fleet takes to run its first request (0: the stack's
    FLEET_COLD_START_SECONDS)."""
    scaling_target: str = ""
    """Its workers' ECS service as Application Auto Scaling names it
    (`service/<cluster>/<service>`), which the sweep and intake size to its work ("": not
    sized here)."""
    created_at: int = 0
