"""Tenants as records: a tenant's own limits (`TENANTS/LIMITS#<tenant>`), each field optional;
an absent one falls back to the deployment's setting (TenantRequestsPerSecond and the other
Tenant* parameters are the defaults). `batchctl tenants` writes them; the API's rate limiter
and the tenant's slots (`tenant_slots`) read them through a per-process cache, so a change
applies within LIMITS_CACHE_SECONDS everywhere (at once in the process that made it)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batch_core.batch_params import problem_of
from batch_core.errors import InvalidRequestError
from batch_core.settings import Settings

if TYPE_CHECKING:  # the repository's tenant table imports this module's record
    from batch_core.repository import BatchRepository

LIMITS_CACHE_SECONDS = 30.0
"""How long a process keeps a tenant's limits it read: the API reads them on every request,
so without a cache each request would cost a read more; a change waits at most this long."""

TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""What a tenant is called (as `batchctl keys create --tenant` allows)."""
_TENANT = re.compile(TENANT_PATTERN)

# Bounds a value must stay within: beyond them it is a typo, or a number that would overflow
# the bucket's microsecond arithmetic (one read costs 1/4 of 1e6/rate microseconds).
MAX_REQUESTS_PER_SECOND = 100_000
MAX_BURST_SECONDS = 3600
MAX_ACTIVE_BATCHES = 1_000_000
MAX_QUEUED_REQUESTS = 10**12
MAX_QUEUED_TOKENS = 10**15

Limit = Annotated[int, Field(ge=0, strict=True)]


class TenantLimits(BaseModel):
    """The `TENANTS/LIMITS#<tenant>` item: what is set for this tenant (None: the default).
    0 means no limit, as for the deployment's settings."""

    model_config = ConfigDict(extra="ignore")  # the item's keys beside its fields

    tenant: str = Field(pattern=TENANT_PATTERN)
    requests_per_second: Annotated[Limit, Field(le=MAX_REQUESTS_PER_SECOND)] | None = None
    burst_seconds: Annotated[int, Field(ge=1, le=MAX_BURST_SECONDS, strict=True)] | None = None
    max_active_batches: Annotated[Limit, Field(le=MAX_ACTIVE_BATCHES)] | None = None
    max_queued_requests: Annotated[Limit, Field(le=MAX_QUEUED_REQUESTS)] | None = None
    max_queued_tokens: Annotated[Limit, Field(le=MAX_QUEUED_TOKENS)] | None = None
    updated_at: int = 0


LIMIT_FIELDS: tuple[str, ...] = (
    "requests_per_second",
    "burst_seconds",
    "max_active_batches",
    "max_queued_requests",
    "max_queued_tokens",
)
"""The fields a tenant may have of its own (`batchctl tenants set` options, in order)."""


@dataclass(frozen=True)
class EffectiveLimits:
    """A tenant's limits in force: its own where set, else the deployment's (0: no limit)."""

    requests_per_second: int
    burst_seconds: int
    max_active_batches: int
    max_queued_requests: int
    max_queued_tokens: int

    @property
    def keeps_slots(self) -> bool:
        """Whether its batches are counted (a slot each): only when one limit is on."""
        return bool(self.max_active_batches or self.max_queued_requests or self.max_queued_tokens)


def defaults(settings: Settings) -> EffectiveLimits:
    return EffectiveLimits(
        requests_per_second=settings.api_requests_per_second,
        burst_seconds=settings.api_burst_seconds,
        max_active_batches=settings.tenant_max_active_batches,
        max_queued_requests=settings.tenant_max_queued_requests,
        max_queued_tokens=settings.tenant_max_queued_tokens,
    )


def effective(own: TenantLimits | None, fallback: EffectiveLimits) -> EffectiveLimits:
    """`own`'s fields over `fallback`'s."""
    if own is None:
        return fallback
    values = {name: getattr(fallback, name) for name in LIMIT_FIELDS}
    values.update(own.model_dump(include=set(LIMIT_FIELDS), exclude_none=True))
    return EffectiveLimits(**values)


def check_tenant(tenant: str) -> str:
    """A tenant name as `batchctl keys create` allows, else a clear refusal (never a key of
    the table that a hostile name could stretch past its 1,024 bytes)."""
    if not _TENANT.match(tenant):
        shown = ascii(tenant[:40]) + ("..." if len(tenant) > 40 else "")
        raise InvalidRequestError(
            f"Tenant {shown} must be 1-64 letters, digits, '_', '.' or '-'.", param="tenant"
        )
    return tenant


class TenantLimitBook:
    """Each tenant's limits in force, read once per LIMITS_CACHE_SECONDS per process (a
    tenant without a record is remembered as such too: no read per request for it)."""

    def __init__(
        self,
        repository: BatchRepository,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        seconds: float = LIMITS_CACHE_SECONDS,
    ) -> None:
        self.repository = repository
        self.defaults = defaults(settings)
        self._clock = clock
        self._seconds = seconds
        self._cached: dict[str, tuple[float, TenantLimits | None]] = {}

    def of(self, tenant: str) -> EffectiveLimits:
        return effective(self.own(tenant), self.defaults)

    def own(self, tenant: str) -> TenantLimits | None:
        """What is set for `tenant` itself (None: nothing, the defaults hold)."""
        now = self._clock()
        cached = self._cached.get(tenant)
        if cached is not None and now < cached[0]:
            return cached[1]
        own = self.repository.tenants.get_limits(tenant)
        if len(self._cached) > 10_000:  # a bound on memory, whatever the tenants
            self._cached.clear()
        self._cached[tenant] = (now + self._seconds, own)
        return own

    def forget(self, tenant: str | None = None) -> None:
        """Read again on next use (this process changed them, or a test did)."""
        if tenant is None:
            self._cached.clear()
        else:
            self._cached.pop(tenant, None)


class TenantLimitsAdmin:
    """`batchctl tenants`: set, clear, show and list tenants' own limits."""

    def __init__(self, repository: BatchRepository, clock: Callable[[], float] = time.time):
        self.repository = repository
        self._clock = clock

    def set(self, tenant: str, changes: dict[str, int | None]) -> TenantLimits:
        """Set the fields in `changes` (None: back to the default), keep the others; the
        record goes when no field is left. InvalidRequestError names a refused value."""
        check_tenant(tenant)
        unknown = set(changes) - set(LIMIT_FIELDS)
        if unknown:
            raise InvalidRequestError(f"Unknown limit {sorted(unknown)[0]!r}.", param="limit")
        current = self.repository.tenants.get_limits(tenant)
        values: dict[str, Any] = current.model_dump() if current else {"tenant": tenant}
        values.update(changes)
        values["updated_at"] = int(self._clock())
        try:
            updated = TenantLimits.model_validate(values)
        except ValidationError as error:
            message, param = problem_of(error.errors(include_url=False)[0])
            raise InvalidRequestError(message, param=param) from error
        if all(getattr(updated, name) is None for name in LIMIT_FIELDS):
            self.repository.tenants.delete_limits(tenant)
        else:
            self.repository.tenants.put_limits(updated)
        return updated

    def clear(self, tenant: str) -> bool:
        """Every field back to the default; False when the tenant had none of its own."""
        return self.repository.tenants.delete_limits(check_tenant(tenant))

    def show(self, tenant: str) -> TenantLimits:
        """The tenant's own limits (every field None when it has none)."""
        check_tenant(tenant)
        return self.repository.tenants.get_limits(tenant) or TenantLimits(tenant=tenant)

    def list(self) -> list[TenantLimits]:
        """Every tenant with limits of its own, by name."""
        return self.repository.tenants.list_limits()
