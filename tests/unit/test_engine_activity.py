"""The engine's busy and fed shares, which the worker bench reports, from in-flight counts."""

from __future__ import annotations

import pytest

from gpu_worker.engines import vllm_engine
from gpu_worker.engines.vllm_engine import EngineActivity


def test_busy_and_fed_shares_follow_the_in_flight_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 3.0, 4.0, 6.0, 8.0, 9.0, 10.0])
    monkeypatch.setattr(vllm_engine.time, "monotonic", lambda: next(clock))
    activity = EngineActivity(full_at=2)
    assert activity.shares() == (0.0, 0.0)
    activity.started(2)  # t=0: two in flight, the scheduler is full
    activity.finished()  # t=1: one left, no longer full
    activity.finished()  # t=3: idle
    activity.started(3)  # t=4: full again
    activity.finished()  # t=6: still full (2)
    activity.finished()  # t=8: one left
    activity.finished()  # t=9: idle
    assert activity.in_flight == 0
    # Span 0..9: busy 0-3 and 4-9 (8 s), fed 0-1 and 4-8 (5 s).
    assert activity.shares() == (pytest.approx(8 / 9), pytest.approx(5 / 9))
