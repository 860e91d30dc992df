"""The stall watchdog's clock: only time spent waiting on the engine, with no result, counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from batch_core.protocol import EngineRequest
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.stall_watchdog import EngineProgress, StallWatchdog
from tests.conftest import MODEL, chat_request


def requests(count: int) -> Iterator[EngineRequest]:
    for i in range(count):
        line = chat_request(f"r{i}")
        yield EngineRequest(custom_id=line["custom_id"], url=line["url"], body=line["body"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_or_answering_engine_is_not_stalled() -> None:
    clock = Clock()
    progress = EngineProgress(FakeEngine(MODEL), clock)
    clock.now = 1000.0  # idle for long: nothing waits on it
    assert progress.stalled_for() == 0.0
    results = progress.run(requests(3))
    next(results)
    clock.now = 1005.0  # the shard loop writes a part: not waiting on the engine
    assert progress.stalled_for() == 0.0
    assert len(list(results)) == 2
    assert progress.stalled_for() == 0.0


def test_a_hung_engine_is_stalled_from_its_last_answer_and_the_watchdog_fires_once() -> None:
    clock = Clock()
    progress = EngineProgress(FakeEngine(MODEL, hang_after_requests=1), clock)
    fired: list[float] = []
    watchdog = StallWatchdog(progress, 10, fired.append)
    waiting = threading.Event()

    def shard() -> None:
        results = progress.run(requests(3))
        next(results)
        clock.now = 100.0  # the last answer came at t=100
        waiting.set()
        next(results)  # hangs

    threading.Thread(target=shard, daemon=True).start()
    assert waiting.wait(5)
    threading.Event().wait(0.05)  # let the loop enter the engine again
    clock.now = 109.0
    assert progress.stalled_for() == 9.0
    assert not watchdog.check() and fired == []
    clock.now = 110.0
    assert watchdog.check() and fired == [10.0]
