"""Several served models in one deployment: each has shard queues of its own (registered in
the table) and its own workers; a batch for one never reaches another's workers; a model being
retired refuses new batches and lets running ones finish."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import chat_request, write_jsonl


@pytest.fixture
def two_models() -> Iterator[tuple[LocalStack, FakeEngine, FakeEngine]]:
    first, second = FakeEngine("model-a"), FakeEngine("model-b", seconds_per_request=0.02)
    with LocalStack(first, more_models=[second], shard_size=5) as stack:
        yield stack, first, second


def lines(model: str, count: int, stem: str) -> list[object]:
    return [chat_request(f"{stem}{i}", model=model) for i in range(count)]


def test_a_batch_for_model_b_never_reaches_model_as_workers(
    two_models: tuple[LocalStack, FakeEngine, FakeEngine], tmp_path: Path
) -> None:
    stack, first, second = two_models
    for_b = stack.drop(write_jsonl(tmp_path / "b.jsonl", lines("model-b", 12, "b")))
    for_a = stack.drop(write_jsonl(tmp_path / "a.jsonl", lines("model-a", 7, "a")))
    assert stack.wait_for_outbox(for_b, timeout=60).status == "completed"
    assert stack.wait_for_outbox(for_a, timeout=60).status == "completed"
    assert (first.calls, second.calls) == (7, 12)  # each model's requests on its own workers
    registered = {m.name for m in stack.stages.table.models.list_models()}
    assert registered == {"model-b"}  # model-a is the stack's own (its template queues)
    unknown = stack.wait_for_outbox(
        stack.drop(write_jsonl(tmp_path / "c.jsonl", lines("model-c", 1, "c"))), timeout=60
    )
    assert unknown.status == "failed" and unknown.errors and unknown.errors.data
    assert unknown.errors.data[0].code == "model_not_found"


def test_a_retiring_model_refuses_new_batches_and_finishes_running_ones(
    two_models: tuple[LocalStack, FakeEngine, FakeEngine], tmp_path: Path
) -> None:
    stack, _, second = two_models
    running = stack.drop(write_jsonl(tmp_path / "long.jsonl", lines("model-b", 100, "r")))
    deadline = time.monotonic() + 60
    while (batch := stack.outbox_batch(running)) is None or batch.status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert stack.stages.table.models.retire_model("model-b")
    stack.stages.registry.forget()  # a function reads the registry again within a minute
    refused = stack.wait_for_outbox(
        stack.drop(write_jsonl(tmp_path / "new.jsonl", lines("model-b", 1, "n"))), timeout=60
    )
    assert refused.status == "failed" and refused.errors and refused.errors.data
    assert refused.errors.data[0].code == "model_not_found"
    finished = stack.wait_for_outbox(running, timeout=120)
    assert finished.status == "completed" and finished.request_counts.completed == 100
    assert second.calls == 100
    assert not stack.stages.table.models.retire_model("model-unknown")


def test_batchctl_models_adds_lists_and_retires(
    two_models: tuple[LocalStack, FakeEngine, FakeEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    stack, _, _ = two_models
    sqs = stack.session.client("sqs")
    # Only the stack's fleet queues (<stack>-model-*, which its functions may send to).
    stray = sqs.create_queue(QueueName="z-shards")["QueueUrl"]
    assert main(["models", "add", "model-z", "--queue-url", stray]) == 1
    assert "--queue-url" in capsys.readouterr().err
    url = sqs.create_queue(QueueName="openbatch-local-model-z-normal")["QueueUrl"]
    assert main(["models", "add", "model-z", "--queue-url", url]) == 0
    stack.stages.registry.forget()  # the functions read the registry again within a minute
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "model-z" in listed and "model-b" in listed and url in listed
    assert "model-z" in stack.stages.registry.served_model_names()
    assert main(["models", "retire", "model-z"]) == 0
    stack.stages.registry.forget()
    assert "model-z" not in stack.stages.registry.served_model_names()
    assert main(["models", "retire", "model-y"]) == 1
    assert "no model 'model-y'" in capsys.readouterr().err
    # Removing waits out the registry cache's minute after retiring (long past here).
    stack.stages.table.models.put_model(
        stack.stages.table.models.get_model("model-z").model_copy(update={"retired_at": 1})  # type: ignore[union-attr]
    )
    assert main(["models", "remove", "model-z"]) == 0
    assert stack.stages.table.models.get_model("model-z") is None
    assert main(["models", "remove", "model-z"]) == 1
