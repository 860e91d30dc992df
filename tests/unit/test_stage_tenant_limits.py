"""Tenants as records over a bare moto world: a tenant's own limits beside another's defaults
(more and less), the queued-token quota reserved at intake and refunded at every end, the API
rate of a tenant's own, the per-process cache of them, `batchctl tenants` end to end, and
hostile values refused clearly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batch_core import wiring
from batch_core.auth import RateLimiter
from batch_core.batch_params import BatchParams
from batch_core.errors import InvalidRequestError, RateLimitError
from batch_core.intake_jobs import DroppedObject
from batch_core.records import BatchRecord
from batch_core.tenant_limits import LIMITS_CACHE_SECONDS, TenantLimitsAdmin
from batchctl.local.resources import REGION
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld, jsonl_bytes


def admin(world: StageWorld) -> TenantLimitsAdmin:
    return TenantLimitsAdmin(world.table, clock=world.clock)


def created(world: StageWorld, tenant: str, count: int = 2, stem: str = "r") -> BatchRecord:
    """A batch created through `Batches` (its slot taken), not yet validated."""
    lines = [chat_request(f"{stem}{i}") for i in range(count)]
    file = world.stages.files.create(
        tenant, filename="in.jsonl", purpose="batch", data=jsonl_bytes(lines)
    )
    return world.stages.batches.create_batch(
        tenant, BatchParams(endpoint="/v1/chat/completions"), input_file_id=file.id
    )


def load(world: StageWorld, tenant: str) -> tuple[int, int, int]:
    """(active batches, queued requests, queued tokens) of `tenant`."""
    return (*world.table.tenants.tenant_load(tenant), world.table.tenants.queued_tokens(tenant))


# -- own limits beside the defaults -----------------------------------------------------------


def test_a_tenant_with_its_own_limits_beside_tenants_at_the_defaults(world: StageWorld) -> None:
    stages = world.configure(tenant_max_active_batches=2)
    admin(world).set("big", {"max_active_batches": 4})  # more than the default
    admin(world).set("small", {"max_active_batches": 1})  # less
    stages.limits.forget()

    taken = {tenant: 0 for tenant in ("big", "small", "plain")}
    for tenant in taken:
        for i in range(6):
            try:
                created(world, tenant, stem=f"{tenant}{i}-")
            except RateLimitError as refused:
                assert "its limit is" in str(refused)
                break
            taken[tenant] += 1

    assert taken == {"big": 4, "small": 1, "plain": 2}
    # Back to the default: `small` may have as many as `plain` once its cache lapses.
    admin(world).set("small", {"max_active_batches": None})
    assert world.table.tenants.get_limits("small") is None  # no field left: no record
    with pytest.raises(RateLimitError):
        created(world, "small", stem="again")  # still cached here
    world.clock.advance(LIMITS_CACHE_SECONDS)
    created(world, "small", stem="again")
    assert load(world, "small")[0] == 2


def test_a_tenant_given_a_limit_when_the_deployment_has_none_is_counted(
    world: StageWorld,
) -> None:
    admin(world).set("capped", {"max_queued_requests": 3})
    # Created at once (nothing queued yet, both pass the create's check); validated in turn.
    first, second = created(world, "capped", count=3), created(world, "capped", 1, stem="s")
    first, second = world.validate(first.id), world.validate(second.id)
    free = world.validate(created(world, "free", count=5).id)

    assert first.status == "in_progress" and free.status == "in_progress"
    assert second.status == "failed" and second.errors is not None
    assert second.errors[0].code == "request_limit_exceeded"
    assert load(world, "capped")[:2] == (1, 3)
    assert load(world, "free") == (0, 0, 0)  # no limits: nothing counted
    with pytest.raises(RateLimitError, match="3 requests queued in its batches, its limit is 3"):
        created(world, "capped", stem="t")


# -- the queued-token quota -------------------------------------------------------------------


def test_the_estimated_tokens_are_reserved_with_the_requests_and_over_the_quota_fail(
    world: StageWorld,
) -> None:
    world.configure(tenant_max_queued_tokens=10**6)
    running = world.validate(created(world, "acme", count=4).id)
    assert running.status == "in_progress" and running.estimated_tokens > 0
    assert load(world, "acme") == (1, 4, running.estimated_tokens)

    per_batch = running.estimated_tokens
    admin(world).set("acme", {"max_queued_tokens": per_batch + per_batch // 2})
    world.stages.limits.forget()
    refused = world.validate(created(world, "acme", count=4, stem="x").id)

    assert refused.status == "failed" and refused.errors is not None
    (error,) = refused.errors
    assert error.code == "token_limit_exceeded"
    message = str(error.message)
    assert f"estimated {per_batch} tokens" in message and f"{per_batch + per_batch // 2}" in message
    assert load(world, "acme") == (1, 4, per_batch)  # the refused batch's slot is released

    alone = world.validate(created(world, "solo", count=4).id)  # another tenant's own quota
    assert alone.status == "in_progress"


def test_a_batch_over_the_whole_token_quota_says_to_split_it(world: StageWorld) -> None:
    admin(world).set("acme", {"max_queued_tokens": 5})
    refused = world.validate(created(world, "acme", count=2).id)

    assert refused.errors is not None and refused.errors[0].code == "token_limit_exceeded"
    assert "limit of 5 queued tokens" in str(refused.errors[0].message)
    assert "Split the input" in str(refused.errors[0].message)
    assert load(world, "acme") == (0, 0, 0)


def test_a_tenant_at_its_token_quota_is_429_at_create(world: StageWorld) -> None:
    world.configure(tenant_max_queued_tokens=1)  # the first batch fits only by being first
    admin(world).set("acme", {"max_queued_tokens": 10**6})
    world.stages.limits.forget()
    held = world.validate(created(world, "acme").id)
    admin(world).set("acme", {"max_queued_tokens": held.estimated_tokens})
    world.stages.limits.forget()

    with pytest.raises(RateLimitError, match="estimated tokens queued in its batches"):
        created(world, "acme", stem="more")


def ended_completed(world: StageWorld, record: BatchRecord) -> BatchRecord:
    return world.run_to_end(record, FakeEngine(MODEL))


def ended_cancelled(world: StageWorld, record: BatchRecord) -> BatchRecord:
    world.stages.ending.cancel(record.id)
    return world.stages.ending.finalize(record.id)


def ended_expired(world: StageWorld, record: BatchRecord) -> BatchRecord:
    world.stages.ending.expire(record.id)
    return world.stages.ending.finalize(record.id)


def ended_by_a_shard_failure(world: StageWorld, record: BatchRecord) -> BatchRecord:
    for task in world.drain():
        assert world.stages.ending.fail_shard(task)
    return world.stages.ending.finalize(record.id)


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (ended_completed, "completed"),
        (ended_cancelled, "cancelled"),
        (ended_expired, "expired"),
        (ended_by_a_shard_failure, "completed"),
    ],
)
def test_every_end_refunds_the_tokens_once(world: StageWorld, end: object, status: str) -> None:
    world.configure(tenant_max_queued_tokens=10**6)
    record = world.validate(created(world, "acme", count=3).id)
    assert load(world, "acme") == (1, 3, record.estimated_tokens)

    assert callable(end)
    ended = end(world, record)

    assert ended.status == status
    assert load(world, "acme") == (0, 0, 0)
    world.stages.notices.moved(ended)  # told twice: refunded once
    assert load(world, "acme") == (0, 0, 0)


def test_a_failed_validation_and_an_intake_given_up_release_their_slots(
    world: StageWorld,
) -> None:
    world.configure(tenant_max_queued_tokens=10**6)
    bad = created(world, "acme")
    world.store.put(bad.input_key, b"not json\n")
    assert world.validate(bad.id).status == "failed"
    given_up = created(world, "acme", stem="g")
    assert load(world, "acme")[0] == 1
    ended = world.stages.intake.give_up(DroppedObject(key=given_up.input_key))

    assert ended is not None and ended.status == "failed"
    assert load(world, "acme") == (0, 0, 0)


# -- the API rate of a tenant's own ------------------------------------------------------------


def limiter(world: StageWorld) -> RateLimiter:
    """10 writes a second, 2 s of them, by default; each tenant's own where set."""
    world.configure(api_requests_per_second=10, api_burst_seconds=2)
    return RateLimiter(world.table, 10, 2, clock=world.clock, limits=world.stages.limits)


def admitted(bucket: RateLimiter, tenant: str, count: int) -> int:
    taken = 0
    for _ in range(count):
        try:
            bucket.admit(tenant, "POST")
        except RateLimitError:
            continue
        taken += 1
    return taken


def test_a_tenant_over_its_own_rate_gets_429_with_the_wait_while_the_defaults_hold(
    world: StageWorld,
) -> None:
    admin(world).set("slow", {"requests_per_second": 1, "burst_seconds": 3})
    admin(world).set("fast", {"requests_per_second": 50})  # its burst: the default 2 s
    bucket = limiter(world)

    assert admitted(bucket, "slow", 10) == 3
    with pytest.raises(RateLimitError, match="1 requests per second") as refused:
        bucket.admit("slow", "POST")
    assert refused.value.retry_after_ms == 1000
    assert admitted(bucket, "plain", 25) == 20  # the defaults: 10 a second, 2 s of them
    assert admitted(bucket, "fast", 150) == 100


def test_a_changed_rate_applies_once_the_cache_lapses(world: StageWorld) -> None:
    bucket = limiter(world)
    assert admitted(bucket, "t", 5) == 5
    admin(world).set("t", {"requests_per_second": 0})  # no limit for it
    world.clock.advance(LIMITS_CACHE_SECONDS - 1)  # the bucket is full again; the cache holds
    assert admitted(bucket, "t", 30) == 20
    world.clock.advance(1)
    assert admitted(bucket, "t", 1000) == 1000


def test_the_cache_reads_a_tenant_once_per_period(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = world.stages.limits
    reads: list[str] = []
    original = world.table.tenants.get_limits

    def counted(tenant: str) -> object:
        reads.append(tenant)
        return original(tenant)

    monkeypatch.setattr(world.table.tenants, "get_limits", counted)
    for _ in range(50):
        book.of("a")
        book.of("b")
    assert reads == ["a", "b"]  # a tenant without a record is remembered too
    world.clock.advance(LIMITS_CACHE_SECONDS)
    book.of("a")
    assert reads == ["a", "b", "a"]


# -- hostile values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "changes", "said"),
    [
        ("acme", {"max_active_batches": -1}, "greater than or equal to 0"),
        ("acme", {"max_queued_tokens": 10**30}, "less than or equal to"),
        ("acme", {"requests_per_second": 10**9}, "less than or equal to 100000"),
        ("acme", {"burst_seconds": 0}, "greater than or equal to 1"),
        ("acme", {"max_queued_requests": True}, "valid integer"),
        ("acme", {"max_queued_requests": "5"}, "valid integer"),
        ("acme", {"no_such_limit": 1}, "Unknown limit"),
        ("a" * 65, {"max_active_batches": 1}, "must be 1-64 letters"),
        ("x" * 10_000, {"max_active_batches": 1}, "..."),
        ("ten#ant", {"max_active_batches": 1}, "must be 1-64 letters"),
        ("", {"max_active_batches": 1}, "must be 1-64 letters"),
    ],
)
def test_hostile_limits_are_refused_clearly_and_nothing_is_stored(
    world: StageWorld, tenant: str, changes: dict[str, object], said: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        admin(world).set(tenant, changes)  # type: ignore[arg-type]
    assert said in str(refused.value) and len(str(refused.value)) < 300
    assert world.table.tenants.list_limits() == []


# -- batchctl tenants ---------------------------------------------------------------------------


@pytest.fixture
def table_env(world: StageWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[StageWorld]:
    """`batchctl` reaching the world's table, as a deployment's TABLE_NAME would."""
    monkeypatch.setenv("TABLE_NAME", "stage-table")
    monkeypatch.setenv("AWS_REGION", REGION)
    wiring.reset()
    yield world
    wiring.reset()


def test_batchctl_tenants_sets_shows_lists_and_clears(
    table_env: StageWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    world = table_env
    assert main(["tenants", "set", "team-a", "--max-queued-tokens", "500000"]) == 0
    assert "max-queued-tokens=500000" in capsys.readouterr().out
    assert (
        main(["tenants", "set", "team-a", "--requests-per-second", "5", "--burst-seconds", "4"])
        == 0
    )
    own = world.table.tenants.get_limits("team-a")
    assert own is not None
    assert (own.requests_per_second, own.burst_seconds, own.max_queued_tokens) == (5, 4, 500000)
    assert own.max_active_batches is None  # not given: still the default

    world.stages.limits.forget()
    assert world.stages.limits.of("team-a").requests_per_second == 5  # what the API reads

    assert main(["tenants", "set", "team-a", "--requests-per-second", "default"]) == 0
    capsys.readouterr()
    assert main(["tenants", "show", "team-a"]) == 0
    shown = capsys.readouterr().out
    assert "requests-per-second=default" in shown and "burst-seconds=4" in shown
    assert main(["tenants", "set", "team-b", "--max-active-batches", "0"]) == 0
    capsys.readouterr()
    assert main(["tenants", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["team-a", "team-b"]

    assert main(["tenants", "clear", "team-a"]) == 0
    assert main(["tenants", "clear", "team-a"]) == 1
    assert "no limits of its own" in capsys.readouterr().err
    assert world.table.tenants.get_limits("team-a") is None


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["tenants", "set", "t", "--max-active-batches", "-3"], "out of range: give 0 to"),
        (["tenants", "set", "t", "--max-queued-tokens", "9" * 40], "out of range"),
        (["tenants", "set", "t", "--burst-seconds", "0"], "out of range: give 1 to 3600"),
        (["tenants", "set", "t", "--requests-per-second", "fast"], "not a whole number"),
        (["tenants", "set", "t"], "give at least one limit"),
        (["tenants", "set", "x" * 200, "--max-active-batches", "1"], "must be 1-64 letters"),
        (["tenants", "show", "bad name"], "must be 1-64 letters"),
    ],
)
def test_batchctl_tenants_refuses_bad_values_in_one_line(
    table_env: StageWorld, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.splitlines()) == 1
    assert table_env.table.tenants.list_limits() == []


def exit_code(argv: list[str]) -> int:
    """batchctl's exit code, whether argparse refused (it exits) or the command did."""
    from batchctl.cli import main

    try:
        return main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)
