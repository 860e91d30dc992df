"""Issue 25, finding 3: whatever a line holds, the errors it earns stay small.

Validation messages once quoted the input whole (a custom_id, a field's name, the method, the
url, the model): one line with a 500 KB field name made an error larger than DynamoDB's
400 KB item, so intake failed on every attempt and the real error was lost. Every quoted value
is now cut (`request_schema.quoted`), every message and param has a ceiling (`validation`),
and the list stored on the batch keeps to a byte budget (`validation.stored_errors`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch_core.models import BatchError, BatchErrors
from batch_core.request_schema import QUOTE_CHARS, clipped, quoted
from batch_core.validation import (
    MAX_MESSAGE_CHARS,
    MAX_PARAM_CHARS,
    STORED_ERRORS_BYTES,
    BatchValidator,
    RejectedLine,
    iter_lines,
    stored_errors,
)

HUGE = 500 * 1024
BIG = "x" * HUGE


def line(custom_id: str = "a", *, top: dict[str, Any] | None = None, **body: Any) -> bytes:
    fields: dict[str, Any] = {
        "custom_id": custom_id,
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
    }
    return json.dumps({**fields, **(top or {})}).encode()


def chat(**body: Any) -> bytes:
    return line(**body)


# Each a file whose errors once quoted a 500 KB value, with the param its error names.
HOSTILE: dict[str, tuple[list[bytes], str | None]] = {
    "field name on the line": ([line(top={BIG: 1})], None),
    "field name in the body": ([chat(**{BIG: 1})], None),
    "duplicate custom_id": ([line(BIG), line(BIG)], "custom_id"),
    "method": ([line(top={"method": BIG})], "method"),
    "url": ([line(top={"url": "/v1/" + BIG})], "url"),
    "url of another endpoint": (
        [line("a"), line("b", top={"url": "/v1/embeddings"}), line("c", top={"url": BIG})],
        "url",
    ),
    "model not served": ([line(top={"body": {"model": BIG, "messages": []}})], "body.model"),
    "role": ([chat(messages=[{"role": BIG, "content": "hi"}])], "body.messages[0].role"),
    "content part type": (
        [chat(messages=[{"role": "user", "content": [{"type": BIG}]}])],
        "body.messages[0].content[0].type",
    ),
    "max_tokens as a long list": ([chat(max_tokens=list(range(100_000)))], "body.max_tokens"),
    "temperature as a long string": ([chat(temperature=BIG)], "body.temperature"),
    "responses input role": (
        [
            json.dumps(
                {
                    "custom_id": "r",
                    "url": "/v1/responses",
                    "body": {"model": "m", "input": [{"role": BIG, "content": "x"}]},
                }
            ).encode()
        ],
        None,
    ),
    "media url": (
        [
            chat(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x.test/" + BIG}}
                        ],
                    }
                ]
            )
        ],
        None,
    ),
}


def errors_of(lines: list[bytes], **options: Any) -> tuple[list[BatchError], list[RejectedLine]]:
    rejected: list[RejectedLine] = []
    validator = BatchValidator(endpoint=None, on_rejected=rejected.append, **options)
    for _ in validator.validate(iter_lines([b"\n".join(lines) + b"\n"])):
        pass
    return validator.report().errors, rejected


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_no_error_quotes_a_huge_value_whole(case: str) -> None:
    lines, param = HOSTILE[case]
    errors, rejected = errors_of(lines, served_models=["m"] if "served" in case else ())
    assert errors, case
    for error in errors:
        assert len(error.message or "") <= MAX_MESSAGE_CHARS, (case, len(error.message or ""))
        assert len(error.param or "") <= MAX_PARAM_CHARS, (case, len(error.param or ""))
        assert len(error.model_dump_json()) < 2 * 1024, case
    # The error file's lines (skip mode) carry the same bounded error.
    assert [r.error for r in rejected] == [e for e in errors if e.line is not None]
    if param is not None:
        assert errors[-1].param == param, errors[-1]


def test_a_quoted_value_keeps_its_start_and_says_how_long_it_was() -> None:
    errors, _ = errors_of([line(BIG), line(BIG)])
    message = errors[0].message or ""
    assert errors[0].code == "duplicate_custom_id"
    assert message.startswith("The custom_id 'xxxx")
    assert f"…({HUGE} bytes)" in message
    assert message.endswith("appears more than once in the file.")
    # A field name: its start in the message and in the param, both cut.
    errors, _ = errors_of([chat(**{"y" * 1000: 1})])
    assert errors[0].message is not None and "yyyy" in errors[0].message
    assert errors[0].param is not None and errors[0].param.startswith("body.yyyy")
    assert "…(1000 bytes)" in errors[0].param


def test_quoting_leaves_short_values_as_they_were() -> None:
    assert quoted("abc") == "'abc'"
    assert quoted(None) == "None"
    assert quoted([1, 2]) == "[1, 2]"
    assert clipped("body.messages") == "body.messages"
    cut = quoted("é" * 1000)
    assert cut.startswith("'" + "é" * QUOTE_CHARS + "'")
    assert cut.endswith("…(2000 bytes)")  # bytes as UTF-8, what the input held
    assert len(quoted(list(range(10_000)))) < QUOTE_CHARS + 40


def test_stored_errors_keep_to_the_byte_budget_and_count_the_rest() -> None:
    errors = [
        BatchError(code="invalid_request", line=i, message="m" * 900, param="body.x")
        for i in range(1, 1001)
    ]
    stored = stored_errors(errors, total=5000, error_file=True)
    assert not stored.complete
    assert len(BatchErrors(data=stored.errors).model_dump_json()) <= STORED_ERRORS_BYTES
    listed, summary = stored.errors[:-1], stored.errors[-1]
    assert listed == errors[: len(listed)] and len(listed) >= 10
    assert summary.code == "too_many_errors"
    assert summary.message is not None
    assert "5000 errors" in summary.message and f"first {len(listed)}" in summary.message
    assert "error file" in summary.message  # where the whole list is


def test_stored_errors_leave_a_short_list_alone() -> None:
    errors = [BatchError(code="invalid_json_line", line=1, message="bad")]
    alone = stored_errors(errors, total=1, error_file=False)
    assert alone.complete and alone.errors == errors
    counted = stored_errors(errors, total=3, error_file=False)  # the validator kept 1 of 3
    assert not counted.complete and counted.errors[:1] == errors
    assert counted.errors[1].code == "too_many_errors"
    assert counted.errors[1].message == "3 errors in all; the first 1 are listed."
