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


class RateLimiter:
    """Each tenant's share of the API: at most `per_second` requests in any one second,
    counted in the table so every API function instance sees the same count. A tenant
    over its share gets 429s; no other tenant notices."""

    def __init__(
        self,
        repository: BatchRepository,
        per_second: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.per_second = per_second
        self._clock = clock

    def admit(self, tenant: str) -> None:
        """Count one request; RateLimitError when the tenant is over its share."""
        if self.per_second <= 0:
            return
        second = int(self._clock())
        if not self.repository.tenants.take_request_slot(
            tenant, second, self.per_second, second + 120
        ):
            raise RateLimitError(
                f"Rate limit reached: {self.per_second} requests per second for your "
                "organization. Retry after a short wait."
            )


def _redact(key: str) -> str:
    return key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)
