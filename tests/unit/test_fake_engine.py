"""The fake engine answers any `max_tokens` as vLLM's serving layer does: clamped to the room
the context leaves after the prompt, never allocating by the number asked for (issue 25,
finding 15: 2^63-1 killed it, and the local worker running it)."""

from __future__ import annotations

from typing import Any

import pytest

from batch_core.protocol import EngineRequest
from gpu_worker.engines.fake import FakeEngine

HUGE = 2**63 - 1
CONTEXT = 64


def request(url: str, custom_id: str = "r", **fields: Any) -> EngineRequest:
    body: dict[str, Any] = {"model": "m", **fields}
    if url == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "four words of prompt"}]
    elif url == "/v1/completions":
        body["prompt"] = "four words of prompt"
    else:
        body["input"] = "four words of prompt"
    return EngineRequest(custom_id=custom_id, url=url, body=body)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/chat/completions", "max_tokens"),
        ("/v1/chat/completions", "max_completion_tokens"),
        ("/v1/completions", "max_tokens"),
        ("/v1/responses", "max_output_tokens"),
    ],
)
@pytest.mark.parametrize("asked", [HUGE, 10**12, CONTEXT])
def test_max_tokens_is_clamped_to_the_room_the_context_leaves(
    url: str, field: str, asked: int
) -> None:
    engine = FakeEngine("m", max_model_len=CONTEXT)
    result = engine.answer(request(url, **{field: asked}))
    assert result.status_code == 200, result.body
    usage = result.body["usage"]
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    output = usage.get("completion_tokens", usage.get("output_tokens"))
    assert prompt == 4 and output == CONTEXT - 4  # the whole room, and no more
    if url == "/v1/responses":
        assert result.body["status"] == "incomplete"
    else:
        assert result.body["choices"][0]["finish_reason"] == "length"


def test_a_short_answer_still_stops() -> None:
    engine = FakeEngine("m", max_model_len=CONTEXT)
    result = engine.answer(request("/v1/chat/completions", max_tokens=3))
    assert result.body["usage"]["completion_tokens"] == 3
    body = engine.answer(request("/v1/chat/completions", max_tokens=30)).body
    assert body["usage"]["completion_tokens"] == 30
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "12", True])
def test_a_max_tokens_that_is_no_count_is_a_400_for_that_request_alone(bad: object) -> None:
    engine = FakeEngine("m", max_model_len=CONTEXT)
    results = list(
        engine.run(
            [
                request("/v1/chat/completions", "bad", max_tokens=bad),
                request("/v1/chat/completions", "huge", max_tokens=HUGE),
                request("/v1/chat/completions", "fine", max_tokens=5),
            ]
        )
    )
    assert [(r.custom_id, r.status_code) for r in results] == [
        ("bad", 400),
        ("huge", 200),
        ("fine", 200),
    ]
    assert results[0].body["error"]["param"] == "max_tokens"


def test_a_null_max_tokens_is_not_given() -> None:
    engine = FakeEngine("m", max_model_len=CONTEXT)
    result = engine.answer(request("/v1/chat/completions", max_tokens=None))
    assert result.status_code == 200 and result.body["usage"]["completion_tokens"] == 16
