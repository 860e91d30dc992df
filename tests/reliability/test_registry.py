"""Issue 25 (hardening, round two), findings 14 and 15: what a worker-fleet stack may write
into the model registry (hostile names and queues, taking over the stack's own model or
another fleet's, removal under a batch still validating), and the fake engine (the local
worker's) answering `max_tokens` 2^63-1 without dying. The console's download over the
inline limit (finding 13) is tested in a real browser by tests/integration/test_console.py."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent

from batch_core import model_registry
from batch_core.model_registry import ModelInUseError, ModelRegistry
from batch_core.protocol import EngineRequest
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from handlers import model_registry as handler_module
from tests.conftest import (
    MODEL,
    chat_request,
    load_event,
    store_batch,
    write_jsonl,
)
from tests.integration.test_model_registry import HOSTILE_NAMES, HOSTILE_QUEUES, QUEUES
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
HUGE = 2**63 - 1


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(None, served_models=[MODEL], route_events=False) as local:
        yield local


def answer(name: str, **properties: Any) -> dict[str, Any]:
    """The handler's answer to CloudFormation for one request (not PUT anywhere)."""
    event = copy.deepcopy(load_event(name))
    event["ResourceProperties"].update(properties)
    return handler_module.answer(CloudFormationCustomResourceEvent(event))


def test_hostile_registrations_are_refused(stack: LocalStack) -> None:
    repository = stack.stages.table
    names = [answer("model_registry_create.json", Name=name) for name in HOSTILE_NAMES]
    refused_names = sum(a["Status"] == "FAILED" and "Name" in a["Reason"] for a in names)
    queues = [
        answer("model_registry_create.json", **{field: url})
        for url in HOSTILE_QUEUES
        for field in ("QueueUrl", "UrgentQueueUrl", "BulkQueueUrl")
    ]
    refused_queues = sum(a["Status"] == "FAILED" for a in queues)
    nothing_stored = repository.models.list_models() == []
    record(
        "registry",
        "hostile model names refused",
        f"{refused_names}/{len(names)}",
        refused_names == len(names) and nothing_stored,
    )
    record(
        "registry",
        "queues not this stack's fleet queues refused",
        f"{refused_queues}/{len(queues)}",
        refused_queues == len(queues) and nothing_stored,
    )
    assert refused_names == len(names) and refused_queues == len(queues) and nothing_stored


def test_no_fleet_takes_over_another_models_routing(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_registry, "MODEL_REGISTRY_SECONDS", 0)
    stages = stack.stages
    assert answer("model_registry_create.json")["Status"] == "SUCCESS"  # fleet openbatch-qwen-7b
    takeovers = [
        answer("model_registry_create.json", Name=MODEL),  # the stack's own model
        # Another fleet naming the same model, with the owner's queues or its own.
        answer("model_registry_create.json", Fleet="openbatch-intruder"),
        answer("model_registry_create.json", Fleet="openbatch-intruder", QueueUrl=f"{QUEUES}-x"),
    ]
    delete = copy.deepcopy(load_event("model_registry_delete.json"))
    delete["ResourceProperties"]["Fleet"] = "openbatch-intruder"
    handler_module.answer(CloudFormationCustomResourceEvent(delete))
    stages.registry.forget()
    owner = stages.table.models.get_model("qwen-7b")
    held = (
        all(a["Status"] == "FAILED" for a in takeovers)
        and stages.turns.queue_for(MODEL) is stages.shard_queue
        and MODEL in stages.registry.served_model_names()
        and owner is not None
        and (owner.fleet, owner.status, owner.queue_url)
        == ("openbatch-qwen-7b", "active", f"{QUEUES}-normal")
    )
    refused = sum(a["Status"] == "FAILED" for a in takeovers)
    record("registry", "takeovers refused (own model, other fleet's)", f"{refused}/3", held)
    assert held, takeovers

    # Removal while a batch is still validating (its model not known yet) is refused.
    registry = ModelRegistry(stages.table, sleep=lambda seconds: None)
    store_batch(stack, "batch_validating_for_someone", "validating")
    try:
        registry.remove("qwen-7b")
        refused_removal = False
    except ModelInUseError:
        refused_removal = True
    record("registry", "removal under a validating batch refused", refused_removal, refused_removal)
    assert refused_removal and stages.table.models.get_model("qwen-7b") is not None


def test_the_fake_engine_and_its_worker_survive_huge_max_tokens(tmp_path: Path) -> None:
    engine = FakeEngine(MODEL, max_model_len=2048)
    count = scale(200, 5000)
    started = time.monotonic()
    results = list(
        engine.run(
            EngineRequest(
                custom_id=f"h{i}",
                url="/v1/chat/completions",
                body=chat_request(f"h{i}", max_tokens=HUGE if i % 2 else 8)["body"],
            )
            for i in range(count)
        )
    )
    seconds = time.monotonic() - started
    answered = sum(r.status_code == 200 for r in results)
    # Through the pipeline: a batch of them, then an ordinary batch on the same worker.
    with LocalStack(FakeEngine(MODEL), shard_size=4) as local:
        lines = [chat_request(f"x{i}", max_tokens=HUGE if i % 2 else 8) for i in range(8)]
        huge = local.wait_for_outbox(
            local.drop(write_jsonl(tmp_path / "huge.jsonl", lines)), timeout=60
        )
        after = local.wait_for_outbox(
            local.drop(write_jsonl(tmp_path / "after.jsonl", [chat_request("ok")])), timeout=60
        )
        alive = local.handler_errors == [] and not any(w.stop.is_set() for w in local.workers)
    held = answered == count and alive and huge.status != "in_progress"
    held = held and after.status == "completed"
    record(
        "fake engine",
        "max_tokens 2^63-1: answered, worker up",
        f"{answered}/{count} in {seconds:.2f} s; {huge.status}, then {after.status}",
        held,
    )
    assert held, (answered, huge, after, local.handler_errors)
