"""Which shards run first: every batch's shards go to one of three priority tiers by its slack
(the time to its deadline, `expires_at`, less the work it needs at the fleet's throughput),
and workers always take the most urgent tier first. A batch whose deadline comes near while
its shards wait in a lower tier is moved up (`Ending.escalate_near_deadlines`).

The urgent tier is shared between tenants (`UrgentShares`): a tenant's urgent work is booked
on its own clock at its share of the fleet (URGENT_TENANT_SHARE), and a batch its share
cannot take yet waits in the bulk tier until the sweep moves it up. Without it, a tenant that
sends everything with 1-hour windows would hold the fleet ahead of every other tenant's work."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from batch_core.settings import Settings

ShardTier = Literal["urgent", "normal", "bulk"]
TIERS: tuple[ShardTier, ...] = ("urgent", "normal", "bulk")
"""Most urgent first: the order workers take them in."""

URGENT_AHEAD_SECONDS = 300
"""How far a tenant's urgent clock may run ahead of now and still book: the sweep's interval
(it looks again no sooner), so a tenant's small batches move up together, not one a sweep."""

UrgentBudget = Callable[[float], bool]
"""Asked with a batch's work (seconds of its model's whole fleet) whether its tenant's share
of the urgent tier can take it now; True books it."""


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
    urgent_budget: UrgentBudget | None = None,
) -> ShardTier:
    """The tier of a batch with this deadline and this much work (prompt plus output
    tokens, as the shard planner estimates them) for its model's fleet. A batch the slack
    makes urgent is, if `urgent_budget` (its tenant's share) takes it; else it waits in the
    bulk tier: behind every tenant's work with slack, it takes only what nobody else's work
    needs, until the sweep moves it up within its tenant's share."""
    work = work_seconds(estimated_tokens, settings, tokens_per_second)
    slack = expires_at - now - work
    if slack < settings.urgent_slack_seconds:
        return "urgent" if urgent_budget is None or urgent_budget(work) else "bulk"
    if slack > settings.bulk_slack_seconds:
        return "bulk"
    return "normal"


class UrgentClocks(Protocol):
    """Where each tenant's urgent clock is kept (the repository)."""

    def book_urgent(
        self, tenant: str, model: str, *, seconds: int, now: int, ahead: int
    ) -> bool: ...


@dataclass
class UrgentShares:
    """Each tenant's share of its model's urgent tier, as a clock per tenant and model: a
    batch's urgent work of `w` seconds of the whole fleet takes `w / share` seconds of its
    tenant's clock, and is booked only while the clock is within URGENT_AHEAD_SECONDS of
    now. So over any stretch a tenant's urgent work is at most its share of the fleet (plus
    one batch and that margin), and the rest of the fleet goes to the other tiers, where
    every tenant's batches take turns.
    One per intake or sweep run: a tenant refused once is not asked again in that run."""

    clocks: UrgentClocks
    settings: Settings
    _refused: set[tuple[str, str]] = field(default_factory=set)

    def admit(self, tenant: str, model: str | None, work: float, now: int) -> bool:
        """Book `work` seconds of the fleet on `tenant`'s urgent clock for `model`; False
        while its share is taken (and always True with no share configured)."""
        share = self.settings.urgent_tenant_share
        if not share:
            return True
        key = (tenant, model or "")
        if key in self._refused:
            return False
        seconds = math.ceil(work / share)
        if self.clocks.book_urgent(*key, seconds=seconds, now=now, ahead=URGENT_AHEAD_SECONDS):
            return True
        self._refused.add(key)
        return False

    def budget(self, tenant: str, model: str | None, now: int) -> UrgentBudget:
        """`admit` for one batch, as `shard_tier` asks it."""
        return lambda work: self.admit(tenant, model, work, now)
