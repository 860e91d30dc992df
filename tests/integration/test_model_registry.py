"""The worker-fleet template's custom resource: events/model_registry_*.json through the
handler on moto, each answer PUT to a local HTTP server standing in for CloudFormation's
presigned ResponseURL. A model is registered with its queues, retired by its stack's
`Retired`, and removed only once no batch for it is left."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from batch_core import model_registry
from batch_core.model_registry import ModelInUseError, ModelRegistry
from batch_core.records import ServedModel
from batchctl.local import LocalLambdaContext, LocalStack
from handlers import model_registry as handler_module
from tests.conftest import MODEL, load_event, store_batch
from tests.receivers import HttpReceiver

CONTEXT = LocalLambdaContext("ModelRegistryFunction")


@pytest.fixture
def cloudformation(http_receiver: HttpReceiver) -> HttpReceiver:
    """Receives the handler's PUTs as CloudFormation's response bucket would."""
    return http_receiver


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry cache's minute, which a removal waits out, is not waited here."""
    monkeypatch.setattr(model_registry, "MODEL_REGISTRY_SECONDS", 0)


def invoke(name: str, answers: HttpReceiver, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    event["ResponseURL"] = answers.url("/response?X-Amz-Signature=x")
    properties = changes.pop("properties", {})
    event["ResourceProperties"].update(properties)
    event.update(changes)
    handler_module.handler(event, CONTEXT)
    put = answers.requests[-1]
    return {"content_type": put.headers.get("content-type"), **json.loads(put.body)}


def test_create_update_and_delete_a_served_model(
    bare_stack: LocalStack, cloudformation: HttpReceiver, no_wait: None
) -> None:
    stages = bare_stack.stages
    answer = invoke("model_registry_create.json", cloudformation)
    assert answer["Status"] == "SUCCESS", answer
    assert answer["PhysicalResourceId"] == "qwen-7b"
    assert answer["RequestId"] == "4f0c9d7e-1b2a-4c3d-9e8f-7a6b5c4d3e2f"
    assert answer["content_type"] == ""  # the presigned URL was signed without one
    model = stages.table.models.get_model("qwen-7b")
    assert model is not None and model.status == "active"
    assert model.queue_url.endswith("openbatch-local-model-qwen-7b-normal")
    assert model.bulk_queue_url.endswith("-bulk") and model.urgent_queue_url.endswith("-urgent")
    assert (model.fleet, model.context_length) == ("openbatch-qwen-7b", 32768)
    assert model.tokens_per_second == 4000  # its batches' slack is reckoned at this
    stages.registry.forget()
    assert "qwen-7b" in stages.registry.served_model_names()

    # The stack updated with Retired=true: new batches refused, the entry kept.
    answer = invoke("model_registry_create.json", cloudformation, RequestType="Update",
                    PhysicalResourceId="qwen-7b", properties={"Retired": "true"})  # fmt: skip
    assert answer["Status"] == "SUCCESS", answer
    retired = stages.table.models.get_model("qwen-7b")
    assert retired is not None and retired.status == "retiring" and retired.retired_at
    assert retired.created_at == model.created_at
    stages.registry.forget()
    assert "qwen-7b" not in stages.registry.served_model_names()

    # A batch for it still running: the delete is refused, saying why, and nothing changes.
    store_batch(bare_stack, "batch_still_on_qwen", "in_progress", model="qwen-7b")
    answer = invoke("model_registry_delete.json", cloudformation)
    assert answer["Status"] == "FAILED"
    assert "batch_still_on_qwen" in answer["Reason"] and "have not ended" in answer["Reason"]
    assert stages.table.models.get_model("qwen-7b") is not None

    stages.table.batches.transition(
        "batch_still_on_qwen", to_status="cancelling", from_statuses=["in_progress"]
    )
    stages.table.batches.transition(
        "batch_still_on_qwen", to_status="cancelled", from_statuses=["cancelling"]
    )
    answer = invoke("model_registry_delete.json", cloudformation)
    assert answer["Status"] == "SUCCESS", answer
    assert stages.table.models.get_model("qwen-7b") is None
    # Deleting again (CloudFormation retries) is harmless.
    assert invoke("model_registry_delete.json", cloudformation)["Status"] == "SUCCESS"


def test_bad_properties_are_refused_with_the_reason(
    bare_stack: LocalStack, cloudformation: HttpReceiver
) -> None:
    hostile = {"QueueUrl": "http://169.254.169.254/latest", "ContextLength": "-1"}
    answer = invoke("model_registry_create.json", cloudformation, properties=hostile)
    assert answer["Status"] == "FAILED"
    assert "QueueUrl" in answer["Reason"] and "ContextLength" in answer["Reason"]
    # A create that failed has no model behind it: its delete (the rollback) removes nothing.
    assert answer["PhysicalResourceId"].startswith("unregistered-")
    assert bare_stack.stages.table.models.list_models() == []
    rollback = invoke("model_registry_delete.json", cloudformation,
                      PhysicalResourceId=answer["PhysicalResourceId"])  # fmt: skip
    assert rollback["Status"] == "SUCCESS"


def test_an_error_of_ours_is_answered_too(
    bare_stack: LocalStack, cloudformation: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CloudFormation would wait an hour for an answer that never comes."""

    def broken(self: ModelRegistry, model: ServedModel) -> ServedModel:
        raise RuntimeError("the table is unreachable")

    monkeypatch.setattr(ModelRegistry, "register", broken)
    answer = invoke("model_registry_create.json", cloudformation)
    assert answer["Status"] == "FAILED"
    assert answer["Reason"] == "RuntimeError: the table is unreachable"


def test_removing_a_model_waits_until_every_cached_registry_sees_it_retiring(
    bare_stack: LocalStack,
) -> None:
    slept: list[float] = []
    now = 1_900_000_000.0
    registry = ModelRegistry(bare_stack.stages.table, clock=lambda: now, sleep=slept.append)
    registry.register(ServedModel(name="model-x", queue_url="https://sqs/x"))
    assert registry.remove("model-x")
    assert slept == [model_registry.MODEL_REGISTRY_SECONDS]  # retired just now: a minute
    registry.register(ServedModel(name="model-y", queue_url="https://sqs/y", status="retiring"))
    now += 3600
    store_batch(bare_stack, "batch_on_y", "validating", model="model-y")
    with pytest.raises(ModelInUseError, match="batch_on_y"):
        registry.remove("model-y")
    assert slept == [model_registry.MODEL_REGISTRY_SECONDS]  # retired an hour ago: no wait
    assert not registry.remove("model-unknown")


# -- hostile registrations (issue 25, finding 14) -------------------------------------------

QUEUES = "https://sqs.us-east-1.amazonaws.com/123456789012/openbatch-local-model-qwen-7b"

HOSTILE_NAMES = [
    "qwen/../other",  # a path segment
    "qwen#7b",  # the table's key separator
    "qwen\n7b",  # a line of its own in logs and in every tenant's model_not_found message
    "qwen 7b",
    "qwen\t7b",
    "qwen\x00",
    "s3://weights/qwen/7b/",  # the fleet's default Name is its Model: a bucket path
    "/qwen",
    "qwen/",
    "qwen//7b",
    "modèle",  # CloudWatch refuses non-ASCII dimension values (the fleet scales on one)
    "-rf",  # read as an option by batchctl
    ".hidden",
    "x" * 257,
]
"""Names the registry refuses; `Qwen/Qwen2.5-7B-Instruct` (a hub id, vLLM's default served
name) and `ft:gpt-4o-mini:acme::abc123` (OpenAI's fine-tune form) stay accepted."""


def test_a_name_outside_the_safe_set_is_refused(
    bare_stack: LocalStack, cloudformation: HttpReceiver
) -> None:
    for name in HOSTILE_NAMES:
        answer = invoke("model_registry_create.json", cloudformation, properties={"Name": name})
        assert answer["Status"] == "FAILED", name
        assert "Name" in answer["Reason"], answer["Reason"]
    assert bare_stack.stages.table.models.list_models() == []
    for name in ("Qwen/Qwen2.5-7B-Instruct", "ft:gpt-4o-mini:acme::abc123", "llama-3.1_8b"):
        answer = invoke("model_registry_create.json", cloudformation, properties={"Name": name})
        assert answer["Status"] == "SUCCESS", answer
        assert answer["PhysicalResourceId"] == name


def test_batchctl_refuses_a_hostile_name_too(
    bare_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    assert main(["models", "add", "qwen#7b", "--queue-url", f"{QUEUES}-normal"]) == 1
    assert "name" in capsys.readouterr().err
    assert bare_stack.stages.table.models.list_models() == []


HOSTILE_QUEUES = [
    "https://sqs.us-east-1.amazonaws.com/999999999999/openbatch-local-model-qwen-7b-normal",
    "https://sqs.eu-west-1.amazonaws.com/123456789012/openbatch-local-model-qwen-7b-normal",
    "https://sqs.us-east-1.amazonaws.com/123456789012/another-stack-model-qwen-7b-normal",
    "https://sqs.us-east-1.amazonaws.com/123456789012/openbatch-local-ShardQueue",  # the stack's
    "https://sqs.us-east-1.amazonaws.com.evil.example/123456789012/openbatch-local-model-q",
    "https://sqs.us-east-1.amazonaws.com/123456789012/openbatch-local-model-q/../../other",
    "https://sqs.us-east-1.amazonaws.com/123456789012/openbatch-local-model-" + "q" * 80,
]


def test_a_queue_must_be_one_of_this_stacks_fleet_queues(
    bare_stack: LocalStack, cloudformation: HttpReceiver
) -> None:
    for url in HOSTILE_QUEUES:
        for field in ("QueueUrl", "UrgentQueueUrl", "BulkQueueUrl"):
            answer = invoke("model_registry_create.json", cloudformation, properties={field: url})
            assert answer["Status"] == "FAILED", (field, url)
            assert field in answer["Reason"] and "openbatch-local-model-" in answer["Reason"]
    assert bare_stack.stages.table.models.list_models() == []


def test_a_fleet_cannot_take_over_the_stacks_own_model_or_another_fleets(
    bare_stack: LocalStack, cloudformation: HttpReceiver, no_wait: None
) -> None:
    stages = bare_stack.stages
    own = invoke("model_registry_create.json", cloudformation, properties={"Name": MODEL})
    assert own["Status"] == "FAILED" and "the stack's own model" in own["Reason"]
    assert stages.table.models.list_models() == []
    stages.registry.forget()
    assert stages.turns.queue_for(MODEL) is stages.shard_queue  # still routed to its own workers
    assert MODEL in stages.registry.served_model_names()

    assert invoke("model_registry_create.json", cloudformation)["Status"] == "SUCCESS"
    intruder = {"Fleet": "openbatch-intruder", "QueueUrl": f"{QUEUES}-evil"}
    answer = invoke("model_registry_create.json", cloudformation, properties=intruder)
    assert answer["Status"] == "FAILED" and "openbatch-qwen-7b" in answer["Reason"]
    kept = stages.table.models.get_model("qwen-7b")
    assert kept is not None and kept.fleet == "openbatch-qwen-7b"
    assert kept.queue_url == f"{QUEUES}-normal"
    # Nor does another fleet's delete remove it.
    answer = invoke("model_registry_delete.json", cloudformation, properties=intruder)
    assert answer["Status"] == "SUCCESS" and "openbatch-qwen-7b" in answer["Reason"]
    kept = stages.table.models.get_model("qwen-7b")
    assert kept is not None and kept.status == "active"


def test_removal_waits_for_batches_still_validating(bare_stack: LocalStack) -> None:
    """A validating batch has no model until its file is read: it may be for this one, and
    its shards would go wherever the registry then says."""
    now = 1_900_000_000.0
    registry = ModelRegistry(bare_stack.stages.table, clock=lambda: now, sleep=lambda s: None)
    registry.register(ServedModel(name="model-v", queue_url=f"{QUEUES}-normal"))
    store_batch(bare_stack, "batch_reading_its_file", "validating", created_at=int(now) - 5)
    with pytest.raises(ModelInUseError, match="batch_reading_its_file"):
        registry.remove("model-v")
    assert registry.repository.models.get_model("model-v") is not None
    # One created once every registry saw model-v retiring cannot be for it: no wait for it.
    bare_stack.stages.table.batches.transition(
        "batch_reading_its_file", to_status="failed", from_statuses=["validating"]
    )
    later = int(now) + model_registry.MODEL_REGISTRY_SECONDS + 1
    store_batch(bare_stack, "batch_after_retiring", "validating", created_at=later)
    now += 3600
    assert registry.remove("model-v")
