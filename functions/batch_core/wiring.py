"""Builds the stages from the settings, creating AWS clients on first use."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.loaders import Loader, create_loader

from batch_core.auth import ApiKeys, RateLimiter
from batch_core.deps import Deps
from batch_core.fleet_capacity import FleetCapacity
from batch_core.messaging import IntakeJobs, ShardQueue, StatusEvents, Tracker, WebhookQueue
from batch_core.repository import BatchRepository
from batch_core.settings import Settings, TableSettings, get_settings
from batch_core.stages import Channels, Stages
from batch_core.storage import ObjectStore
from batch_core.tenant_limits import TenantLimitsAdmin

if TYPE_CHECKING:
    from boto3 import Session


# Every client retries throttling and transient errors with exponential backoff and jitter
# (botocore's standard mode); every write a retry could repeat is conditional (repository).
RETRY_MODE: Final = "standard"
RETRY_ATTEMPTS: Final = 8
RETRIES = Config(retries={"mode": RETRY_MODE, "max_attempts": RETRY_ATTEMPTS})


# What the handlers may know of AWS's SDK: that a call failed, and whether AWS pushed back.
AwsError = ClientError
_THROTTLED: Final = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


def is_throttled(error: ClientError) -> bool:
    """Whether AWS refused the call for its rate (the client should retry after a wait)."""
    return error.response.get("Error", {}).get("Code") in _THROTTLED


ClientHook = Callable[[str, Any], None]
_client_hooks: list[ClientHook] = []


def add_client_hook(hook: ClientHook) -> None:
    """Have `hook(service_name, client)` see every AWS client built from here on (the local
    stack adapts moto's clients this way; a deployment adds none)."""
    _client_hooks.append(hook)


def remove_client_hook(hook: ClientHook) -> None:
    if hook in _client_hooks:
        _client_hooks.remove(hook)


@lru_cache(maxsize=1)
def _data_loader() -> Loader:
    return create_loader()


def new_session(region: str | None = None) -> Session:
    """A boto3 session that shares one botocore data loader with every other session this
    process makes: each session would otherwise parse every service's JSON model again
    (about 0.1 s per kind of client), which a process building sessions repeatedly (the local
    stack, once per test) paid every time. A Lambda or a worker makes one either way."""
    core = botocore.session.get_session()
    loader = _data_loader()
    core.register_component("data_loader", loader)
    session = boto3.session.Session(botocore_session=core, region_name=region)
    loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))  # boto3 adds its own
    return session


def _client(
    session: Session, service_name: str, region: str | None, config: Config = RETRIES
) -> Any:
    client = session.client(service_name, region_name=region, config=config)  # type: ignore[call-overload]
    for hook in _client_hooks:
        hook(service_name, client)
    return client


def build_stages(
    settings: Settings, session: Session | None = None, *, clock: Callable[[], float] = time.time
) -> Stages:
    """Every stage over the resources the settings name (`clock`: their time, for a
    simulation)."""
    session = session or new_session()
    region = settings.aws_region
    sqs = _client(session, "sqs", region)
    deps = Deps(
        settings=settings,
        table=BatchRepository(_client(session, "dynamodb", region), settings.table_name),
        # SigV4: presigned URLs of SSE-KMS objects (the bucket's default) need it.
        store=ObjectStore(
            _client(session, "s3", region, RETRIES.merge(Config(signature_version="s3v4"))),
            settings.bucket_name,
        ),
        clock=clock,
    )
    channels = Channels(
        shard_queue=ShardQueue(
            sqs,
            settings.shard_queue_url,
            urgent_url=settings.urgent_shard_queue_url,
            bulk_url=settings.bulk_shard_queue_url,
        ),
        tracker=Tracker(_client(session, "stepfunctions", region), settings.state_machine_arn),
        jobs=IntakeJobs(sqs, settings.intake_queue_url),
        events=StatusEvents(_client(session, "events", region), settings.event_bus_name),
        webhook_queue=(
            WebhookQueue(sqs, settings.webhook_queue_url) if settings.webhook_queue_url else None
        ),
        # Built on first use: only intake and the sweep size a fleet.
        fleets=FleetCapacity(
            lambda: _client(session, "application-autoscaling", region),
            lambda: _client(session, "ecs", region),
        ),
    )
    return Stages(deps, channels)


def s3_client(max_connections: int = 64) -> Any:
    """An S3 client for reading any bucket (the worker's model weights). More pooled
    connections than botocore's 10: the copy runs several managed transfers at once."""
    config = RETRIES.merge(Config(max_pool_connections=max_connections))
    return _client(new_session(), "s3", get_settings().aws_region, config)


@lru_cache(maxsize=1)
def default_stages() -> Stages:
    """The process-wide stages (a Lambda container or a worker builds them once); a handler
    takes the one stage it calls from here."""
    return build_stages(get_settings())


@lru_cache(maxsize=1)
def default_api_keys() -> ApiKeys:
    """API keys over the table alone: creating the first key needs no bucket or queue."""
    settings = TableSettings()
    dynamodb = _client(new_session(), "dynamodb", settings.aws_region)
    return ApiKeys(BatchRepository(dynamodb, settings.table_name))


@lru_cache(maxsize=1)
def default_rate_limiter() -> RateLimiter:
    stages = default_stages()
    settings = stages.settings
    return RateLimiter(
        stages.table,
        settings.api_requests_per_second,
        settings.api_burst_seconds,
        limits=stages.limits,
    )


@lru_cache(maxsize=1)
def default_tenant_limits() -> TenantLimitsAdmin:
    """Tenants' own limits over the table alone (`batchctl tenants`, as `batchctl keys`)."""
    settings = TableSettings()
    dynamodb = _client(new_session(), "dynamodb", settings.aws_region)
    return TenantLimitsAdmin(BatchRepository(dynamodb, settings.table_name))


def reset() -> None:
    """Forget the cached settings and services (after the environment changed)."""
    get_settings.cache_clear()
    default_stages.cache_clear()
    default_api_keys.cache_clear()
    default_rate_limiter.cache_clear()
    default_tenant_limits.cache_clear()
