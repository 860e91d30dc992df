"""API keys: `Authorization: Bearer <key>` -> the caller's tenant.

Keys are stored only as SHA-256 hashes next to their tenant; the key itself is shown once,
when it is created. Every read and list the API does is scoped to the tenant found here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from batch_core.errors import AuthenticationError, InvalidRequestError, RateLimitError
from batch_core.records import ApiKeyRecord
from batch_core.repository import BatchRepository
from batch_core.tenant_limits import TenantLimitBook

KEY_PREFIX = "sk-ob-"
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


MIN_KEY_CHARS = 8


def check_key(key: str) -> None:
    """A key chosen by hand must be one a guess will not find: at least 8 characters."""
    if len(key) < MIN_KEY_CHARS:
        raise InvalidRequestError(
            f"An API key needs at least {MIN_KEY_CHARS} characters (this one has {len(key)}).",
            param="key",
        )


class ApiKeys:
    """Creates keys and resolves them to tenants."""

    def __init__(self, repository: BatchRepository, clock: Callable[[], float] = time.time) -> None:
        self.repository = repository
        self._clock = clock

    def create(self, tenant: str, name: str = "") -> str:
        """A new key for `tenant`; the only time the key itself is seen."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self.register(key, tenant, name)
        return key

    def register(self, key: str, tenant: str, name: str = "") -> None:
        """Store a chosen key (the local server's `--api-key`) for `tenant`."""
        if not _TENANT.match(tenant):
            raise InvalidRequestError(
                f"Tenant {tenant!r} must be 1-64 letters, digits, '_', '.' or '-'.",
                param="tenant",
            )
        check_key(key)
        self.repository.tenants.put_api_key(
            ApiKeyRecord(
                key_hash=hash_key(key), tenant=tenant, created_at=int(self._clock()), name=name
            )
        )

    def revoke(self, key: str) -> bool:
        """Forget a key; False if it was not known."""
        return self.repository.tenants.delete_api_key(hash_key(key))

    def tenant_of(self, authorization: str | None) -> str:
        """The tenant of a `Bearer <key>` header; AuthenticationError otherwise."""
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError("The Authorization header must be 'Bearer <key>'.")
        digest = hash_key(key)
        record = self.repository.tenants.get_api_key(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise AuthenticationError(f"Incorrect API key provided: {_redact(key)}.")
        return record.tenant


READ_SHARE = 4
"""A read (GET, HEAD) costs a quarter of a write: the SDKs' auto-paging and the console's
polling read many pages in a row."""


class RateLimiter:
    """Each tenant's share of the API: a token bucket per tenant, kept in the table so every
    API function instance draws on the same one. It refills at `per_second` writes a second
    (reads cost a quarter) and holds `burst_seconds` of that, so a client may page quickly
    for a while and then at the sustained rate. A tenant over its share gets 429 with how
    long to wait; no other tenant notices. A tenant with a rate of its own (`limits`, from
    `batchctl tenants set`) gets that instead: `per_second` and `burst_seconds` are the
    defaults."""

    def __init__(
        self,
        repository: BatchRepository,
        per_second: int,
        burst_seconds: int = 10,
        clock: Callable[[], float] = time.time,
        limits: TenantLimitBook | None = None,
    ) -> None:
        self.repository = repository
        self.per_second = per_second
        self.burst_seconds = burst_seconds
        self._clock = clock
        self.limits = limits

    def rate_of(self, tenant: str) -> tuple[int, int]:
        """(requests per second, burst seconds) of `tenant`: its own where set."""
        own = self.limits.own(tenant) if self.limits is not None else None
        if own is None:
            return self.per_second, self.burst_seconds
        per_second, burst = own.requests_per_second, own.burst_seconds
        return (
            self.per_second if per_second is None else per_second,
            self.burst_seconds if burst is None else burst,
        )

    def admit(self, tenant: str, method: str = "POST") -> None:
        """Take one request's cost; RateLimitError (with `retry_after_ms`) when the tenant's
        bucket does not hold it."""
        per_second, burst_seconds = self.rate_of(tenant)
        if per_second <= 0:
            return
        write_us = 1_000_000 // per_second
        cost = write_us // READ_SHARE if method.upper() in {"GET", "HEAD"} else write_us
        burst = max(burst_seconds * 1_000_000, write_us)  # holds one write at least
        wait_us = self.repository.tenants.take_tokens(
            tenant, cost_us=cost, burst_us=burst, now_us=round(self._clock() * 1_000_000)
        )
        if wait_us:
            raise RateLimitError(
                f"Rate limit reached: {per_second} requests per second for your "
                f"organization (reads count a quarter), bursts of {burst_seconds} "
                "seconds' worth. Retry after the time in the retry-after header.",
                retry_after_ms=-(-wait_us // 1000),
            )


def _redact(key: str) -> str:
    return key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)
