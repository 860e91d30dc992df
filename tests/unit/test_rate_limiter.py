"""Each tenant's token bucket over a bare moto table: a burst, then the sustained rate; reads at a
quarter of a write; the wait a refusal names is exactly when the request would pass; one
tenant's bucket is no other's."""

from __future__ import annotations

import pytest

from batch_core.auth import RateLimiter
from batch_core.errors import RateLimitError
from tests.stage_world import StageWorld


def limiter(world: StageWorld, per_second: int = 10, burst_seconds: int = 2) -> RateLimiter:
    return RateLimiter(world.table, per_second, burst_seconds, clock=world.clock)


def admitted(limiter: RateLimiter, tenant: str, method: str, count: int) -> int:
    """How many of `count` requests in a row are admitted."""
    taken = 0
    for _ in range(count):
        try:
            limiter.admit(tenant, method)
        except RateLimitError:
            continue
        taken += 1
    return taken


def test_a_full_bucket_takes_a_burst_then_names_the_wait(world: StageWorld) -> None:
    bucket = limiter(world)  # 10 writes a second, 2 s of them: 20 writes at once
    assert admitted(bucket, "t", "POST", 25) == 20
    with pytest.raises(RateLimitError) as refused:
        bucket.admit("t", "POST")
    assert refused.value.retry_after_ms == 100  # one write's worth refills in 100 ms
    world.clock.advance(0.099)
    with pytest.raises(RateLimitError):
        bucket.admit("t", "POST")
    world.clock.advance(0.001)
    bucket.admit("t", "POST")  # exactly when it said


def test_reads_cost_a_quarter_of_a_write(world: StageWorld) -> None:
    bucket = limiter(world)
    assert admitted(bucket, "t", "GET", 100) == 80
    world.clock.advance(0.1)  # one write's worth
    assert admitted(bucket, "t", "HEAD", 10) == 4


def test_the_sustained_rate_holds_after_the_burst(world: StageWorld) -> None:
    bucket = limiter(world)
    assert admitted(bucket, "t", "POST", 20) == 20
    start, taken = world.clock.now, 0
    for step in range(1, 51):  # five seconds at ten requests a second
        world.clock.now = start + step / 10  # not a sum of tenths: no drift
        taken += admitted(bucket, "t", "POST", 3)
    assert taken == 50
    world.clock.advance(10)  # idle long enough: a whole burst again, no more
    assert admitted(bucket, "t", "POST", 30) == 20


def test_one_tenants_bucket_is_no_other_tenants(world: StageWorld) -> None:
    bucket = limiter(world)
    assert admitted(bucket, "flood", "POST", 40) == 20
    assert admitted(bucket, "quiet", "POST", 20) == 20


def test_no_rate_keeps_no_bucket(world: StageWorld) -> None:
    bucket = limiter(world, per_second=0)
    assert admitted(bucket, "t", "POST", 1000) == 1000
    items = world.table.access.db.scan(TableName=world.table.access.name)["Items"]
    assert not [item for item in items if item["pk"]["S"].startswith("RATE#")]
