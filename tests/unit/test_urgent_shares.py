"""Each tenant's share of the urgent tier (issue 25, finding 9), without AWS: the tier asks
the share only for a batch the slack makes urgent, books work over the share on the tenant's
clock, and sends a batch its share cannot take to the bulk tier."""

from __future__ import annotations

from dataclasses import dataclass, field

from batch_core.scheduling import URGENT_AHEAD_SECONDS, UrgentShares, shard_tier
from batch_core.settings import Settings


@dataclass
class Clocks:
    """The repository's urgent clocks, in memory, by the same rule."""

    until: dict[tuple[str, str], int] = field(default_factory=dict)
    calls: int = 0

    def book_urgent(self, tenant: str, model: str, *, seconds: int, now: int, ahead: int) -> bool:
        self.calls += 1
        until = self.until.get((tenant, model))
        if until is not None and until > now + ahead:
            return False
        self.until[(tenant, model)] = max(until or now, now) + seconds
        return True


def settings(share: float = 0.5) -> Settings:
    return Settings(bucket_name="b", table_name="t", shard_queue_url="q", urgent_tenant_share=share)


def test_only_a_batch_the_slack_makes_urgent_asks_its_tenants_share() -> None:
    now, hour, day = 1_000_000, 3600, 86400
    asked: list[float] = []

    def refuse(work: float) -> bool:
        asked.append(work)
        return False

    tier = shard_tier(expires_at=now + hour, now=now, estimated_tokens=2000 * 60,
                      settings=settings(), urgent_budget=refuse)  # fmt: skip
    assert tier == "bulk" and asked == [60.0]  # a minute of the fleet, refused
    for window, expected in ((day, "normal"), (7 * day, "bulk")):
        tier = shard_tier(expires_at=now + window, now=now, estimated_tokens=0,
                          settings=settings(), urgent_budget=refuse)  # fmt: skip
        assert tier == expected
    assert len(asked) == 1  # work with slack never asks


def test_a_tenants_clock_runs_at_its_share_and_other_tenants_have_their_own() -> None:
    clocks = Clocks()
    shares = UrgentShares(clocks, settings(0.25))
    now = 1_000_000
    assert shares.admit("a", "m", 100, now)  # 400 s of a's clock at a quarter of the fleet
    assert clocks.until[("a", "m")] == now + 400
    assert not shares.admit("a", "m", 1, now)  # 400 s ahead: more than a sweep's interval
    assert not shares.admit("a", "m", 1, now) and clocks.calls == 2  # refused once a run
    assert shares.admit("b", "m", 100, now)  # another tenant's share
    assert shares.admit("a", "other-model", 100, now)  # another model's fleet
    later = UrgentShares(clocks, settings(0.25))  # the next sweep, the clock within reach
    assert later.admit("a", "m", 1, now + 400 - URGENT_AHEAD_SECONDS)
    assert clocks.until[("a", "m")] == now + 404  # booked after what was booked before


def test_no_share_configured_books_nothing() -> None:
    clocks = Clocks()
    shares = UrgentShares(clocks, settings(0))
    assert all(shares.admit("a", None, 10_000, 1_000_000) for _ in range(3))
    assert clocks.calls == 0
