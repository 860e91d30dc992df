"""The stall watchdog: a worker whose engine has stopped answering gives its shards up.

The heartbeat renews a shard's lease on a timer, whatever the engine does, so a hung engine
(a wedged GPU, a deadlocked scheduler) would hold its shards until the batch expires. The
worker instead watches the engine's progress: while some shard waits on the engine and no
request has finished for `ENGINE_STALL_SECONDS`, the engine is stalled. The worker then stops
every heartbeat and exits non-zero, so ECS replaces the task; the shards come back to other
workers the way a crashed worker's do (see `Worker`).

Progress is measured here, around `Engine.run`, not inside an engine: every engine (vLLM, the
fake) gets it, and a result handed back is exactly what a shard needs to move on. vLLM's own
`EngineActivity` counts requests in flight for the bench, on the engine's loop, which a hung
loop would stop updating too, but the fake has none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from batch_core.protocol import Engine, EngineRequest, EngineResult


class EngineStalledError(RuntimeError):
    """The engine made no progress for the stall time while work waited on it."""


class EngineProgress:
    """Wraps an engine; records when a result last came back while a shard waited on it.

    Only time spent waiting inside the engine's iterator counts: a shard loop busy writing a
    part to S3 is not waiting on the engine, and an idle engine (no shard) is not stalled."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._since = clock()

    @property
    def served_model(self) -> str:
        return self._engine.served_model

    def has_room(self) -> bool:
        return self._engine.has_room()

    def close(self) -> None:
        self._engine.close()

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        results = self._engine.run(requests)
        try:
            while True:
                self._wait_starts()
                try:
                    result = next(results)
                except StopIteration:
                    return
                finally:
                    self._wait_ends()
                yield result
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # aborts the rest, as closing the engine's own iterator does

    def _wait_starts(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = self._clock()  # the engine was not owed anything until now
            self._waiting += 1

    def _wait_ends(self) -> None:
        with self._lock:
            self._waiting -= 1
            self._since = self._clock()  # a result (or the end of a run) is progress

    def stalled_for(self) -> float:
        """Seconds since the last progress while a shard waits on the engine; 0 if none does."""
        with self._lock:
            return self._clock() - self._since if self._waiting else 0.0


class StallWatchdog:
    """Checks `progress` a few times per stall period; calls `on_stall` once, then stops."""

    def __init__(
        self, progress: EngineProgress, stall_seconds: float, on_stall: Callable[[float], None]
    ) -> None:
        self._progress = progress
        self._stall_seconds = stall_seconds
        self._on_stall = on_stall
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def __enter__(self) -> StallWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def check(self) -> bool:
        """True (and `on_stall` called) if the engine is stalled now."""
        stalled = self._progress.stalled_for()
        if stalled < self._stall_seconds:
            return False
        self._on_stall(stalled)
        return True

    def _watch(self) -> None:
        interval = min(max(self._stall_seconds / 10, 0.05), 10.0)
        while not self._done.wait(interval):
            if self.check():
                return
