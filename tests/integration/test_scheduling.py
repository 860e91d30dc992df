"""Deadlines decide what runs first: a batch's shards wait in the tier its slack puts them in,
workers take the most urgent tier first, and a batch whose deadline nears moves up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core.messaging import ShardTask
from batch_core.scheduling import shard_tier
from batch_core.settings import Settings
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, store_batch, write_jsonl
from tests.queues import drain


@pytest.fixture
def slow_worker_stack() -> Iterator[LocalStack]:
    with LocalStack(FakeEngine(MODEL, seconds_per_request=0.02), shard_size=10) as stack:
        yield stack


def test_a_one_hour_batch_behind_a_seven_day_one_finishes_first(
    slow_worker_stack: LocalStack, tmp_path: Path
) -> None:
    stack = slow_worker_stack
    week = write_jsonl(tmp_path / "week.jsonl", [chat_request(f"w{i}") for i in range(400)])
    hour = write_jsonl(tmp_path / "hour.jsonl", [chat_request(f"h{i}") for i in range(10)])
    long_name = stack.drop(week, metadata={"completion-window": "7d"})
    deadline = time.monotonic() + 60
    while (batch := stack.outbox_batch(long_name)) is None or batch.status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    short = stack.wait_for_outbox(
        stack.drop(hour, metadata={"completion-window": "1h"}), timeout=60
    )
    long_now = stack.outbox_batch(long_name)
    assert short.status == "completed" and long_now is not None
    # The week's batch (40 shards of 10, 8 s of work) was still running: the hour's one did
    # not wait for it to drain, as it would in one first-in first-out queue.
    assert long_now.status == "in_progress"
    assert long_now.request_counts.completed < 300
    # (One CI run of seven saw the hour's batch in the normal tier: its window first, so a
    # lost drop option and a wrong tier tell themselves apart.)
    assert (short.completion_window, long_now.completion_window) == ("1h", "7d")
    tiers = {
        b.id: b.tier for b in (stack.stages.batches.get_batch(x.id) for x in (short, long_now)) if b
    }
    assert tiers == {short.id: "urgent", long_now.id: "bulk"}
    assert stack.wait_for_outbox(long_name, timeout=120).status == "completed"


def test_a_batch_whose_deadline_nears_moves_its_waiting_shards_up(bare_stack: LocalStack) -> None:
    stages = bare_stack.stages
    soon = int(time.time()) + 1800  # within the urgent tier's six hours
    store_batch(
        bare_stack,
        "batch_nearing",
        "in_progress",
        expires_at=soon,
        tier="normal",
        shards_total=2,
        shards_pending=2,
    )
    from batch_core.records import ShardRecord

    stages.table.shards.put_shards(
        "batch_nearing",
        [ShardRecord(batch_id="batch_nearing", index=i, request_count=5) for i in range(2)],
    )
    stages.shard_queue.send(ShardTask(batch_id="batch_nearing", shard_index=i) for i in range(2))
    assert stages.turns.escalate_near_deadlines() == ["batch_nearing"]
    assert stages.batches.get_batch("batch_nearing").tier == "urgent"  # type: ignore[union-attr]
    urgent = drain(bare_stack.session.client("sqs"), stages.shard_queue.urls["urgent"])
    assert sorted(ShardTask.model_validate_json(m["Body"]).shard_index for m in urgent) == [0, 1]
    assert stages.turns.escalate_near_deadlines() == []  # once
    # The copy left in the normal tier is harmless: the worker takes urgent first, and a
    # shard already done is skipped.
    message = stages.shard_queue.receive(wait_seconds=0)[0]
    assert message.queue_url == stages.shard_queue.urls["normal"]


def test_the_tier_follows_the_slack() -> None:
    settings = Settings(bucket_name="b", table_name="t", shard_queue_url="q")
    now = 1_000_000
    hour, day, week = 3600, 86400, 7 * 86400
    assert (
        shard_tier(expires_at=now + hour, now=now, estimated_tokens=0, settings=settings)
        == "urgent"
    )
    assert (
        shard_tier(expires_at=now + day, now=now, estimated_tokens=0, settings=settings) == "normal"
    )
    assert (
        shard_tier(expires_at=now + week, now=now, estimated_tokens=0, settings=settings) == "bulk"
    )
    # A week's deadline with six days of work at the fleet's speed has a day of slack.
    six_days = 6 * day * settings.fleet_tokens_per_second
    assert (
        shard_tier(expires_at=now + week, now=now, estimated_tokens=six_days, settings=settings)
        == "normal"
    )


def test_an_infeasible_deadline_is_announced_at_risk_before_it_expires(
    bare_stack: LocalStack,
) -> None:
    from tests.integration.test_status_events import received, subscribe

    stages = bare_stack.stages
    url = subscribe(bare_stack)
    fleet = stages.settings.fleet_tokens_per_second
    # Ten minutes left, and an hour of work for the whole fleet: it cannot make it.
    store_batch(bare_stack, "batch_doomed", "in_progress", request_total=100,
                expires_at=int(time.time()) + 600, estimated_tokens=3600 * fleet)  # fmt: skip
    # A day left for the same work: fine.
    store_batch(bare_stack, "batch_fine", "in_progress", request_total=100,
                expires_at=int(time.time()) + 86400, estimated_tokens=3600 * fleet)  # fmt: skip
    assert stages.turns.flag_at_risk() == ["batch_doomed"]
    assert stages.turns.flag_at_risk() == []  # announced once
    (event,) = [
        e
        for e in received(bare_stack, url, at_least=1)
        if e["detail-type"] != "Batch Status Change"
    ]
    assert event["detail-type"] == "Batch At Risk"
    assert event["detail"]["id"] == "batch_doomed" and event["detail"]["status"] == "in_progress"
    doomed = stages.batches.get_batch("batch_doomed")
    assert doomed is not None and doomed.to_batch().at_risk_at is not None
    assert stages.batches.get_batch("batch_fine").to_batch().at_risk_at is None  # type: ignore[union-attr]


def test_a_running_batch_carries_an_eta_from_its_pace() -> None:
    from batch_core.records import BatchRecord

    started = 1_000_000
    batch = BatchRecord(
        id="batch_eta", endpoint="/v1/chat/completions", input_file_id="f",
        completion_window="24h", status="in_progress", created_at=started,
        in_progress_at=started, input_key="k", request_total=110, request_rejected=10,
        request_failed=10 + 5, request_completed=15,
    )  # fmt: skip
    # 20 of 100 ran in 100 s: the other 80 take 400 s more.
    assert batch.eta_at(started + 100) == started + 500
    assert batch.model_copy(update={"status": "completed"}).eta_at(started + 100) is None
    assert (
        batch.model_copy(update={"request_completed": 0, "request_failed": 10}).eta_at(
            started + 100
        )
        is None
    )  # nothing ran yet: no pace to go by


def test_shard_messages_carry_their_tenant_for_sqs_fair_queues(bare_stack: LocalStack) -> None:
    from handlers import validate
    from tests.conftest import load_event
    from tests.integration.test_handlers import CONTEXT, put_input

    put_input(bare_stack, 6)  # a dropped file: the default tenant's
    validate.handler(load_event("intake_s3_object_created.json"), CONTEXT)
    sqs = bare_stack.session.client("sqs")
    messages = drain(
        sqs, bare_stack.stages.shard_queue.urls["normal"], attributes=["MessageGroupId"]
    )
    assert len(messages) == 2  # 6 requests, 4 per shard
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"default"}


def test_deadline_pressure_is_the_work_due_within_the_hour_over_the_fleets_hour(
    bare_stack: LocalStack,
) -> None:
    stages = bare_stack.stages
    fleet = stages.settings.fleet_tokens_per_second
    now = int(time.time())
    assert sum(stages.turns.deadline_pressures().values()) == 0
    # Due in 30 minutes: 45 minutes of the fleet's work, a quarter of it done.
    store_batch(bare_stack, "batch_soon", "in_progress", expires_at=now + 1800,
                request_total=100, request_completed=25, estimated_tokens=2700 * fleet)  # fmt: skip
    # Due in two days: not this hour's work.
    store_batch(bare_stack, "batch_later", "in_progress", expires_at=now + 2 * 86400,
                request_total=100, estimated_tokens=3600 * fleet)  # fmt: skip
    assert abs(sum(stages.turns.deadline_pressures().values()) - 0.5625) < 0.01  # 2025 s of 3600
    # Per model, for each worker-fleet: a second model's batch due soon counts for it alone.
    store_batch(bare_stack, "batch_other", "in_progress", expires_at=now + 600, model="model-b",
                request_total=10, estimated_tokens=360 * fleet)  # fmt: skip
    pressures = stages.turns.deadline_pressures()
    assert abs(pressures["model-b"] - 0.1) < 0.01
    assert abs(pressures[""] - 0.5625) < 0.01  # the first batch names no model
    assert abs(sum(stages.turns.deadline_pressures().values()) - 0.6625) < 0.01


def test_a_models_own_throughput_decides_whether_its_deadline_is_at_risk(
    bare_stack: LocalStack,
) -> None:
    from batch_core.records import ServedModel

    stages = bare_stack.stages
    stages.table.models.put_model(
        ServedModel(name="model-slow", queue_url="https://sqs/slow", tokens_per_second=10)
    )
    stages.registry.forget()
    # Two hours of work at the slow model's 10 tokens/s: minutes at the stack's fleet speed.
    work = 2 * 3600 * 10
    assert work / stages.settings.fleet_tokens_per_second < 600
    for batch_id, model in (("batch_slow", "model-slow"), ("batch_fast", MODEL)):
        store_batch(bare_stack, batch_id, "in_progress", model=model, request_total=10,
                    expires_at=int(time.time()) + 3600, estimated_tokens=work)  # fmt: skip
    assert stages.turns.flag_at_risk() == ["batch_slow"]
    now = int(time.time())
    slack_tier = shard_tier(expires_at=now + 86400, now=now, estimated_tokens=work * 10,
                            settings=stages.settings, tokens_per_second=10)  # fmt: skip
    assert slack_tier == "urgent"  # 20 hours of its work, a day left: under 6 hours of slack


def test_one_hour_batches_beyond_a_tenants_urgent_share_wait_in_the_bulk_tier(
    bare_stack: LocalStack,
) -> None:
    """Issue 25, finding 9: a tenant's 1-hour batches are urgent up to its share of the
    fleet (URGENT_TENANT_SHARE, half here); beyond it they wait in the bulk tier, and the
    sweep moves them up as the tenant's share frees. Another tenant's are urgent still."""
    import json

    from batch_core import s3keys
    from batch_core.batch_params import BatchParams
    from batch_core.intake_jobs import DroppedObject
    from batch_core.records import BatchRecord
    from batch_core.wiring import build_stages

    clock = [float(int(time.time()))]
    settings = bare_stack.stages.settings.model_copy(
        update={"fleet_tokens_per_second": 10, "urgent_tenant_share": 0.5}
    )
    stages = build_stages(settings, bare_stack.session, clock=lambda: clock[0])
    files = stages.files

    def run(tenant: str, window: str) -> BatchRecord:
        lines = [chat_request(f"{tenant}{i}", max_tokens=1000) for i in range(10)]
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        file = files.create(tenant, filename="f.jsonl", purpose="batch", data=data)
        params = BatchParams(endpoint="/v1/chat/completions", completion_window=window)
        batch = stages.batches.create_batch(tenant, params, input_file_id=file.id)
        ran = stages.intake.ingest_dropped_object(
            DroppedObject(key=s3keys.batch_input_key(batch.id))
        )
        assert ran is not None and ran.status == "in_progress", ran
        return ran

    flood = [run("flooder", "1h") for _ in range(4)]
    # About 1,000 s of the fleet each: 2,000 s of the tenant's clock at half the fleet. A
    # batch is urgent while the tenant's clock has caught up with now: the first one.
    work = (flood[0].estimated_tokens or 0) / settings.fleet_tokens_per_second
    assert 900 < work < 1800
    assert [b.tier for b in flood] == ["urgent", "bulk", "bulk", "bulk"]
    assert run("quiet", "1h").tier == "urgent"  # its own share
    assert run("quiet", "24h").tier == "normal"  # the slack decides, as before
    assert stages.turns.escalate_near_deadlines() == []  # the flooder's share is taken
    clock[0] += 2 * work + 1  # its first batch's share of time has passed
    moved = stages.turns.escalate_near_deadlines()
    assert len(moved) == 1 and moved[0] in {b.id for b in flood[1:]}
    assert stages.batches.get_batch(moved[0]).tier == "urgent"  # type: ignore[union-attr]
    urgent = drain(bare_stack.session.client("sqs"), stages.shard_queue.urls["urgent"])
    assert moved[0] in {ShardTask.model_validate_json(m["Body"]).batch_id for m in urgent}
    assert stages.turns.escalate_near_deadlines() == []  # one batch's share at a time


def test_a_tenants_small_batches_nearing_their_deadline_move_up_in_one_sweep(
    bare_stack: LocalStack,
) -> None:
    """A tenant's clock may run up to a sweep's interval ahead of now: three small batches
    nearing their deadline together move up together, not one per five-minute sweep; past
    that, the next waits for the tenant's share to free."""
    stages = bare_stack.stages
    assert stages.settings.urgent_tenant_share == 0.5  # the template's default
    fleet = stages.settings.fleet_tokens_per_second
    soon = int(time.time()) + 1800
    # Earliest deadline first: three of 10 s of the fleet, then two of an hour.
    for name, seconds, due in (("a", 10, 0), ("b", 10, 0), ("c", 10, 0), ("large", 3600, 60),
                               ("later", 3600, 120)):  # fmt: skip
        store_batch(bare_stack, f"batch_{name}", "in_progress", tenant="small-batches",
                    expires_at=soon + due, tier="normal", request_total=10,
                    estimated_tokens=seconds * fleet)  # fmt: skip
    moved = stages.turns.escalate_near_deadlines()
    # 60 s of the tenant's clock: within a sweep's interval, so the first large one too.
    assert sorted(moved) == ["batch_a", "batch_b", "batch_c", "batch_large"]
    assert stages.turns.escalate_near_deadlines() == []  # two hours of the clock ahead now
    assert stages.batches.get_batch("batch_later").tier == "normal"  # type: ignore[union-attr]


def test_the_urgent_clock_of_any_model_name_fits_a_dynamodb_sort_key(
    bare_stack: LocalStack,
) -> None:
    """DynamoDB refuses a sort key over 1,024 bytes (moto does not always): a model name is
    any string while no model is configured, so a long one is hashed into the key."""
    repository = bare_stack.stages.table
    now = 1_000_000
    for model in ("m" * 2000, "m" * 1999 + "n", "é" * 600, "demo-model"):
        assert repository.tenants.book_urgent("tenant", model, seconds=1000, now=now, ahead=300)
        # Each name has its own clock, now 1,000 s ahead: past the 300 s it may run ahead.
        assert not repository.tenants.book_urgent("tenant", model, seconds=1, now=now, ahead=300)
    items = bare_stack.session.client("dynamodb").query(
        TableName=bare_stack.stages.settings.table_name,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :urgent)",
        ExpressionAttributeValues={":pk": {"S": "TENANT#tenant"}, ":urgent": {"S": "URGENT#"}},
    )["Items"]
    assert len(items) == 4
    assert max(len(item["sk"]["S"].encode()) for item in items) <= 1024
    assert {item["sk"]["S"] for item in items} >= {"URGENT#demo-model"}
