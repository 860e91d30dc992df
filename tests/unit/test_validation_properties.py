"""Property-based: random and mutated lines never crash or hang the validator, and every line
is accounted for exactly once (a request or an error) under its own 1-based number."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_core.fast_lines import decode_fast
from batch_core.validation import BatchValidator, ValidationLimits, iter_lines

MODEL = "m"


def chat(custom_id: str, **body: Any) -> bytes:
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body},
    }
    return json.dumps(line).encode()


# Lines whose outcome is known: (kind, expected code or None for a valid request).
LABELLED: dict[str, str | None] = {
    "valid": None,
    "duplicate": "duplicate_custom_id",
    "not_json": "invalid_json_line",
    "not_object": "invalid_json_line",
    "no_custom_id": "missing_custom_id",
    "bad_method": "invalid_method",
    "bad_url": "unsupported_endpoint",
    "other_url": "url_mismatch",
    "no_body": "missing_body",
    "other_model": "model_mismatch",
    "stream": "invalid_request",
    "bad_n": "invalid_request",
    "unknown_field": "invalid_request",
    "bad_utf8": "invalid_encoding",
    "too_large": "line_too_large",
}
MAX_LINE = 400


def labelled_line(kind: str, n: int, seen: list[str]) -> bytes:
    cid = f"id{n}"
    if kind == "duplicate":
        return chat(seen[n % len(seen)])
    return {
        "valid": lambda: chat(cid),
        "not_json": lambda: b'{"custom_id": ' + cid.encode(),
        "not_object": lambda: json.dumps([cid]).encode(),
        "no_custom_id": lambda: json.dumps({"body": {"model": MODEL}}).encode(),
        "bad_method": lambda: chat(cid).replace(b'"POST"', b'"PUT"'),
        "bad_url": lambda: chat(cid).replace(b"/v1/chat/completions", b"/v1/moderations"),
        "other_url": lambda: chat(cid).replace(b"/v1/chat/completions", b"/v1/embeddings"),
        "no_body": lambda: json.dumps({"custom_id": cid}).encode(),
        "other_model": lambda: chat(cid).replace(b'"model": "m"', b'"model": "m2"'),
        "stream": lambda: chat(cid, stream=True),
        "bad_n": lambda: chat(cid, n=0),
        "unknown_field": lambda: chat(cid, max_token=3),
        "bad_utf8": lambda: b'{"custom_id": "\xc3\x28"}',
        "too_large": lambda: chat(cid, user="u" * MAX_LINE),
    }[kind]()


no_newline = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" "))
mutation = st.tuples(
    st.integers(0, 10_000),
    st.sampled_from(["flip", "cut", "drop"]),
    st.binary(min_size=1, max_size=3),
)
line_spec = st.one_of(
    st.tuples(st.just("labelled"), st.sampled_from(sorted(LABELLED))),
    st.tuples(st.just("random"), no_newline),
    st.tuples(st.just("mutated"), mutation),
    st.tuples(st.just("blank"), st.sampled_from([b"", b"  ", b"\t"])),
)


def mutate(line: bytes, spec: tuple[int, str, bytes]) -> bytes:
    at, how, junk = spec
    at %= len(line)
    if how == "flip":
        out = line[:at] + junk + line[at + len(junk) :]
    elif how == "cut":
        out = line[:at]
    else:
        out = line[:at] + line[at + 1 :]
    return out.replace(b"\n", b" ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(line_spec, min_size=5, max_size=60),
    chunk_size=st.integers(1, 512),
    crlf=st.booleans(),
)
def test_every_line_is_a_request_or_exactly_one_error(
    specs: list[tuple[str, Any]], chunk_size: int, crlf: bool
) -> None:
    lines: list[bytes] = [chat("id0")]  # the first line fixes the batch's endpoint and model
    expected: dict[int, str | None] = {1: None}  # line number -> known outcome
    unknown: set[int] = set()
    seen = ["id0"]
    for n, (kind, payload) in enumerate(specs, start=1):
        number = len(lines) + 1
        if kind == "labelled":
            line = labelled_line(payload, n, seen)
            expected[number] = LABELLED[payload]
            if payload == "valid":
                seen.append(f"id{n}")
        elif kind == "blank":
            line = payload
        elif kind == "random":
            line = payload
            unknown.add(number)
        else:
            line = mutate(chat(f"mut{n}"), payload)
            unknown.add(number)
        lines.append(line)
    data = (b"\r\n" if crlf else b"\n").join(lines)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    validator = BatchValidator(
        endpoint=None,
        limits=ValidationLimits(max_line_bytes=MAX_LINE, max_reported_errors=10_000),
    )
    valid = [request.line for request in validator.validate(iter_lines(chunks, MAX_LINE))]
    report = validator.report()
    errors = {error.line: error.code for error in report.errors}

    assert valid == sorted(valid), "requests come out in file order"
    assert len(errors) == len(report.errors) == report.error_count, "one error per bad line"
    assert not set(valid) & set(errors), "a line is either a request or an error"
    nonblank = {i for i, line in enumerate(lines, start=1) if line.strip()}
    assert set(valid) | set(errors) == nonblank, "no line is lost or invented"
    for number, code in expected.items():
        if code is None:
            assert number in valid, (number, errors.get(number))
        else:
            assert errors.get(number) == code, (number, lines[number - 1])


@settings(max_examples=500, deadline=None)
@given(
    spec=st.one_of(
        st.tuples(st.just("random"), no_newline), st.tuples(st.just("mutated"), mutation)
    )
)
def test_the_fast_path_accepts_nothing_the_full_checks_refuse(spec: tuple[str, Any]) -> None:
    kind, payload = spec
    source = chat("src", temperature=0.5, max_tokens=9, stop=["x"])
    raw = payload if kind == "random" else mutate(source, payload)
    fast = decode_fast(raw, "/v1/chat/completions")
    if fast is None:
        return
    validator = BatchValidator(endpoint="/v1/chat/completions")
    slow = validator._check_slow(raw, 1)  # raises LineError if the full checks refuse it
    assert (slow.custom_id, slow.prompt_chars, slow.prefix) == fast[:1] + fast[2:4]
    assert (slow.output_tokens, slow.choices) == fast[4:]


def test_fast_and_full_paths_agree_on_valid_lines() -> None:
    system = {"role": "system", "content": "shared preamble"}
    bodies: list[dict[str, Any]] = [
        {"messages": [system, {"role": "user", "content": "hi"}], "n": 2, "max_tokens": 5},
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7},
        {
            "messages": [
                system,
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "b"},
            ]
        },
    ]
    for index, extra in enumerate(bodies):
        raw = chat(f"c{index}", **extra)
        fast = decode_fast(raw, "/v1/chat/completions")
        assert fast is not None
        slow = BatchValidator(endpoint=None)._check_slow(raw, 1)
        assert (slow.custom_id, slow.prompt_chars, slow.prefix) == fast[:1] + fast[2:4]
        assert (slow.output_tokens, slow.choices) == fast[4:]
