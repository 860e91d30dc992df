"""Intake rules of the Responses API and vLLM's score and rerank lines, and the fake engine's
bodies for them held against the real response models (vLLM's and the OpenAI SDK's)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch_core.media_urls import MediaPolicy
from batch_core.protocol import EngineRequest, usage_of
from batch_core.validation import BatchValidator, iter_lines
from gpu_worker.engines.fake import FakeEngine


def line(custom_id: str, url: str, **body: Any) -> bytes:
    return json.dumps({"custom_id": custom_id, "url": url, "body": {"model": "m", **body}}).encode()


def errors_of(
    *lines: bytes, media: MediaPolicy | None = None
) -> list[tuple[str | None, int | None, str | None]]:
    validator = BatchValidator(endpoint=None, **({"media": media} if media else {}))
    valid = list(validator.validate(iter_lines([b"\n".join(lines) + b"\n"])))
    report = validator.report()
    assert report.valid_requests == len(valid)
    return [(error.code, error.line, error.param) for error in report.errors]


RESPONSES_OK = [
    {"input": "Tell me about rivers.", "max_output_tokens": 32},
    {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"role": "assistant", "content": "hi"},
            {"type": "message", "role": "user", "content": "and then?"},
        ],
        "temperature": 0.5,
        "top_k": 20,  # a vLLM extension
        "store": False,
    },
]


@pytest.mark.parametrize("body", RESPONSES_OK)
def test_responses_bodies_are_accepted(body: dict[str, Any]) -> None:
    assert errors_of(line("a", "/v1/responses", **body)) == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "body.input"),
        ({"input": ""}, "body.input"),
        ({"input": []}, "body.input"),
        ({"input": [1]}, "body.input[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "body.input[0].role"),
        ({"input": [{"role": "user"}]}, "body.input[0].content"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "body.input[0].content[0].text",
        ),
        ({"input": "x", "background": True}, "body.background"),
        ({"input": "x", "previous_response_id": "resp_1"}, "body.previous_response_id"),
        ({"input": "x", "conversation": "conv_1"}, "body.conversation"),
        ({"input": "x", "stream": True}, "body.stream"),
        ({"input": "x", "max_output_tokens": 0}, "body.max_output_tokens"),
        ({"input": "x", "top_logprobs": 21}, "body.top_logprobs"),
        ({"input": "x", "temperature": 3}, "body.temperature"),
        ({"input": "x", "messages": []}, "body.messages"),  # a chat field: unrecognized
        ({"input": "x", "instructions": 5}, "body.instructions"),
    ],
)
def test_bad_responses_bodies_are_named(body: dict[str, Any], param: str) -> None:
    [(code, number, where)] = errors_of(line("a", "/v1/responses", **body))
    assert (code, number, where) == ("invalid_request", 1, param)


def test_a_responses_image_url_obeys_the_media_policy() -> None:
    image = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "http://169.254.169.254/latest/meta-data"},
        ],
    }
    [error] = errors_of(line("a", "/v1/responses", input=[image]))
    assert error == ("media_url_refused", 1, "body.input[0].content[1].image_url")
    inline = {
        **image,
        "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}],
    }
    assert errors_of(line("a", "/v1/responses", input=[inline])) == []


@pytest.mark.parametrize(
    "body",
    [
        {"queries": "what is a river", "documents": ["water", "metal"]},
        {"queries": ["a", "b"], "documents": ["c", "d"]},
        {"text_1": "a", "text_2": "b"},
        {"data_1": "a", "data_2": ["b", "c"]},
        {"queries": "q", "items": ["x"], "truncate_prompt_tokens": 64},
    ],
)
def test_score_bodies_are_accepted(body: dict[str, Any]) -> None:
    assert errors_of(line("a", "/v1/score", **body)) == []


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/score", {}, "body.queries"),
        ("/v1/score", {"queries": "q"}, "body.documents"),
        ("/v1/score", {"queries": "q", "documents": []}, "body.documents"),
        ("/v1/score", {"queries": 3, "documents": ["d"]}, "body.queries"),
        ("/v1/score", {"queries": "q", "documents": ["d"], "input": "x"}, "body.input"),
        ("/v1/rerank", {"documents": ["d"]}, "body.query"),
        ("/v1/rerank", {"query": "q"}, "body.documents"),
        ("/v1/rerank", {"query": "q", "documents": []}, "body.documents"),
        ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": -1}, "body.top_n"),
        ("/v1/rerank", {"query": ["q"], "documents": ["d"]}, "body.query"),
    ],
)
def test_bad_pooling_bodies_are_named(url: str, body: dict[str, Any], param: str) -> None:
    [(code, number, where)] = errors_of(line("a", url, **body))
    assert (code, number, where) == ("invalid_request", 1, param)


def test_pooling_lines_budget_no_output_tokens_and_responses_their_limit() -> None:
    validator = BatchValidator(endpoint=None)
    [score] = validator.validate(
        iter_lines([line("a", "/v1/score", text_1="x", text_2="y") + b"\n"])
    )
    assert score.output_tokens == 0
    validator = BatchValidator(endpoint=None)
    [response] = validator.validate(
        iter_lines([line("a", "/v1/responses", input="x", max_output_tokens=48) + b"\n"])
    )
    assert response.output_tokens == 48


def test_the_fake_engine_answers_as_the_real_response_models_read() -> None:
    pytest.importorskip("vllm")
    from openai.types.responses import Response
    from vllm.entrypoints.pooling.scoring.protocol import RerankResponse, ScoreResponse

    engine = FakeEngine("m")
    requests = [
        EngineRequest(
            custom_id="r",
            url="/v1/responses",
            body={"model": "m", "input": "a b c", "max_output_tokens": 2},
        ),
        EngineRequest(
            custom_id="s",
            url="/v1/score",
            body={"model": "m", "queries": "a b", "documents": ["a b", "c"]},
        ),
        EngineRequest(
            custom_id="k",
            url="/v1/rerank",
            body={"model": "m", "query": "a", "documents": ["b", "a", "a c"], "top_n": 2},
        ),
    ]
    results = {result.custom_id: result for result in engine.run(requests)}
    response = Response.model_validate(results["r"].body)
    assert response.output_text and response.usage is not None
    assert usage_of(results["r"].body) == (response.usage.input_tokens, 0, 2)
    score = ScoreResponse.model_validate(results["s"].body)
    assert [item.score for item in score.data] == [1.0, 0.0]
    rerank = RerankResponse.model_validate(results["k"].body)
    assert [item.index for item in rerank.results] == [1, 2]
