"""Results reused across a tenant's batches, opted in per batch.

A batch created with `metadata: {"reuse_results": "true"}` (or dropped with the option
`reuse-results=true`) answers each of its deterministic requests from an identical request
(`repeats`: same url, same canonical body) that succeeded in one of the tenant's opted-in
batches, while that result's output File is kept (its `output_expires_after`, else
FILE_RETENTION_SECONDS; deleting the File deletes the parts the cache points at, so nothing
is answered from it after); its successful deterministic results are kept for later batches
in turn. A batch that did not opt in neither reads nor adds to the cache.

Deterministic, by endpoint family (`endpoints`): embeddings, score and rerank (pooling
models: no sampling) always; chat completions, completions and responses only with
`temperature` 0 or an integer `seed` (anything sampled at random is run again). Only
successful (200) results are kept: an error may be transient.

Never across tenants: the cache is partitioned by a hash of the tenant and every item names
its tenant, which must match (`table_reuse`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from batch_core.endpoints import spec_for
from batch_core.errors import InvalidRequestError
from batch_core.protocol import BatchRequestOutput, BatchResponse, ShardRequest
from batch_core.repeats import request_digest, reused_line_id
from batch_core.results import LineAt
from batch_core.storage import ObjectStore
from batch_core.table_reuse import CachedResult, ReuseTable

logger = logging.getLogger(__name__)

REUSE_RESULTS = "reuse_results"
"""The metadata key that opts a batch in ("true" or "false")."""


def opted_in(metadata: Mapping[str, str] | None) -> bool:
    return bool(metadata) and metadata.get(REUSE_RESULTS) == "true"  # type: ignore[union-attr]


def check_reuse_option(
    metadata: Mapping[str, str] | None, param: str, *, code: str = "invalid_value"
) -> None:
    """A 400 for a `reuse_results` that is neither "true" nor "false"."""
    value = (metadata or {}).get(REUSE_RESULTS)
    if value is not None and value not in {"true", "false"}:
        raise InvalidRequestError(
            f"Invalid value for {param!r}: {value[:40]!r}; use 'true' or 'false'.",
            param=param,
            code=code,
        )


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def deterministic(url: str, body: Mapping[str, Any]) -> bool:
    """Whether the same request always gets the same answer (the rule in the docstring)."""
    spec = spec_for(url)
    if spec is None:
        return False
    if spec.pooling:
        return True
    temperature, seed = body.get("temperature"), body.get("seed")
    return (_is_number(temperature) and temperature == 0) or type(seed) is int


class ShardReuse:
    """One shard attempt's use of the tenant's cache: look its candidates up before the
    engine runs, keep what the engine answered after each part."""

    def __init__(
        self,
        table: ReuseTable,
        store: ObjectStore,
        *,
        tenant: str,
        now: int,
        keep_seconds: int,
    ) -> None:
        self._table = table
        self._store = store
        self._tenant = tenant
        self._now = now
        self._keep_seconds = keep_seconds
        self._digests: dict[str, bytes] = {}  # custom_id -> full digest, for candidates
        self._new: dict[str, bytes] = {}  # custom_id -> digest, of results to keep

    def lookup(self, requests: list[ShardRequest]) -> dict[str, BatchResponse]:
        """The cached response of each deterministic request that has one, by custom_id."""
        for request in requests:
            if deterministic(request.url, request.body):
                self._digests[request.custom_id] = request_digest(request.url, request.body)
        if not self._digests:
            return {}
        try:
            found = self._table.get_many(self._tenant, list(set(self._digests.values())), self._now)
        except Exception:  # the cache is an optimisation: without it every request runs
            logger.exception("could not look %d requests up for reuse", len(self._digests))
            return {}
        responses: dict[bytes, BatchResponse | None] = {}
        answers: dict[str, BatchResponse] = {}
        for custom_id, digest in self._digests.items():
            if digest not in found:
                continue
            if digest not in responses:
                responses[digest] = self._read(found[digest])
            response = responses[digest]
            if response is not None:
                answers[custom_id] = response
        return answers

    def _read(self, at: CachedResult) -> BatchResponse | None:
        """The response of the output line the cache points at; None once its part is gone
        (its File was deleted or expired) or it is not a success any more."""
        try:
            raw = self._store.read_range(at.key, at.offset, at.length)
            line = BatchRequestOutput.model_validate_json(raw)
        except Exception:  # gone, or not what was written: the request runs again
            logger.info("cached result at %s is not there any more", at.key)
            return None
        return line.response if line.succeeded else None

    def remember(self, line: BatchRequestOutput) -> None:
        """Keep a deterministic request's successful result (written with the next `flush`)."""
        digest = self._digests.get(line.custom_id or "")
        if digest is None or not line.succeeded or line.response is None:
            return
        self._new[line.custom_id or ""] = digest

    def flush(self, written: dict[str, LineAt]) -> None:
        """Point the cache at the lines `remember` kept, now stored (`written`: where each
        went); a failure costs only later reuse, never this shard."""
        kept, self._new = self._new, {}
        expires_at = self._now + self._keep_seconds
        new = {
            digest: CachedResult(at.key, at.offset, at.length, expires_at)
            for custom_id, digest in kept.items()
            if (at := written.get(custom_id)) is not None
        }
        if not new:
            return
        try:
            self._table.put_many(self._tenant, new)
        except Exception:  # the cache is an optimisation: log and carry on
            logger.exception("could not keep %d results for reuse", len(new))


def cached_line(batch_id: str, custom_id: str, cached: BatchResponse) -> BatchRequestOutput:
    """A request's own line answered from a cached result."""
    return BatchRequestOutput(
        id=reused_line_id(batch_id, custom_id), custom_id=custom_id, response=cached
    )
