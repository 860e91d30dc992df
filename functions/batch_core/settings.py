"""Environment settings, read once per process from the environment (Lambda or worker)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batch_core.retention import DEFAULT_FILE_RETENTION_SECONDS, MIN_EXPIRES_AFTER_SECONDS

DEFAULT_MAX_BATCH_BYTES = 2 * 1024**3
"""OpenAI's limit on one batch input file (the deployment may set another)."""
MAX_REQUEST_BODY_BYTES = 4_500_000
"""What one API request carries: Lambda takes 6 MB of event, and bodies arrive base64-encoded."""


class TableSettings(BaseSettings):
    """What reaching the table takes: all `batchctl keys` needs (the deploy guide exports
    only TABLE_NAME and AWS_REGION for it)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    table_name: str = Field(description="The one DynamoDB table (batches, shards, files).")
    aws_region: str | None = Field(
        default=None,
        # AWS_REGION first: what Lambda, ECS and the AWS CLI's users set; unset, botocore's
        # own chain (AWS_DEFAULT_REGION, the profile's region) decides, never a fixed region.
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="The stack's region (AWS_REGION, else AWS_DEFAULT_REGION, else the profile's).",
    )


class Settings(TableSettings):
    """Where the data lives and the limits every batch obeys."""

    bucket_name: str = Field(description="The one bucket: inbox/, outbox/, files/, batches/.")
    shard_queue_url: str = Field(description="SQS queue the GPU workers pull shards from.")
    urgent_shard_queue_url: str = Field(
        default="", description="The shard queue of the urgent tier (empty: SHARD_QUEUE_URL)."
    )
    bulk_shard_queue_url: str = Field(
        default="", description="The shard queue of the bulk tier (empty: SHARD_QUEUE_URL)."
    )
    urgent_slack_seconds: int = Field(
        default=6 * 3600,
        ge=0,
        description="A batch with less slack than this (deadline less work) runs urgent.",
    )
    bulk_slack_seconds: int = Field(
        default=48 * 3600,
        ge=0,
        description="A batch with more slack than this runs in the bulk tier, after the others.",
    )
    fleet_tokens_per_second: int = Field(
        default=2000,
        ge=1,
        description="The workers' throughput (prompt plus output tokens per second), for slack.",
    )
    gpu_hourly_price: float = Field(
        default=0.45,
        ge=0,
        description=(
            "USD per GPU-hour for a batch's estimated_cost (a worker instance's hourly price"
            " divided by its GPUs): about g5.xlarge spot in us-east-1 by default, as the fleet"
            " is all spot by default (varies by zone and day); 1.006 for g5.xlarge on-demand."
        ),
    )
    urgent_tenant_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "The share of a model's fleet one tenant's urgent work may take (0: no limit, the"
            " slack alone decides). A batch its tenant's share cannot take yet waits in the"
            " bulk tier and is moved up as the share frees, so no tenant's 1-hour batches"
            " hold the fleet ahead of every other tenant's work."
        ),
    )
    shards_ahead: int = Field(
        default=0,
        ge=0,
        description=(
            "How many of a batch's shards are queued or running at once (0: all of them). Each"
            " shard that settles lets the next one in, behind what other batches queued"
            " meanwhile, so one batch's backlog cannot hold another's back; at the fleet's"
            " size a lone batch still keeps every worker busy."
        ),
    )
    intake_queue_url: str = Field(
        default="", description="SQS queue of the validate function (S3 events and jobs)."
    )
    webhook_queue_url: str = Field(
        default="", description="SQS queue of webhook deliveries (empty: no webhooks sent)."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Attempts per delivery before it is given up."
    )
    webhook_retry_base_seconds: int = Field(
        default=30, ge=0, description="The wait after a failed attempt; doubled each time."
    )
    webhook_allow_internal_targets: bool = Field(
        default=False,
        description="Local development only: let webhooks reach this machine or a private "
        "network (a receiver on localhost). Never set in a deployment.",
    )
    state_machine_arn: str = Field(default="", description="The batch tracker state machine.")
    event_bus_name: str = Field(
        default="default", description="The EventBridge bus that gets batch status events."
    )

    tracker_poll_seconds: int = Field(
        default=30, ge=0, description="The tracker's wait between its first 10 looks at a batch."
    )
    tracker_poll_later_seconds: int = Field(
        default=60, ge=0, description="The tracker's wait between looks 11 to 40."
    )
    tracker_poll_latest_seconds: int = Field(
        default=300,
        ge=0,
        description="The wait after that; >= 300 keeps a 7-day batch under the history limit.",
    )
    served_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models the workers serve (comma separated); empty accepts any model.",
    )
    allowed_media_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts the workers may fetch media URLs from (comma separated); empty: "
        "only inline data: URLs. Private, loopback and link-local addresses never.",
    )
    stack_name: str = Field(
        default="",
        description="The stack's name: a worker fleet's shard queues are <stack>-model-* "
        "(the model registry refuses others; empty: any *-model-* queue of the account).",
    )
    worker_cluster: str = Field(
        default="",
        max_length=255,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="The stack's own workers' ECS cluster, whose service the sweep and intake "
        "scale to the work (empty: the stack has no workers of its own).",
    )
    worker_gpus: int = Field(default=1, ge=1, description="GPUs per worker (WorkerGpus).")
    worker_gpus_per_engine: int = Field(
        default=0, ge=0, description="GPUs per engine on a worker (WorkerGpusPerEngine)."
    )
    fleet_cold_start_seconds: int = Field(
        default=900,
        ge=0,
        le=7 * 24 * 3600,
        description="What a new worker takes to run its first request (instance, image, "
        "weights, engine), counted when a fleet is sized to its deadlines (a registry "
        "entry's own cold_start_seconds first).",
    )
    default_endpoint: str = "/v1/chat/completions"
    default_completion_window: str = "24h"
    max_requests_per_batch: int = Field(default=1_000_000, ge=1)
    max_batch_bytes: int = Field(default=DEFAULT_MAX_BATCH_BYTES, ge=1)
    max_line_bytes: int = Field(default=8 * 1024**2, ge=1)
    max_requests_per_shard: int = Field(
        default=10_000,
        ge=1,
        description="A cap; shards are sized by estimated work first (max_shard_tokens).",
    )
    max_shard_bytes: int = Field(default=64 * 1024**2, ge=1)
    max_shard_tokens: int = Field(
        default=1_000_000,
        ge=1,
        description="Estimated prompt + output tokens per shard (a few GPU minutes).",
    )
    default_output_tokens: int = Field(
        default=256, ge=1, description="Output budget assumed for requests without max_tokens."
    )
    model_context_tokens: int = Field(
        default=32_768,
        ge=1,
        description="The context window of a model the registry gives none for (the stack's "
        "own): no request's work estimate exceeds it, whatever max_tokens x n it declares.",
    )
    prefix_slots: int = Field(
        default=4,
        ge=0,
        description="Open shards for requests with shared leading messages (0: no grouping).",
    )
    max_reported_errors: int = Field(default=1000, ge=1)
    results_part_size: int = Field(
        default=10_000, ge=1, description="Results per part file: the unit of crash-safe progress."
    )
    results_part_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A part is also written this long after the previous one: request_counts "
        "move at least this often while a shard runs.",
    )

    max_inline_content_bytes: int = Field(
        default=4 * 1024**2,
        ge=0,
        description="GET /v1/files/{id}/content returns bodies up to this size inline, "
        "larger ones by redirect to a presigned S3 URL (Lambda responses stop at 6 MB).",
    )
    max_request_body_bytes: int = Field(
        default=MAX_REQUEST_BODY_BYTES,
        ge=1,
        description="The largest body one request carries (Lambda's 6 MB, base64-encoded); "
        "larger files go through /v1/uploads in parts.",
    )
    stuck_after_seconds: int = Field(
        default=3600,
        ge=0,
        description="How long past its window a batch may stay not terminal before the expiry "
        "sweep ends it itself (whatever its tracker, shards or workers are doing).",
    )
    tenant_max_active_batches: int = Field(
        default=0,
        ge=0,
        description="Batches a tenant may have not yet ended; one more answers 429 (0: no limit).",
    )
    tenant_max_queued_requests: int = Field(
        default=0,
        ge=0,
        description="Requests a tenant's active batches may hold; while they hold this many, a "
        "new batch answers 429 (0: no limit).",
    )
    tenant_max_queued_tokens: int = Field(
        default=0,
        ge=0,
        description="Estimated tokens (prompt plus output, as intake plans them) a tenant's "
        "active batches may hold; a validated batch that would pass it fails "
        "`token_limit_exceeded` (0: no limit, as the other tenant limits: a quota only means "
        "something against the fleet's throughput, which each deployment knows, and off it "
        "costs no bookkeeping; `batchctl tenants set` gives one tenant its own).",
    )
    api_requests_per_second: int = Field(
        default=20,
        ge=0,
        description="Each tenant's share of the API: write requests per second, sustained "
        "(a read costs a quarter; 0: no limit).",
    )
    api_burst_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="How many seconds of that share a tenant may spend at once (its "
        "bucket): 200 writes or 800 reads at the defaults.",
    )
    inline_join_bytes: int = Field(
        default=64 * 1024**2,
        ge=0,
        description="Uploads up to this size are joined within the complete call (a wrong "
        "MD5 is a 400 at once); larger ones by an intake job, their File `uploaded` until done.",
    )
    file_retention_seconds: int = Field(
        default=DEFAULT_FILE_RETENTION_SECONDS,
        ge=MIN_EXPIRES_AFTER_SECONDS,
        description="How long a File is kept when its request set no `expires_after` "
        "(`output_expires_after` for a batch's results); then it answers 404 and is deleted.",
    )
    presigned_url_seconds: int = Field(default=900, ge=60)
    upload_expiry_seconds: int = Field(default=3600, ge=60)

    @property
    def poll_schedule(self) -> dict[str, int]:
        """The tracker execution's `poll` input (see the state machine's comment)."""
        return {
            "first": self.tracker_poll_seconds,
            "later": self.tracker_poll_later_seconds,
            "latest": self.tracker_poll_latest_seconds,
        }

    @field_validator("served_models", "allowed_media_domains", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cleared by tests that change the environment)."""
    return Settings()
