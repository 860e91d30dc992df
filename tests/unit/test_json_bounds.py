"""The shared JSON bounds: deep nesting and huge integers are a clear error on every path, and
the validator's two paths agree on every line near the bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_core.errors import LineError
from batch_core.fast_lines import decode_fast
from batch_core.json_bounds import MAX_JSON_DEPTH, MAX_JSON_INTEGER, bound_error
from batch_core.protocol import UnreadableShardLine, read_shard_line
from batch_core.validation import BatchValidator, iter_lines

CHAT = "/v1/chat/completions"


class Raw(bytes):
    """JSON text spliced into a line as it is (json.dumps itself cannot nest 1,000 deep)."""


def nested(depth: int) -> Raw:
    """A value `depth` levels deep (objects and arrays alternating)."""
    opening = b"".join(b"[" if level % 2 else b'{"k":' for level in range(depth))
    closing = b"".join(b"]" if level % 2 else b"}" for level in reversed(range(depth)))
    return Raw(opening + b"0" + closing)


def line_with(field: str, value: Any, custom_id: str = "c1") -> bytes:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if isinstance(value, Raw):
        body[field] = "@RAW@"
        return (
            json.dumps({"custom_id": custom_id, "body": body}).encode().replace(b'"@RAW@"', value)
        )
    body[field] = value
    return json.dumps({"custom_id": custom_id, "body": body}).encode()


def outcome(raw: bytes) -> str | None:
    """The validator's verdict on `raw` after a valid first line: None or the error code."""
    first = line_with("seed", 1, "first")
    validator = BatchValidator(endpoint=None)
    accepted = list(validator.validate(iter_lines([first + b"\n" + raw])))
    report = validator.report()
    if len(accepted) == 2:
        return None
    assert len(report.errors) == 1
    return report.errors[0].code


# The depth of a line is its own two levels (line, body) plus the field's value.
@pytest.mark.parametrize("value_depth", [1, 60, 62, 63, 64, 199, 254, 900, 1000, 1025, 5000])
@pytest.mark.parametrize("field", ["metadata", "vllm_xargs", "response_format", "tools"])
def test_nesting_past_the_bound_is_json_too_deep_on_every_path(
    field: str, value_depth: int
) -> None:
    raw = line_with(field, nested(value_depth))
    depth = value_depth + 2
    error = bound_error(raw)
    if depth <= MAX_JSON_DEPTH:
        assert error is None
        assert outcome(raw) != "json_too_deep"
    else:
        assert error is not None and error.code == "json_too_deep"
        assert outcome(raw) == "json_too_deep"
        assert decode_fast(raw, CHAT) is None
        with pytest.raises(LineError, match="levels deep"):
            BatchValidator(endpoint=None)._check_slow(raw, 1)


HUGE = [
    MAX_JSON_INTEGER,
    MAX_JSON_INTEGER + 1,
    -MAX_JSON_INTEGER,
    -MAX_JSON_INTEGER - 1,
    2**64,
    10**40,
]


@pytest.mark.parametrize("number", HUGE)
@pytest.mark.parametrize("field", ["max_tokens", "seed", "metadata", "logit_bias"])
def test_integers_past_64_bits_are_number_out_of_range(field: str, number: int) -> None:
    value: Any = {"x": number} if field in {"metadata", "logit_bias"} else number
    raw = line_with(field, value)
    within = abs(number) <= MAX_JSON_INTEGER
    error = bound_error(raw)
    assert (error is None) == within
    code = outcome(raw)
    if not within:
        assert code == "number_out_of_range"
        assert decode_fast(raw, CHAT) is None


def test_an_integer_of_5000_digits_is_refused_without_converting_it() -> None:
    raw = line_with("seed", 0).replace(b'"seed": 0', b'"seed": ' + b"7" * 5000)
    assert outcome(raw) == "number_out_of_range"
    error = bound_error(raw)
    assert error is not None and "5000 digits" in str(error)


def test_brackets_and_digits_inside_strings_do_not_count() -> None:
    text = "[" * 500 + "12345678901234567890123" + '\\"{' * 100
    raw = line_with("user", text)
    assert bound_error(raw) is None
    assert outcome(raw) is None


def test_floats_with_long_digit_runs_are_not_integers() -> None:
    for value in (1.2345678901234567e-30, 12345678901234567890.5, 1e300):
        assert bound_error(line_with("temperature", value)) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='ab[]{}"\\0123456789', max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, depth=st.integers(0, 80), field=st.sampled_from(["metadata", "user"]))
def test_both_paths_agree_near_the_bounds(value: Any, depth: int, field: str) -> None:
    for _ in range(depth):
        value = [value]
    raw = line_with(field, value)
    fast = decode_fast(raw, CHAT)
    try:
        slow = BatchValidator(endpoint=None)._check_slow(raw, 1)
    except LineError:
        assert fast is None, "the fast path accepted a line the full checks refuse"
        return
    if fast is not None:
        assert fast[0] == slow.custom_id


def test_a_shard_line_past_the_bounds_is_unreadable_not_an_exception() -> None:
    deep = b'{"line":1,"url":"/v1/chat/completions","request":{"custom_id":"x","body":' + (
        b"[" * 300 + b"]" * 300 + b"}}"
    )
    result = read_shard_line(deep, 3)
    assert isinstance(result, UnreadableShardLine)
    assert (result.line_number, result.custom_id) == (3, "x")
    assert "levels deep" in result.reason
    garbage = read_shard_line(b"\xff\xfe not json", 4)
    assert isinstance(garbage, UnreadableShardLine) and garbage.custom_id is None


def test_a_shard_line_of_an_input_line_at_the_limit_reads_back() -> None:
    line = line_with("metadata", nested(MAX_JSON_DEPTH - 2))
    assert bound_error(line) is None
    shard_line = b'{"line":1,"url":"/v1/chat/completions","request":' + line + b"}"
    result = read_shard_line(shard_line, 1)
    assert not isinstance(result, UnreadableShardLine), result
    assert result.custom_id == "c1"
