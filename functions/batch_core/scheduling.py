"""Which shards run first: every batch's shards go to one of three priority tiers by its slack
(the time to its deadline, `expires_at`, less the work it needs at the fleet's throughput),
and workers always take the most urgent tier first. A batch whose deadline comes near while
its shards wait in a lower tier is moved up (`Ending.escalate_near_deadlines`)."""

from __future__ import annotations

from typing import Literal

from batch_core.settings import Settings

ShardTier = Literal["urgent", "normal", "bulk"]
TIERS: tuple[ShardTier, ...] = ("urgent", "normal", "bulk")
"""Most urgent first: the order workers take them in."""


def work_seconds(
    estimated_tokens: int, settings: Settings, tokens_per_second: int | None = None
) -> float:
    """How long a fleet needs for `estimated_tokens` of work: at `tokens_per_second` (its
    model's, from the registry) or else FLEET_TOKENS_PER_SECOND."""
    return estimated_tokens / max(tokens_per_second or settings.fleet_tokens_per_second, 1)


def shard_tier(
    *,
    expires_at: int,
    now: int,
    estimated_tokens: int,
    settings: Settings,
    tokens_per_second: int | None = None,
) -> ShardTier:
    """The tier of a batch with this deadline and this much work (prompt plus output
    tokens, as the shard planner estimates them) for its model's fleet."""
    slack = expires_at - now - work_seconds(estimated_tokens, settings, tokens_per_second)
    if slack < settings.urgent_slack_seconds:
        return "urgent"
    if slack > settings.bulk_slack_seconds:
        return "bulk"
    return "normal"
