"""GPU-seconds per shard: an engine's time, shared among the shards it runs at once.

A worker runs several shards on one engine at a time (`WORKER_CONCURRENCY`), so a shard's
wall time overstates what it used. Each moment of engine time is split equally among the
shards running then (processor sharing): the shards' shares add up to the engine's busy time
times its GPUs, so a batch's GPU-seconds are what its shards held, never counted twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class EngineClock:
    """One engine's GPU time, handed out to the shards running on it."""

    def __init__(self, gpus: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.gpus = gpus
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._share = 0.0  # GPU-seconds one shard accrued since the clock began
        self._at = clock()

    def _advance(self) -> float:
        now = self._clock()
        if self._active:
            self._share += (now - self._at) * self.gpus / self._active
        self._at = now
        return self._share

    def join(self) -> float:
        """A shard starts on the engine: its mark to measure from."""
        with self._lock:
            mark = self._advance()
            self._active += 1
            return mark

    def read(self) -> float:
        """The mark now: a running shard used (read() - its last mark) GPU-seconds since."""
        with self._lock:
            return self._advance()

    def leave(self) -> float:
        """A shard stops running on the engine: its last mark."""
        with self._lock:
            mark = self._advance()
            self._active -= 1
            return mark


class ShardMeter:
    """One shard's GPU-seconds on an engine, part by part."""

    def __init__(self, clock: EngineClock) -> None:
        self._clock = clock
        self._mark = clock.join()
        self._end: float | None = None

    def take(self) -> float:
        """GPU-seconds since the last take (or the start), rounded to the millisecond; after
        `close`, up to the close only (other shards' later time is not this shard's)."""
        now = self._clock.read() if self._end is None else self._end
        used, self._mark = now - self._mark, now
        return round(used, 3)

    def close(self) -> None:
        if self._end is None:
            self._end = self._clock.leave()
