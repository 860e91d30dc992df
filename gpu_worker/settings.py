"""Worker and engine settings from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class EngineSettings(BaseSettings):
    """How the inference engine is started (vLLM's own names where they exist)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", protected_namespaces=())

    engine: Literal["vllm", "fake"] = Field(
        default="vllm", description="Which engine runs requests."
    )
    model: str | None = Field(
        default=None,
        description="A local directory, a hub id, or s3://bucket/prefix/ (a folder holding "
        "a Hugging Face model, copied to MODEL_CACHE_DIR before the engine starts); unset "
        "builds the tiny offline model.",
    )
    served_model_name: str | None = Field(
        default=None,
        description="The name requests use; defaults to MODEL, or for an s3:// MODEL to the "
        "prefix's last segment (s3://b/models/llama-3-8b/ serves 'llama-3-8b').",
    )
    model_cache_dir: Path = Field(
        default=Path("/models/s3"),
        description="Where an s3:// MODEL is copied. The ECS task mounts a host volume at "
        "/models, so the copy outlives the task and the next worker on the instance starts "
        "without a download (unless the objects changed).",
    )
    max_model_len: int | None = None
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        description="Sequences the scheduler runs at once; unset: vLLM's offline (LLM class) "
        "default for this platform.",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Tokens the scheduler takes per step; unset: vLLM's offline (LLM class) "
        "default for this platform.",
    )
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = Field(
        default=None, description="Defaults to 0.9 on a GPU and 0.1 on a CPU."
    )
    dtype: str = "auto"
    quantization: str | None = None
    extra_engine_args: str = Field(
        default="", description="More vLLM engine flags, e.g. '--enforce-eager'."
    )
    allowed_media_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts vLLM may fetch media URLs from (comma separated; the same "
        "ALLOWED_MEDIA_DOMAINS as intake); empty: none, only inline data: URLs.",
    )
    fake_seconds_per_request: float = Field(
        default=0.0, ge=0, description="ENGINE=fake only: time each request takes (tests)."
    )
    fake_hang_after_requests: int | None = Field(
        default=None,
        ge=0,
        description="ENGINE=fake only: answer this many requests, then hang for good, as a "
        "wedged GPU does (stall watchdog tests).",
    )
    fake_fail_on_gpu: str = Field(
        default="",
        max_length=16,
        description="ENGINE=fake only: the engine fails to start when this GPU is among "
        "CUDA_VISIBLE_DEVICES, as on a GPU that cannot load the model (engine group tests).",
    )

    @field_validator("allowed_media_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


class WorkerSettings(BaseSettings):
    """The worker loop."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    wait_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll time.")
    visibility_seconds: int = Field(
        default=300,
        ge=1,
        le=43200,
        description="How long a shard stays hidden from other workers without a heartbeat "
        "(the heartbeat extends it every third of this while the shard runs).",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        description="Most shards run at once on the one engine. A shard loop takes the next "
        "shard while the engine has room, before the current one drains, so there is no "
        "idle tail between shards, small ones included.",
    )
    log_level: str = "INFO"
    idle_exit_seconds: float | None = Field(
        default=None, description="Exit after this long with no message (None: never)."
    )
    gpus_per_engine: int = Field(
        default=0,
        ge=0,
        validation_alias="GPUS_PER_ENGINE",
        description="GPUs per engine: with more GPUs than this on the host, one worker "
        "process (engine, shard loops) per group of this many, each with tensor parallelism "
        "over its group (8 engines for a 7B model on an 8-GPU host); 0: one engine over all.",
    )
    engine_stall_seconds: float = Field(
        # Progress is a finished request (the engine answers whole requests), so this must
        # outlast the longest one: 32k tokens at a slow 20 tokens/s is under 30 minutes.
        default=1800,
        ge=0,
        validation_alias="ENGINE_STALL_SECONDS",
        description="Exit non-zero (ECS starts a fresh worker) when shards wait on the engine "
        "and no request has finished for this long; the heartbeats stop first, so the shards "
        "go to other workers. Above the longest single request's time; 0: off.",
    )
