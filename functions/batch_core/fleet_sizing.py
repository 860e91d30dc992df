"""How many workers a model's fleet should have now, sized to the work (issue 27).

Step scaling adds workers while shards wait, one step per cooldown, whatever they are: during
one cold start a single shard keeps waiting and grows the fleet step after step to its
maximum, and a huge batch due soon still gets one step per cooldown. Here the count is
computed from the work itself:

- never more workers than shards left to run (waiting plus running): a worker runs one shard
  at a time, so one shard never starts more than one worker;
- enough to finish, by each deadline, the work due by then (earliest first, cumulative),
  counting the workers the fleet has from now and a new one only after its cold start;
- at least one while any shard is left, at most `max_workers`.

Sizing only adds: scaling in (to zero once nothing waited or ran for a while) is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

SAFETY = 0.1
"""The share of the time to each deadline kept in hand (estimates err; parts take time)."""


@dataclass(frozen=True)
class DueWork:
    """A running batch's work not yet done."""

    deadline_at: float
    tokens: float
    """Estimated tokens still to run."""
    shards: int
    """Shards not yet settled."""


def desired_workers(
    work: Iterable[DueWork],
    *,
    now: float,
    tokens_per_second: float,
    cold_start_seconds: float,
    workers: int,
    max_workers: int,
) -> int:
    """The workers the model's fleet needs now (`workers`: what it has, starting or ready)."""
    due = sorted((w for w in work if w.shards > 0), key=lambda w: w.deadline_at)
    shards = sum(w.shards for w in due)
    if not shards or max_workers <= 0:
        return 0
    upper = min(max_workers, shards)
    speed = max(tokens_per_second, 1e-9)
    need, tokens = 1, 0.0
    for item in due:
        tokens += item.tokens
        left = (item.deadline_at - now) * (1 - SAFETY)
        if left > 0 and (enough := math.ceil(tokens / (speed * left))) <= workers:
            need = max(need, enough)  # the workers there do it
            continue
        have = workers * speed * max(left, 0.0)
        fresh = left - cold_start_seconds  # what a worker asked for now still has
        if fresh <= 0:
            return upper  # late whatever we do: all the fleet may give
        need = max(need, workers + math.ceil((tokens - have) / (speed * fresh)))
    return min(need, upper)
