"""Every shape of a request body that carries a URL a worker would fetch, walked by one
function (`media_urls.media_urls_of`) at intake and in the worker: each of the 18 shapes
with an internal URL is refused at intake, naming where the URL sits, and the same shape
with an inline or allowed URL is accepted (the URL is refused, not the shape)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from batch_core.media_urls import MediaPolicy, media_urls_of
from batch_core.validation import BatchValidator, iter_lines

INTERNAL_URL = "http://169.254.169.254/latest/meta-data/"
ALLOWED_URL = "https://images.example.com/cat.png"
INLINE_URL = "data:image/png;base64,iVBORw0KGgo="
POLICY = MediaPolicy.of(["images.example.com"])


@dataclass(frozen=True)
class Shape:
    name: str
    endpoint: str
    body: Callable[[str], dict[str, Any]]  # the body (without its model) around one URL
    param: str  # where intake and the worker say the URL is


def _chat(part: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "text", "text": "what is this?"}, part]
    return {"messages": [{"role": "user", "content": content}]}


def _responses(part: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "input_text", "text": "what is this?"}, part]
    return {"input": [{"role": "user", "content": content}]}


def _after_a_message(item: dict[str, Any]) -> dict[str, Any]:
    return {"input": [{"role": "user", "content": "look"}, item]}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


SHAPES = [
    Shape("chat image_url part", "/v1/chat/completions",
          lambda u: _chat(_image(u)), "body.messages[0].content[1].image_url.url"),
    Shape("chat video_url as a string (vLLM's simple form)", "/v1/chat/completions",
          lambda u: _chat({"type": "video_url", "video_url": u}),
          "body.messages[0].content[1].video_url"),
    Shape("chat audio_url part", "/v1/chat/completions",
          lambda u: _chat({"type": "audio_url", "audio_url": {"url": u}}),
          "body.messages[0].content[1].audio_url.url"),
    Shape("chat input_image part", "/v1/chat/completions",
          lambda u: _chat({"type": "input_image", "image_url": u}),
          "body.messages[0].content[1].image_url"),
    Shape("chat file part", "/v1/chat/completions",
          lambda u: _chat({"type": "file", "file": {"file_url": u}}),
          "body.messages[0].content[1].file.file_url"),
    # A part with a uuid is read by its keys, whatever its type says (vLLM's chat_utils).
    Shape("chat part read by its uuid, not its type", "/v1/chat/completions",
          lambda u: _chat({"type": "text", "text": "x", "uuid": "u1", "video_url": {"url": u}}),
          "body.messages[0].content[1].video_url.url"),
    Shape("chat-style embeddings messages", "/v1/embeddings",
          lambda u: {"messages": [{"role": "user", "content": [_image(u)]}]},
          "body.messages[0].content[0].image_url.url"),
    Shape("responses input_image", "/v1/responses",
          lambda u: _responses({"type": "input_image", "image_url": u}),
          "body.input[0].content[1].image_url"),
    Shape("responses input_image, object form", "/v1/responses",
          lambda u: _responses({"type": "input_image", "image_url": {"url": u}}),
          "body.input[0].content[1].image_url.url"),
    Shape("responses input_file", "/v1/responses",
          lambda u: _responses({"type": "input_file", "file_url": u}),
          "body.input[0].content[1].file_url"),
    Shape("responses role-less tool output item", "/v1/responses",
          lambda u: _after_a_message({"type": "function_call_output", "call_id": "c1",
                                      "output": [{"type": "input_image", "image_url": u}]}),
          "body.input[1].output[0].image_url"),
    Shape("responses computer screenshot output", "/v1/responses",
          lambda u: _after_a_message({"type": "computer_call_output", "call_id": "c1",
                                      "output": {"type": "computer_screenshot", "image_url": u}}),
          "body.input[1].output.image_url"),
    Shape("responses role-less input part as an item", "/v1/responses",
          lambda u: _after_a_message({"type": "input_image", "image_url": u}),
          "body.input[1].image_url"),
    Shape("responses mcp tool server_url", "/v1/responses",
          lambda u: {"input": "hi", "tools": [{"type": "mcp", "server_label": "s",
                                               "server_url": u}]},
          "body.tools[0].server_url"),
    Shape("score queries content object", "/v1/score",
          lambda u: {"queries": [{"content": [_image(u)]}], "items": ["an item"]},
          "body.queries[0].content[0].image_url.url"),
    Shape("score text_1 content object", "/v1/score",
          lambda u: {"text_1": {"content": [{"type": "video_url", "video_url": {"url": u}}]},
                     "text_2": "a text"},
          "body.text_1.content[0].video_url.url"),
    Shape("rerank query content object", "/v1/rerank",
          lambda u: {"query": {"content": [_image(u)]}, "documents": ["a document"]},
          "body.query.content[0].image_url.url"),
    Shape("rerank documents content object", "/v1/rerank",
          lambda u: {"query": "a query", "documents": ["a", {"content": [_image(u)]}]},
          "body.documents[1].content[0].image_url.url"),
]  # fmt: skip


def shape_line(shape: Shape, url: str, model: str = "m", custom_id: str = "c") -> dict[str, Any]:
    body = {"model": model, **shape.body(url)}
    return {"custom_id": custom_id, "method": "POST", "url": shape.endpoint, "body": body}


def intake_errors(shape: Shape, url: str) -> list[tuple[str | None, str | None]]:
    validator = BatchValidator(endpoint=None, media=POLICY)
    raw = json.dumps(shape_line(shape, url)).encode()
    list(validator.validate(iter_lines([raw + b"\n"])))
    return [(error.code, error.param) for error in validator.report().errors]


def test_the_table_has_the_18_shapes() -> None:
    assert len(SHAPES) == 18 == len({shape.name for shape in SHAPES})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_intake_refuses_an_internal_url_in_every_shape(shape: Shape) -> None:
    assert intake_errors(shape, INTERNAL_URL) == [("media_url_refused", shape.param)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
@pytest.mark.parametrize("url", [INLINE_URL, ALLOWED_URL])
def test_the_same_shape_with_an_inline_or_allowed_url_is_accepted(shape: Shape, url: str) -> None:
    assert intake_errors(shape, url) == []


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_the_walk_finds_the_one_url_of_every_shape(shape: Shape) -> None:
    body = shape.body(INTERNAL_URL)
    assert list(media_urls_of(body, shape.endpoint)) == [(INTERNAL_URL, shape.param)]
    # A shard line's url is trusted no more than its body: an unknown one walks every shape.
    assert list(media_urls_of(body, "/v1/unknown")) == [(INTERNAL_URL, shape.param)]


def test_the_walk_survives_any_json_and_finds_nothing_in_plain_text() -> None:
    odd: list[Any] = [None, 1, "x", [], {}, [None], {"content": 5}, {"content": [1, "x", None]}]
    for endpoint in ("/v1/chat/completions", "/v1/responses", "/v1/score", "/v1/rerank", None):
        for value in odd:
            fields = ("messages", "input", "tools", "queries", "query", "documents", "text_1")
            assert list(media_urls_of(dict.fromkeys(fields, value), endpoint)) == []
    plain = {"messages": [{"role": "user", "content": "see https://example.com/x.png"}]}
    assert list(media_urls_of(plain, "/v1/chat/completions")) == []


def test_a_tenant_quoted_host_is_bounded_in_the_refusal() -> None:
    host = "a" * 300_000 + ".example.com"
    reason = POLICY.refusal(f"https://{host}/x.png")
    assert reason is not None and host not in reason and len(reason) < 400
