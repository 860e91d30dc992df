"""The unit tests' own fixture: one `Stages` over a bare moto world (tests/stage_world.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stage_world import StageWorld, stage_world


@pytest.fixture
def world() -> Iterator[StageWorld]:
    """Every stage over a fresh moto table, bucket and queues; a recording tracker and event
    bus; a clock standing still until the test moves it."""
    with stage_world() as built:
        yield built
