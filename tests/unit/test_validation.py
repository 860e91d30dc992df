"""Streaming validation: each bad line is named with its 1-based number, code and param."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch_core.validation import (
    BatchValidator,
    ValidationLimits,
    custom_id_digest,
    iter_lines,
)


def chat_line(
    custom_id: str, *, model: str = "m", url: str | None = "/v1/chat/completions", **body: Any
) -> bytes:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
    }
    if url is not None:
        line["url"] = url
    return json.dumps(line).encode()


def run(lines: list[bytes], **kwargs: Any) -> tuple[list[Any], Any]:
    validator = BatchValidator(endpoint=kwargs.pop("endpoint", None), **kwargs)
    data = b"\n".join(lines) + b"\n"
    valid = list(validator.validate(iter_lines([data])))
    return valid, validator.report()


def only_error(report: Any) -> tuple[str | None, int | None, str | None]:
    assert report.error_count == 1, report.errors
    error = report.errors[0]
    return error.code, error.line, error.param


def test_valid_file_yields_every_request_with_its_line() -> None:
    valid, report = run([chat_line("a"), chat_line("b"), chat_line("c")])
    assert report.ok
    assert [(r.custom_id, r.line) for r in valid] == [("a", 1), ("b", 2), ("c", 3)]
    assert report.endpoint == "/v1/chat/completions"
    assert report.model == "m"
    assert report.valid_requests == 3


@pytest.mark.parametrize(
    ("bad_line", "code", "param"),
    [
        (b"{not json", "invalid_json_line", None),
        (b"[1, 2]", "invalid_json_line", None),
        (
            json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}).encode(),
            "missing_custom_id",
            "custom_id",
        ),
        (json.dumps({"custom_id": 7, "body": {}}).encode(), "missing_custom_id", "custom_id"),
        (chat_line("a"), "duplicate_custom_id", "custom_id"),
        (chat_line("x", url="/v1/embeddings"), "url_mismatch", "url"),
        (chat_line("x", url="/v1/images"), "unsupported_endpoint", "url"),
        (
            json.dumps(
                {"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}
            ).encode(),
            "invalid_method",
            "method",
        ),
        (
            json.dumps({"custom_id": "x", "url": "/v1/chat/completions"}).encode(),
            "missing_body",
            "body",
        ),
        (json.dumps({"custom_id": "x", "body": "text"}).encode(), "missing_body", "body"),
        (chat_line("x", model="other"), "model_mismatch", "body.model"),
        (chat_line("x", stream=True), "invalid_request", "body.stream"),
        (chat_line("x", max_tokens=0), "invalid_request", "body.max_tokens"),
        (
            json.dumps({"custom_id": "x", "body": {"model": "m", "messages": []}}).encode(),
            "invalid_request",
            "body.messages",
        ),
        (
            json.dumps(
                {"custom_id": "x", "body": {"model": "m", "messages": [{"role": "robot"}]}}
            ).encode(),
            "invalid_request",
            "body.messages[0].role",
        ),
        (
            json.dumps(
                {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "hi"}]}}
            ).encode(),
            "invalid_request",
            "body.model",
        ),
        (
            json.dumps(
                {
                    "custom_id": "x",
                    "extra": 1,
                    "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                }
            ).encode(),
            "invalid_request",
            "extra",
        ),
        (b"\xff\xfe{}", "invalid_encoding", None),
        (chat_line("x", max_completion_tokens=-5), "invalid_request", "body.max_completion_tokens"),
        (chat_line("x", max_tokens=2.5), "invalid_request", "body.max_tokens"),
        (chat_line("x", n=0), "invalid_request", "body.n"),
        (chat_line("x", n=129), "invalid_request", "body.n"),
        (chat_line("x", temperature=2.5), "invalid_request", "body.temperature"),
        (chat_line("x", temperature="hot"), "invalid_request", "body.temperature"),
        (chat_line("x", top_p=1.5), "invalid_request", "body.top_p"),
        (chat_line("x", presence_penalty=-3), "invalid_request", "body.presence_penalty"),
        (chat_line("x", seed="1"), "invalid_request", "body.seed"),
        (chat_line("x", stop=[1, 2]), "invalid_request", "body.stop"),
        (chat_line("x", max_token=10), "invalid_request", "body.max_token"),
        (
            chat_line("x", response_format={"type": "yaml"}),
            "invalid_request",
            "body.response_format.type",
        ),
        (
            chat_line("x", response_format={"type": "json_schema"}),
            "invalid_request",
            "body.response_format.json_schema",
        ),
        (
            chat_line("x", messages=[{"role": "user", "content": 42}]),
            "invalid_request",
            "body.messages[0].content",
        ),
        (
            chat_line("x", messages=[{"role": "user"}]),
            "invalid_request",
            "body.messages[0].content",
        ),
        (
            chat_line("x", messages=[{"role": "user", "content": [{"type": "sound"}]}]),
            "invalid_request",
            "body.messages[0].content[0].type",
        ),
        (
            chat_line("x", messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "invalid_request",
            "body.messages[0].content[0].text",
        ),
        (
            chat_line(
                "x",
                messages=[
                    {"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "image_url", "image_url": "u"}]},
                ],
            ),
            "invalid_request",
            "body.messages[1].content[0].image_url",
        ),
        (
            chat_line("x", messages=[{"role": "tool", "content": "42"}]),
            "invalid_request",
            "body.messages[0].tool_call_id",
        ),
        (b'{"custom_id": "x", "body": {"model": "m", "v": NaN}}', "invalid_json_line", None),
    ],
)
def test_bad_line_is_reported_with_its_number(
    bad_line: bytes, code: str, param: str | None
) -> None:
    valid, report = run([chat_line("a"), chat_line("b"), bad_line, chat_line("c")])
    assert only_error(report) == (code, 3, param)
    assert [r.custom_id for r in valid] == ["a", "b", "c"]


def test_every_bad_line_is_reported_not_only_the_first() -> None:
    _, report = run([b"{", chat_line("a"), b"oops", chat_line("a")])
    assert [(e.code, e.line) for e in report.errors] == [
        ("invalid_json_line", 1),
        ("invalid_json_line", 3),
        ("duplicate_custom_id", 4),
    ]


def test_model_not_served_is_model_not_found() -> None:
    _, report = run([chat_line("a", model="gpt-9")], served_models=["demo-model"])
    assert only_error(report) == ("model_not_found", 1, "body.model")


def test_blank_lines_are_skipped_but_counted() -> None:
    valid, report = run([chat_line("a"), b"", b"   ", chat_line("b")])
    assert report.ok
    assert [r.line for r in valid] == [1, 4]


def test_bom_and_crlf_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + chat_line("a") + b"\r\n" + chat_line("b") + b"\r\n"
    validator = BatchValidator(endpoint=None)
    valid = list(validator.validate(iter_lines([data])))
    assert validator.report().ok
    assert [r.custom_id for r in valid] == ["a", "b"]


def test_lines_split_across_chunks_keep_their_numbers() -> None:
    data = chat_line("a") + b"\n" + chat_line("b") + b"\n" + chat_line("c")
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert [n for n, _ in iter_lines(chunks)] == [1, 2, 3]
    assert b"".join(line + b"\n" for _, line in iter_lines(chunks)) == data + b"\n"


def test_empty_file() -> None:
    _, report = run([b""])
    assert only_error(report) == ("empty_file", None, None)


def test_url_may_be_omitted_and_the_batch_endpoint_applies() -> None:
    valid, report = run([chat_line("a", url=None)], endpoint="/v1/chat/completions")
    assert report.ok
    assert valid[0].url == "/v1/chat/completions"


def test_too_many_requests_and_too_large_lines() -> None:
    limits = ValidationLimits(max_requests=2, max_line_bytes=200)
    big = chat_line("big", temperature=0.5, user="x" * 300)
    _, report = run([chat_line("a"), chat_line("b"), chat_line("c"), big], limits=limits)
    assert [(e.code, e.line) for e in report.errors] == [
        ("too_many_requests", 3),
        ("line_too_large", 4),
    ]


def test_reported_errors_are_capped_but_all_counted() -> None:
    limits = ValidationLimits(max_reported_errors=5)
    _, report = run([b"{"] * 12, limits=limits)
    assert report.error_count == 12
    assert len(report.errors) == 5


def test_completions_and_embeddings_bodies() -> None:
    completion = json.dumps(
        {"custom_id": "a", "url": "/v1/completions", "body": {"model": "m", "prompt": "x"}}
    ).encode()
    missing_prompt = json.dumps(
        {"custom_id": "b", "url": "/v1/completions", "body": {"model": "m"}}
    ).encode()
    _, report = run([completion, missing_prompt])
    assert only_error(report) == ("invalid_request", 2, "body.prompt")
    embedding = json.dumps(
        {"custom_id": "a", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    ).encode()
    missing_input = json.dumps(
        {"custom_id": "b", "url": "/v1/embeddings", "body": {"model": "m"}}
    ).encode()
    _, report = run([embedding, missing_input])
    assert only_error(report) == ("invalid_request", 2, "body.input")


def test_an_endless_line_is_cut_while_streaming_and_reported_too_large() -> None:
    limit = 300
    chunks = [chat_line("a") + b"\n", *([b"x" * 64] * 1000), b"\n", chat_line("b") + b"\n"]
    lines = list(iter_lines(chunks, max_line_bytes=limit))
    assert [n for n, _ in lines] == [1, 2, 3]
    assert len(lines[1][1]) == limit + 1  # the 64 kB line was never held whole
    validator = BatchValidator(endpoint=None, limits=ValidationLimits(max_line_bytes=limit))
    assert [r.custom_id for r in validator.validate(lines)] == ["a", "b"]
    assert only_error(validator.report()) == ("line_too_large", 2, None)


def test_cut_lines_keep_every_other_line_intact_across_chunk_boundaries() -> None:
    data = chat_line("a") + b"\n" + b"y" * 500 + b"\n" + chat_line("b")
    for size in (1, 7, 64, 1000):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        lines = list(iter_lines(chunks, max_line_bytes=300))
        assert [line for _, line in lines] == [chat_line("a"), b"y" * 301, chat_line("b")]


def test_accepted_bodies_pass_untouched() -> None:
    lines = [
        chat_line(
            "a",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
                {"role": "tool", "tool_call_id": "t", "content": "42"},
            ],
            temperature=0,
            top_p=1,
            n=2,
            stop=["\n"],
            seed=7,
            top_k=20,  # a vLLM extension
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            max_completion_tokens=16,
        ),
    ]
    valid, report = run(lines)
    assert report.ok, report.errors
    assert json.loads(valid[0].request_json) == json.loads(lines[0])
    assert valid[0].prompt_chars == len("be brief") + len("hi") + len("42")
    assert valid[0].prefix != 0  # it has leading messages before the last one
    assert (valid[0].output_tokens, valid[0].choices) == (32, 2)


def test_requests_with_the_same_preamble_share_a_prefix_digest() -> None:
    system = {"role": "system", "content": "You are a translator."}
    lines = [
        chat_line("a", messages=[system, {"role": "user", "content": "one"}]),
        chat_line("b", messages=[system, {"role": "user", "content": "two"}]),
        chat_line("c", messages=[{"role": "system", "content": "other"}, system]),
        chat_line("d"),
    ]
    valid, report = run(lines)
    assert report.ok
    prefixes = [v.prefix for v in valid]
    assert prefixes[0] == prefixes[1] != prefixes[2]
    assert prefixes[3] == 0


def test_rejected_lines_reach_the_callback_with_their_custom_id() -> None:
    seen: list[Any] = []
    validator = BatchValidator(
        endpoint=None, limits=ValidationLimits(max_reported_errors=1), on_rejected=seen.append
    )
    data = b"\n".join([chat_line("a"), b"{broken", chat_line("a"), chat_line("b", n=0)])
    valid = list(validator.validate(iter_lines([data])))
    assert [v.custom_id for v in valid] == ["a"]
    assert [(r.line, r.custom_id, r.error.code) for r in seen] == [
        (2, None, "invalid_json_line"),
        (3, "a", "duplicate_custom_id"),
        (4, "b", "invalid_request"),
    ]
    report = validator.report()
    assert (report.error_count, len(report.errors), report.rejected_lines) == (3, 1, 3)
    assert not report.file_error


def test_too_many_requests_is_an_error_about_the_whole_file() -> None:
    _, report = run([chat_line(str(i)) for i in range(4)], limits=ValidationLimits(max_requests=3))
    assert report.file_error
    assert report.valid_requests == 3


def test_custom_id_digests_are_64_bit_and_distinct() -> None:
    digests = {custom_id_digest(f"request-{i}") for i in range(100_000)}
    assert len(digests) == 100_000
    assert all(0 <= digest < 2**64 for digest in digests)
