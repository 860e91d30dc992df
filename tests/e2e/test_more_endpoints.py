"""The Responses API and vLLM's score and rerank, end to end on the real engine (CPU):
validated at intake, run through vLLM's serving layer, read back with the real models."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types import Batch as OpenAIBatch
from openai.types.responses import Response

from batchctl.local import LocalStack
from gpu_worker.engines.vllm_engine import VllmEngine
from tests.conftest import MODEL, lines_of, write_jsonl
from tests.e2e.conftest import EMBEDDING_MODEL

pytestmark = pytest.mark.e2e


def test_responses_lines_run_and_bad_ones_are_refused_at_intake(
    vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": "plain",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": MODEL, "input": "Tell me about rivers.", "max_output_tokens": 6},
        },
        {
            "custom_id": "items",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": MODEL,
                "instructions": "Be brief.",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi!"}]}],
                "max_output_tokens": 4,
                "temperature": 0.5,
            },
        },
        {
            "custom_id": "chained",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": MODEL, "input": "and then?", "previous_response_id": "resp_1"},
        },
    ]
    with LocalStack(vllm_engine) as stack:
        name = stack.drop(
            write_jsonl(tmp_path / "responses.jsonl", lines), metadata={"invalid-lines": "skip"}
        )
        stack.wait_for_outbox(name, timeout=600)
        paths = stack.download_outbox(name, tmp_path / "out")
    batch = OpenAIBatch.model_validate_json(paths["batch.json"].read_text())
    assert batch.status == "completed", batch.errors
    assert batch.endpoint == "/v1/responses"
    output = {line["custom_id"]: line for line in lines_of(paths["output.jsonl"])}
    assert set(output) == {"plain", "items"}
    for custom_id, limit in (("plain", 6), ("items", 4)):
        response = Response.model_validate(output[custom_id]["response"]["body"])
        assert response.object == "response" and response.model == MODEL
        assert response.usage is not None
        assert response.usage.input_tokens > 0
        assert 0 < response.usage.output_tokens <= limit
    assert Response.model_validate(output["items"]["response"]["body"]).instructions == "Be brief."
    [refused] = lines_of(paths["errors.jsonl"])
    assert refused["custom_id"] == "chained"
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "body.previous_response_id"
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(
        line["response"]["body"]["usage"]["output_tokens"] for line in output.values()
    )


def test_score_and_rerank_lines_run_on_a_pooling_model(
    embedding_engine: VllmEngine, tmp_path: Path
) -> None:
    from vllm.entrypoints.pooling.scoring.protocol import RerankResponse, ScoreResponse

    score_lines = [
        {
            "custom_id": "pairs",
            "url": "/v1/score",
            "body": {
                "model": EMBEDDING_MODEL,
                "queries": "what is a river",
                "documents": ["a river is water", "copper is a metal"],
            },
        },
        {
            "custom_id": "texts",
            "url": "/v1/score",
            "body": {"model": EMBEDDING_MODEL, "text_1": "hello", "text_2": "hello"},
        },
    ]
    documents = ["a river is water", "copper is a metal", "rivers run to the sea"]
    rerank_lines = [
        {
            "custom_id": "ranked",
            "url": "/v1/rerank",
            "body": {
                "model": EMBEDDING_MODEL,
                "query": "what is a river",
                "documents": documents,
                "top_n": 2,
            },
        }
    ]
    with LocalStack(embedding_engine) as stack:
        score_name = stack.drop(write_jsonl(tmp_path / "score.jsonl", score_lines))
        rerank_name = stack.drop(write_jsonl(tmp_path / "rerank.jsonl", rerank_lines))
        score_batch = stack.wait_for_outbox(score_name, timeout=600)
        rerank_batch = stack.wait_for_outbox(rerank_name, timeout=600)
        score_paths = stack.download_outbox(score_name, tmp_path / "score")
        rerank_paths = stack.download_outbox(rerank_name, tmp_path / "rerank")
    assert score_batch.status == rerank_batch.status == "completed"
    assert (score_batch.endpoint, rerank_batch.endpoint) == ("/v1/score", "/v1/rerank")
    scores = {
        line["custom_id"]: ScoreResponse.model_validate(line["response"]["body"])
        for line in lines_of(score_paths["output.jsonl"])
    }
    assert [item.index for item in scores["pairs"].data] == [0, 1]
    assert all(-1.0 <= item.score <= 1.0 for item in scores["pairs"].data)
    assert scores["texts"].data[0].score == pytest.approx(1.0, abs=1e-3)  # a text and itself
    assert scores["pairs"].usage.prompt_tokens > 0
    [line] = lines_of(rerank_paths["output.jsonl"])
    ranked = RerankResponse.model_validate(line["response"]["body"])
    assert len(ranked.results) == 2
    relevance = [result.relevance_score for result in ranked.results]
    assert relevance == sorted(relevance, reverse=True)
    assert all(documents[r.index] == r.document.text for r in ranked.results if r.document)
    assert score_batch.usage is not None and score_batch.usage.input_tokens > 0
