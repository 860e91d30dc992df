"""A batch's statuses and the moves between them: the one table every status write obeys.

    validating --> in_progress --> finalizing --> completed
        |  |  \\           |             \\-> expired   (its window ran out while it ran)
        |  |   \\-> failed |
        |  \\-> expired   v
        \\----------> cancelling --> cancelled

`repository.transition` refuses any move this table does not list (a bug, not a user's
error), and tests hold the tracker's state machine (its Choice states' status lists) to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import get_args

from batch_core.models import BatchStatus

MOVES: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    "validating": frozenset({"in_progress", "failed", "cancelling", "expired"}),
    "in_progress": frozenset({"finalizing", "cancelling"}),
    # A batch expiring while it runs finalizes first (workers stop, unrun lines are written).
    "finalizing": frozenset({"completed", "expired"}),
    # Cancelling to cancelling: intake records what it had counted when the cancel came.
    "cancelling": frozenset({"cancelling", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
    "cancelled": frozenset(),
}
ALL_STATUSES: tuple[BatchStatus, ...] = get_args(BatchStatus)
# Statuses the tracker finalizes from: the ones with a move into a terminal status that only
# finalize makes (validating's end is intake's, not the tracker's).
FINALIZED_FROM: frozenset[BatchStatus] = frozenset({"cancelling", "finalizing"})


class IllegalTransitionError(ValueError):
    """A status move the lifecycle does not allow (a bug in the caller)."""


def check_move(to_status: BatchStatus, from_statuses: Iterable[BatchStatus]) -> None:
    """Raise unless every `from -> to` move is one the table lists."""
    for from_status in from_statuses:
        if to_status not in MOVES[from_status]:
            raise IllegalTransitionError(f"a batch cannot move from {from_status} to {to_status}")
