"""The workers scaled out to the work as deployed (issue 27): intake and the sweep set each
fleet's MinCapacity (its ECS service's scalable target, built from infra/worker-fleet.yaml's
own properties on moto) to the workers its work needs, and the sweep lowers it once the work
is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_core import fleet_capacity
from batch_core.records import ServedModel
from batchctl.local import LocalStack
from batchctl.local.resources import STACK, create_worker_fleet
from gpu_worker.engines.fake import FakeEngine
from handlers import expire
from tests.conftest import MODEL, chat_request, load_event, store_batch, write_jsonl
from tests.integration.test_handlers import CONTEXT

FLEET_SPEED = 2000
"""FLEET_TOKENS_PER_SECOND's default: the whole fleet's, 500 a worker at MaxWorkers 4."""
COLD = 900
"""FLEET_COLD_START_SECONDS's default."""


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        None, served_models=[MODEL], route_events=False, shard_size=4, worker_fleet=True
    ) as local:
        yield local


def targets(stack: LocalStack) -> dict[str, dict[str, Any]]:
    found = stack.session.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="ecs"
    )["ScalableTargets"]
    return {t["ResourceId"]: t for t in found}


def own_target(stack: LocalStack) -> str:
    (target,) = [t for t in targets(stack) if t.startswith(f"service/{STACK}-workers/")]
    return target


def floor(stack: LocalStack, target: str) -> int:
    return int(targets(stack)[target]["MinCapacity"])


def sweep() -> dict[str, Any]:
    return expire.handler(load_event("expire_schedule.json"), CONTEXT)


def running(
    stack: LocalStack, batch_id: str, *, shards: int, tokens: int, due_in: int, **fields: Any
) -> None:
    """A batch in progress with `shards` unsettled and `tokens` of work still to run."""
    store_batch(
        stack,
        batch_id,
        "in_progress",
        **fields,
        expires_at=int(time.time()) + due_in,
        request_total=1000,
        estimated_tokens=tokens,
        shards_total=shards,
        shards_pending=shards,
    )


def test_the_template_makes_the_stacks_workers_a_fleet_starting_at_zero(
    stack: LocalStack,
) -> None:
    target = targets(stack)[own_target(stack)]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 4)  # MaxWorkers' default
    assert sweep()["failures"] == {}
    assert floor(stack, own_target(stack)) == 0  # no work, no worker


def test_one_shard_starts_one_worker_however_big_and_late(stack: LocalStack) -> None:
    running(stack, "batch_one", shards=1, tokens=50_000_000, due_in=600)
    assert sweep()["failures"] == {}
    assert floor(stack, own_target(stack)) == 1
    # Done: the floor goes back to zero, and the scale-in alarm stops the idle worker.
    batches = stack.stages.table.batches
    batches.transition("batch_one", to_status="finalizing", from_statuses=["in_progress"])
    batches.transition("batch_one", to_status="completed", from_statuses=["finalizing"])
    sweep()
    assert floor(stack, own_target(stack)) == 0


def test_a_big_urgent_batch_gets_what_its_deadline_needs_at_once(stack: LocalStack) -> None:
    # Each new worker has 0.9 x 2 h - 15 min = 5,580 s at 500 tokens/s: 2.5 workers' worth.
    per_worker = FLEET_SPEED / 4 * (0.9 * 7200 - COLD)
    running(stack, "batch_big", shards=200, tokens=int(2.5 * per_worker), due_in=7200)
    sweep()
    assert floor(stack, own_target(stack)) == 3
    # Twice the work: the maximum, at once (not one more per 5-minute cooldown).
    running(stack, "batch_bigger", shards=200, tokens=int(3 * per_worker), due_in=7200)
    sweep()
    assert floor(stack, own_target(stack)) == 4


def test_workers_running_count_and_a_week_away_needs_one(stack: LocalStack) -> None:
    running(stack, "batch_week", shards=300, tokens=10_000_000, due_in=7 * 86400)
    sweep()
    assert floor(stack, own_target(stack)) == 1


def test_a_fleets_model_scales_its_own_workers_by_its_engines(stack: LocalStack) -> None:
    session = stack.session
    target = create_worker_fleet(
        session, "qwen-WorkerCluster-AbC123", {"MaxWorkers": "2", "Gpus": "8"}
    )
    queue = stack.physical_id("ShardQueue").rsplit("/", 1)[0] + f"/{STACK}-model-qwen-normal"
    session.client("sqs").create_queue(QueueName=queue.rsplit("/", 1)[1])
    stack.stages.registry.register(
        ServedModel(
            name="qwen",
            queue_url=queue,
            tokens_per_second=100_000,
            scaling_target=target,
            engines_per_worker=8,  # 8 GPUs, one engine each
        )
    )
    stack.stages.registry.forget()
    # However urgent, 8 shards run on one 8-engine worker; a 9th takes a second.
    running(stack, "batch_q", shards=8, tokens=10**9, due_in=1800, model="qwen")
    sweep()
    assert floor(stack, target) == 1
    assert floor(stack, own_target(stack)) == 0  # not the stack's own workers' work
    running(stack, "batch_q2", shards=1, tokens=1000, due_in=86400, model="qwen")
    sweep()
    assert floor(stack, target) == 2


def test_one_fleet_that_fails_never_stops_another_being_sized(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.stages.registry.register(
        ServedModel(
            name="gone",
            queue_url=stack.physical_id("ShardQueue").rsplit("/", 1)[0]
            + f"/{STACK}-model-gone-normal",
            scaling_target="service/deleted-cluster/deleted-service",
        )
    )
    stack.stages.registry.forget()
    running(stack, "batch_gone", shards=3, tokens=1000, due_in=3600)
    store_batch(stack, "batch_gone_model", "in_progress", model="gone", shards_pending=3)
    read = fleet_capacity.FleetCapacity.read
    broken = "service/broken/broken"

    def read_or_fail(self: fleet_capacity.FleetCapacity, target: str) -> Any:
        if target == broken:
            raise RuntimeError("AccessDenied, as a fleet whose role lacks a permission")
        return read(self, target)

    monkeypatch.setattr(fleet_capacity.FleetCapacity, "read", read_or_fail)
    stack.stages.registry.register(
        ServedModel(
            name="broken",
            queue_url=stack.physical_id("ShardQueue").rsplit("/", 1)[0]
            + f"/{STACK}-model-broken-normal",
            scaling_target=broken,
        )
    )
    stack.stages.registry.forget()
    result = sweep()
    assert result["failures"] == {"fleets": 1}  # counted, logged, tried again next run
    assert floor(stack, own_target(stack)) == 1  # the deleted one only warned


def test_intake_starts_a_batchs_workers_before_any_sweep(tmp_path: Path) -> None:
    with LocalStack(FakeEngine(MODEL), shard_size=4, worker_fleet=True) as stack:
        target = own_target(stack)
        name = stack.drop(write_jsonl(tmp_path / "a.jsonl", [chat_request("a")]))
        assert stack.wait_for_outbox(name, timeout=60).status == "completed"
        assert floor(stack, target) == 1  # intake raised it; only the sweep lowers it
        sweep()
        assert floor(stack, target) == 0
