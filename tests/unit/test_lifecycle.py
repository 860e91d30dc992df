"""The lifecycle table is the one authority on status moves: the repository obeys it, and the
tracker's state machine agrees with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch_core.lifecycle import (
    ALL_STATUSES,
    FINALIZED_FROM,
    MOVES,
    IllegalTransitionError,
    check_move,
)
from batch_core.models import TERMINAL_STATUSES

ASL = Path(__file__).resolve().parents[2] / "infra" / "statemachine" / "batch_tracker.asl.json"


def choice_states(states: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, state in states.items():
        if state["Type"] == "Choice":
            found[name] = state
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                found |= choice_states(state[key]["States"])
        for branch in state.get("Branches", []):
            found |= choice_states(branch["States"])
    return found


def status_lists(choice: dict[str, Any]) -> list[tuple[frozenset[str], str]]:
    """(statuses compared, next state) for each rule of a Choice state that reads a status."""
    rules = []
    for rule in choice["Choices"]:
        tests = rule.get("Or", [rule])
        if all(str(t.get("Variable", "")).endswith(".status") for t in tests):
            rules.append((frozenset(t["StringEquals"] for t in tests), rule["Next"]))
    return rules


def test_the_table_covers_every_status_and_only_terminal_ones_are_dead_ends() -> None:
    assert set(MOVES) == set(ALL_STATUSES)
    assert {s for s, moves in MOVES.items() if not moves} == TERMINAL_STATUSES
    for moves in MOVES.values():
        assert moves <= set(ALL_STATUSES)


def test_the_tracker_state_machine_agrees_with_the_table() -> None:
    states = choice_states(json.loads(ASL.read_text())["States"])
    seen = [rule for state in states.values() for rule in status_lists(state)]
    assert seen, "the tracker reads no status"
    for statuses, _ in seen:
        assert statuses <= set(ALL_STATUSES), statuses
    done = [statuses for statuses, target in seen if target == "Done"]
    assert done and all(statuses == TERMINAL_STATUSES for statuses in done)
    finalize = [statuses for statuses, target in seen if target == "Finalize"]
    assert finalize == [FINALIZED_FROM]
    # What the tracker finalizes from can end, and only through finalize's moves.
    for status in FINALIZED_FROM:
        assert MOVES[status] & TERMINAL_STATUSES


@pytest.mark.parametrize(
    ("to_status", "from_statuses"),
    [("completed", ["in_progress"]), ("in_progress", ["cancelling"]), ("validating", ["failed"])],
)
def test_a_move_the_table_does_not_list_is_refused(to_status: Any, from_statuses: Any) -> None:
    with pytest.raises(IllegalTransitionError):
        check_move(to_status, from_statuses)


def test_the_moves_the_service_makes_are_listed() -> None:
    check_move("cancelling", ["validating", "in_progress"])
    check_move("finalizing", ["in_progress"])
    check_move("expired", ["validating"])
    check_move("expired", ["finalizing"])
    check_move("completed", ["finalizing"])
    check_move("cancelled", ["cancelling"])
    check_move("failed", ["validating"])
    check_move("in_progress", ["validating"])
