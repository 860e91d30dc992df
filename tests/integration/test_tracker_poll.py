"""The tracker's adaptive poll, run by moto's ASL interpreter: short waits first, longer ones
later, and a history that stays under Step Functions' 25,000-event limit for the longest
completion window (the arithmetic is in docs/architecture.md)."""

from __future__ import annotations

import itertools
import time
from collections import Counter

from batch_core.batch_params import MAX_WINDOW_SECONDS
from batch_core.settings import Settings
from batchctl.local import LocalStack
from tests.conftest import store_batch

HISTORY_LIMIT = 25_000
FIRST_POLLS, LATER_POLLS = 10, 30  # the ASL's NumericLessThan 10 / 40 thresholds


def _history(stack: LocalStack, execution_arn: str) -> list[dict[str, object]]:
    sfn = stack.session.client("stepfunctions")
    events: list[dict[str, object]] = []
    token = None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {})
        )
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def _entered_names(events: list[dict[str, object]]) -> list[str | None]:
    """For each event, the state it entered (None for other events)."""
    names: list[str | None] = []
    for event in events:
        details = event.get("stateEnteredEventDetails")
        names.append(str(details["name"]) if isinstance(details, dict) else None)
    return names


def _entered(events: list[dict[str, object]]) -> Counter[str]:
    return Counter(name for name in _entered_names(events) if name)


def _loop_cost(events: list[dict[str, object]], wait_state: str) -> int:
    """History events between two consecutive entries into `wait_state`: one look's cost."""
    positions = [i for i, name in enumerate(_entered_names(events)) if name == wait_state]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert len(gaps) == 1, gaps
    return gaps.pop()


def test_the_poll_slows_down_in_tiers_and_stays_under_the_history_limit(
    bare_stack: LocalStack,
) -> None:
    stages = bare_stack.stages
    batch_id = "batch_pollcheck"
    store_batch(bare_stack, batch_id, "in_progress", shards_total=1, shards_pending=1)
    stages.channels.tracker.start(batch_id, poll={"first": 0, "later": 0, "latest": 0})
    arn = bare_stack.physical_id("BatchTracker").replace(":stateMachine:", ":execution:")
    execution = f"{arn}:{batch_id}"
    deadline = time.monotonic() + 120
    while _entered(_history(bare_stack, execution))["WaitLatest"] < 5:
        assert time.monotonic() < deadline, "the tracker never reached its slowest poll"
        time.sleep(0.5)
    bare_stack.session.client("stepfunctions").stop_execution(executionArn=execution)
    events = _history(bare_stack, execution)
    entered = _entered(events)
    # The first wait runs once at the start and once after each of the first 10 looks.
    assert entered["WaitFirst"] == FIRST_POLLS + 1
    assert entered["WaitLater"] == LATER_POLLS
    assert entered["CountFirst"] + entered["CountLater"] == FIRST_POLLS + LATER_POLLS

    # Events one look costs in each tier, measured on this very history: Wait, ReadBatch
    # (5 events), Settled? and, until the slowest tier, the Count pass state.
    counted_loop = _loop_cost(events, "WaitLater")
    latest_loop = _loop_cost(events, "WaitLatest")
    assert (counted_loop, latest_loop) == (11, 9)

    # The worst case: a batch that runs for the longest window with the deployed defaults,
    # then one more hour of looks while it is expired and finalized.
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    early_seconds = (
        FIRST_POLLS * defaults["tracker_poll_seconds"]
        + LATER_POLLS * defaults["tracker_poll_later_seconds"]
    )
    late_looks = (MAX_WINDOW_SECONDS + 3600 - early_seconds) // defaults[
        "tracker_poll_latest_seconds"
    ]
    worst = 2 + (FIRST_POLLS + LATER_POLLS) * counted_loop + late_looks * latest_loop + 20
    assert worst < HISTORY_LIMIT * 0.9, worst
