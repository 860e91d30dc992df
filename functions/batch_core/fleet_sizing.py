"""How many workers a model's fleet should have now, sized to the work (issue 27).

Step scaling adds workers while shards wait, one step per cooldown, whatever they are: during
one cold start a single shard keeps waiting and grows the fleet step after step to its
maximum, and a huge batch due soon still gets one step per cooldown. Here the count is
computed from the work itself:

- never more workers than shards left to run (waiting plus running) need: a worker runs one
  shard per engine at a time, so one shard never starts more than one worker;
- enough to finish, by each deadline, the work due by then (earliest first, cumulative),
  counting the workers running now from now, and any other (one asked for now, or one still
  starting: its cold start's progress is not known) only after a whole cold start;
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
    ready: int,
    max_workers: int,
    engines_per_worker: int = 1,
) -> int:
    """The workers the model's fleet needs now, starting ones included (`ready`: its workers
    running now). The fleet keeps what it has above that: sizing only adds."""
    due = sorted((w for w in work if w.shards > 0), key=lambda w: w.deadline_at)
    shards = sum(w.shards for w in due)
    if not shards or max_workers <= 0:
        return 0
    upper = min(max_workers, math.ceil(shards / max(engines_per_worker, 1)))
    speed = max(tokens_per_second, 1e-9)
    need, tokens = 1, 0.0
    for item in due:
        tokens += item.tokens
        left = (item.deadline_at - now) * (1 - SAFETY)
        if left > 0 and (enough := math.ceil(tokens / (speed * left))) <= ready:
            need = max(need, enough)  # the workers running do it
            continue
        have = ready * speed * max(left, 0.0)
        fresh = left - cold_start_seconds  # what a worker asked for now still has
        if fresh <= 0:
            return upper  # late whatever we do: all the fleet may give
        need = max(need, ready + math.ceil((tokens - have) / (speed * fresh)))
    return min(need, upper)


def engines_per_worker(gpus: int, gpus_per_engine: int) -> int:
    """Engines one worker runs (`gpu_worker.engine_groups`: one per whole group of
    `gpus_per_engine` of its `gpus`; 0 or more than it has: one over all)."""
    if gpus_per_engine <= 0 or gpus_per_engine >= gpus:
        return 1
    return gpus // gpus_per_engine
