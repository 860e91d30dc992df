"""Shard planning: cut the stream of valid requests into shards as it flows by.

Shards are the unit of retry, progress and parallelism. A shard closes when it reaches the
request bound or the byte bound, whichever comes first, so memory stays bounded by one shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from batch_core.protocol import ShardRequest


@dataclass(frozen=True)
class PlannedShard:
    """A shard ready to be stored."""

    index: int
    body: bytes
    request_count: int


class ShardPlanner:
    """Packs requests into shards and hands each finished shard to `emit`."""

    def __init__(
        self, emit: Callable[[PlannedShard], None], *, max_requests: int, max_bytes: int
    ) -> None:
        self._emit = emit
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._bytes = 0
        self.shard_count = 0

    def add(self, request: ShardRequest) -> None:
        line = request.model_dump_json().encode() + b"\n"
        if self._lines and self._bytes + len(line) > self._max_bytes:
            self._flush()
        self._lines.append(line)
        self._bytes += len(line)
        if len(self._lines) >= self._max_requests:
            self._flush()

    def add_all(self, requests: Iterable[ShardRequest]) -> None:
        for request in requests:
            self.add(request)

    def close(self) -> int:
        """Emit the last partial shard; returns how many shards were planned."""
        self._flush()
        return self.shard_count

    def _flush(self) -> None:
        if not self._lines:
            return
        shard = PlannedShard(
            index=self.shard_count, body=b"".join(self._lines), request_count=len(self._lines)
        )
        self._lines, self._bytes = [], 0
        self.shard_count += 1
        self._emit(shard)
