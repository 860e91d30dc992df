"""The cross-batch result cache's items (`reuse`): one per tenant and request digest, each
pointing at the output line that answered it (its part's key, byte offset and length). No
response is copied here: deleting or expiring the output File deletes its parts, and with
them everything the cache could answer from them.

`REUSE#<sha256 of the tenant, 32 hex>` / `REQ#<sha256 of the url and canonical body, 64
hex>`. The partition is a hash so no tenant name reaches a key; the item keeps the tenant
itself and is answered only to that tenant, so even two tenants whose hashes met would never
read each other's results. The sort key is the request's full digest (no prefix of it).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from batch_core.table_access import TableAccess
from batch_core.table_codec import from_item, to_item

_GET_BATCH = 100  # BatchGetItem's most keys
_WRITE_BATCH = 25  # BatchWriteItem's most items


def reuse_pk(tenant: str) -> str:
    return f"REUSE#{hashlib.sha256(tenant.encode()).hexdigest()[:32]}"


def reuse_sk(digest: bytes) -> str:
    return f"REQ#{digest.hex()}"


_ATTEMPTS = 8
"""Throttled this often in a row, the cache gives up (it is an optimisation, never a wait)."""


@dataclass(frozen=True)
class CachedResult:
    """Where a successful output line is, kept for the tenant's later identical requests."""

    key: str
    offset: int
    length: int
    expires_at: int


class ReuseTable:
    """Reads and writes in batches: a shard looks up all its candidates in a few calls."""

    def __init__(self, access: TableAccess) -> None:
        self._db = access.db
        self._table = access.name

    def get_many(self, tenant: str, digests: list[bytes], now: int) -> dict[bytes, CachedResult]:
        """The tenant's unexpired results for `digests` (full sha256 digests)."""
        found: dict[bytes, CachedResult] = {}
        wanted = {reuse_sk(d): d for d in digests}
        pk = reuse_pk(tenant)
        sks = list(wanted)
        for start in range(0, len(sks), _GET_BATCH):
            keys: Any = [to_item({"pk": pk, "sk": sk}) for sk in sks[start : start + _GET_BATCH]]
            for attempt in range(_ATTEMPTS):
                response = self._db.batch_get_item(RequestItems={self._table: {"Keys": keys}})
                for item in response.get("Responses", {}).get(self._table, []):
                    values = from_item(item)
                    digest = wanted.get(str(values.get("sk")))
                    # Another tenant's item is never an answer, whatever its partition.
                    if digest is None or values.get("tenant") != tenant:
                        continue
                    if int(values.get("expires_at", 0)) <= now:
                        continue
                    found[digest] = CachedResult(
                        key=str(values["key"]),
                        offset=int(values["offset"]),
                        length=int(values["length"]),
                        expires_at=int(values["expires_at"]),
                    )
                unprocessed = response.get("UnprocessedKeys", {}).get(self._table)
                if not unprocessed:
                    break
                keys = unprocessed["Keys"]
                _back_off(attempt)
            else:
                raise ReuseThrottledError(f"{len(keys)} keys unprocessed after {_ATTEMPTS} tries")
        return found

    def put_many(self, tenant: str, results: dict[bytes, CachedResult]) -> None:
        """Keep `results` (by full digest)."""
        pk = reuse_pk(tenant)
        requests: list[Any] = []
        for digest, result in results.items():
            item = {
                "pk": pk,
                "sk": reuse_sk(digest),
                "tenant": tenant,
                "key": result.key,
                "offset": result.offset,
                "length": result.length,
                "expires_at": result.expires_at,
                "ttl": result.expires_at,  # the table's TTL deletes it some time after
            }
            requests.append({"PutRequest": {"Item": to_item(item)}})
        for start in range(0, len(requests), _WRITE_BATCH):
            pending: Any = {self._table: requests[start : start + _WRITE_BATCH]}
            for attempt in range(_ATTEMPTS):
                response = self._db.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or None
                if not pending:
                    break
                _back_off(attempt)
            else:
                raise ReuseThrottledError(f"items unprocessed after {_ATTEMPTS} tries")


class ReuseThrottledError(Exception):
    """DynamoDB kept refusing: the caller carries on without the cache."""


def _back_off(attempt: int) -> None:
    """Unprocessed keys or items are DynamoDB throttling us: wait, with jitter."""
    time.sleep(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
