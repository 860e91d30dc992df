"""Streaming validation of batch input files: every bad line named with its 1-based number.

The validator sees one line at a time, so memory does not grow with the file (duplicate
custom_ids are tracked as fixed-size digests, not as the strings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batch_core.models import SUPPORTED_ENDPOINTS, BatchError
from batch_core.protocol import ShardRequest

_UTF8_BOM = b"\xef\xbb\xbf"
_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def iter_lines(
    chunks: Iterable[bytes], max_line_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Split a byte stream into (1-based line number, line) pairs, CRLF or LF, BOM dropped.

    With `max_line_bytes`, a longer line is cut to `max_line_bytes + 1` bytes (enough for the
    validator to call it too large) and the rest of it is dropped as it streams by, so a
    file with no newline cannot fill memory.
    """
    pending = b""
    overflowing = False
    number = 0
    for chunk in chunks:
        if not chunk:
            continue
        *complete, tail = chunk.split(b"\n")
        for piece in complete:
            number += 1
            line = pending if overflowing else pending + piece
            pending, overflowing = b"", False
            yield number, _clean(_cap(line, max_line_bytes), number)
        if not overflowing:
            pending += tail
            if max_line_bytes is not None and len(pending) > max_line_bytes:
                pending, overflowing = _cap(pending, max_line_bytes), True
    if pending:
        number += 1
        yield number, _clean(pending, number)


def _cap(line: bytes, max_line_bytes: int | None) -> bytes:
    return line if max_line_bytes is None else line[: max_line_bytes + 1]


def _clean(line: bytes, number: int) -> bytes:
    if number == 1 and line.startswith(_UTF8_BOM):
        line = line[len(_UTF8_BOM) :]
    return line[:-1] if line.endswith(b"\r") else line


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds a batch must stay within."""

    max_requests: int = 1_000_000
    max_line_bytes: int = 8 * 1024**2
    max_reported_errors: int = 1000


@dataclass
class ValidationReport:
    """What validation found once every line was seen."""

    endpoint: str
    model: str | None
    valid_requests: int = 0
    lines: int = 0
    errors: list[BatchError] = field(default_factory=list)
    error_count: int = 0
    """All errors found; `errors` keeps only the first `max_reported_errors`."""

    @property
    def ok(self) -> bool:
        return self.error_count == 0


class LineError(Exception):
    """One problem with one line."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class BatchValidator:
    """Checks lines one by one and keeps the batch-wide state (endpoint, model, custom_ids)."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        default_endpoint: str = "/v1/chat/completions",
        served_models: Iterable[str] = (),
        limits: ValidationLimits | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._default_endpoint = default_endpoint
        self._served_models = frozenset(served_models)
        self._limits = limits or ValidationLimits()
        self._model: str | None = None
        self._seen_ids: set[bytes] = set()
        self._valid = 0
        self._lines = 0
        self._errors: list[BatchError] = []
        self._error_count = 0

    def validate(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[ShardRequest]:
        """Yield each valid request; errors are collected for `report()`."""
        for number, raw in lines:
            self._lines = number
            if not raw.strip():
                continue  # blank lines are skipped but keep their number
            try:
                request = self._check(raw)
            except LineError as error:
                self._add_error(error.code, error.message, error.param, number)
                continue
            self._valid += 1
            if self._valid == self._limits.max_requests + 1:
                self._add_error(
                    "too_many_requests",
                    f"The batch has more than {self._limits.max_requests} requests.",
                    None,
                    number,
                )
            request_line = ShardRequest(
                custom_id=request["custom_id"],
                url=request["url"],
                body=request["body"],
                line=number,
            )
            yield request_line

    @property
    def has_errors(self) -> bool:
        return self._error_count > 0

    def report(self) -> ValidationReport:
        """The outcome, once `validate` has been consumed."""
        if self._valid == 0 and self._error_count == 0:
            self._add_error("empty_file", "The input file contains no requests.", None, None)
        return ValidationReport(
            endpoint=self._endpoint or self._default_endpoint,
            model=self._model,
            valid_requests=self._valid,
            lines=self._lines,
            errors=self._errors,
            error_count=self._error_count,
        )

    def _add_error(self, code: str, message: str, param: str | None, line: int | None) -> None:
        self._error_count += 1
        if len(self._errors) < self._limits.max_reported_errors:
            self._errors.append(BatchError(code=code, line=line, message=message, param=param))

    def _check(self, raw: bytes) -> dict[str, Any]:
        if len(raw) > self._limits.max_line_bytes:
            raise LineError(
                "line_too_large",
                f"The line is {len(raw)} bytes; the limit is {self._limits.max_line_bytes}.",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LineError(
                "invalid_encoding", f"The line is not valid UTF-8 ({exc.reason})."
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LineError("invalid_json_line", f"The line is not valid JSON: {exc.msg}.") from exc
        if not isinstance(data, dict):
            raise LineError("invalid_json_line", "The line must be a JSON object.")
        custom_id, digest = self._check_custom_id(data)
        url = self._check_url(data)
        body = self._check_body(data, url)
        unknown = sorted(set(data) - {"custom_id", "method", "url", "body"})
        if unknown:
            raise LineError(
                "invalid_request", f"Unknown field {unknown[0]!r} on the line.", unknown[0]
            )
        self._seen_ids.add(digest)
        return {"custom_id": custom_id, "url": url, "body": body}

    def _check_custom_id(self, data: dict[str, Any]) -> tuple[str, bytes]:
        """The custom_id and its digest (remembered once the whole line is valid)."""
        custom_id = data.get("custom_id")
        if custom_id is None or custom_id == "":
            raise LineError(
                "missing_custom_id", "Each line needs a non-empty custom_id.", "custom_id"
            )
        if not isinstance(custom_id, str):
            raise LineError("missing_custom_id", "custom_id must be a string.", "custom_id")
        digest = hashlib.blake2b(custom_id.encode(), digest_size=16).digest()
        if digest in self._seen_ids:
            raise LineError(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} appears more than once in the file.",
                "custom_id",
            )
        return custom_id, digest

    def _check_url(self, data: dict[str, Any]) -> str:
        method = data.get("method", "POST")
        if method != "POST":
            raise LineError("invalid_method", f"Only POST is supported, got {method!r}.", "method")
        url = data.get("url")
        if url is None:
            return self._endpoint or self._default_endpoint
        if not isinstance(url, str) or url not in SUPPORTED_ENDPOINTS:
            raise LineError(
                "unsupported_endpoint",
                f"The url {url!r} is not supported; use one of {', '.join(SUPPORTED_ENDPOINTS)}.",
                "url",
            )
        if self._endpoint is None:
            self._endpoint = url
        elif url != self._endpoint:
            raise LineError(
                "url_mismatch",
                f"The url {url!r} does not match the batch's endpoint {self._endpoint!r}.",
                "url",
            )
        return url

    def _check_body(self, data: dict[str, Any], url: str) -> dict[str, Any]:
        body = data.get("body")
        if body is None:
            raise LineError("missing_body", "Each line needs a body.", "body")
        if not isinstance(body, dict):
            raise LineError("missing_body", "body must be a JSON object.", "body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise LineError(
                "invalid_request", "body.model must be a non-empty string.", "body.model"
            )
        if self._served_models and model not in self._served_models:
            served = ", ".join(sorted(self._served_models))
            raise LineError(
                "model_not_found",
                f"The model {model!r} is not served here; served models: {served}.",
                "body.model",
            )
        if self._model is None:
            self._model = model
        elif model != self._model:
            raise LineError(
                "model_mismatch",
                f"The model {model!r} differs from the batch's model {self._model!r}; "
                "a batch uses one model.",
                "body.model",
            )
        if body.get("stream"):
            raise LineError(
                "invalid_request", "Streaming is not supported in a batch.", "body.stream"
            )
        _check_endpoint_body(body, url)
        return body


def _check_endpoint_body(body: dict[str, Any], url: str) -> None:
    if url == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise LineError(
                "invalid_request", "body.messages must be a non-empty list.", "body.messages"
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _CHAT_ROLES:
                raise LineError(
                    "invalid_request",
                    f"body.messages[{index}] needs a role among {', '.join(sorted(_CHAT_ROLES))}.",
                    f"body.messages[{index}].role",
                )
    elif url == "/v1/completions":
        if body.get("prompt") in (None, "", []):
            raise LineError("invalid_request", "body.prompt is required.", "body.prompt")
    elif url == "/v1/embeddings" and body.get("input") in (None, "", []):
        raise LineError("invalid_request", "body.input is required.", "body.input")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise LineError(
                "invalid_request", f"body.{name} must be a positive integer.", f"body.{name}"
            )
