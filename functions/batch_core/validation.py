"""Streaming validation of batch input files: every bad line named with its 1-based number.

The validator sees one line at a time, so memory does not grow with the file: duplicate
custom_ids are tracked as 64-bit digests in a flat table (16-32 bytes an id), not as strings.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batch_core.errors import LineError
from batch_core.models import SUPPORTED_ENDPOINTS, BatchError
from batch_core.request_schema import check_body

_UTF8_BOM = b"\xef\xbb\xbf"
_TOP_LEVEL_FIELDS = frozenset({"custom_id", "method", "url", "body"})


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


class DigestSet:
    """A set of 64-bit digests in one flat array (open addressing, load at most one half).

    A Python set of ints costs about 80 bytes an entry; this costs 16-32, which keeps a
    million custom_ids in about 32 MB. Zero marks an empty slot, so digests are never zero.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._slots = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: int) -> bool:
        slots, mask = self._slots, self._mask
        index = digest & mask
        while (found := slots[index]) != 0:
            if found == digest:
                return True
            index = (index + 1) & mask
        return False

    def add(self, digest: int) -> None:
        if 2 * (self._count + 1) > len(self._slots):
            self._grow()
        self._insert(self._slots, self._mask, digest)

    def _insert(self, slots: array[int], mask: int, digest: int) -> None:
        index = digest & mask
        while (found := slots[index]) != 0:
            if found == digest:
                return
            index = (index + 1) & mask
        slots[index] = digest
        self._count += 1

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        self._count = 0
        for digest in old:
            if digest:
                self._insert(self._slots, self._mask, digest)


def custom_id_digest(custom_id: str) -> int:
    digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds a batch must stay within."""

    max_requests: int = 1_000_000
    max_line_bytes: int = 8 * 1024**2
    max_reported_errors: int = 1000


@dataclass(frozen=True, slots=True)
class ValidLine:
    """One request that passed validation, with what the shard planner needs to know."""

    custom_id: str
    url: str
    body: dict[str, Any]
    line: int
    """1-based line number in the input file."""
    prompt_chars: int
    """Characters of prompt text (about four per token)."""
    prefix: int
    """Digest of the leading chat messages (shared system prompt / few-shot); 0 if none."""

    @property
    def output_budget(self) -> int | None:
        """The most tokens the request may generate, over all its `n` choices; None if unset."""
        limit = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        return None if limit is None else limit * (self.body.get("n") or 1)

    def to_shard_line(self) -> bytes:
        """The line as stored in a shard file (a `protocol.ShardRequest`)."""
        line = {"custom_id": self.custom_id, "url": self.url, "body": self.body, "line": self.line}
        return orjson.dumps(line) + b"\n"


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line that failed validation."""

    line: int
    custom_id: str | None
    """The line's custom_id when it had a readable one."""
    error: BatchError


@dataclass
class ValidationReport:
    """What validation found once every line was seen."""

    endpoint: str
    model: str | None
    valid_requests: int = 0
    rejected_lines: int = 0
    lines: int = 0
    prompt_chars: int = 0
    errors: list[BatchError] = field(default_factory=list)
    error_count: int = 0
    """All errors found; `errors` keeps only the first `max_reported_errors`."""
    file_error: bool = False
    """An error about the whole file (empty, too many requests): no line can be skipped past it."""

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def estimated_prompt_tokens(self) -> int:
        return (self.prompt_chars + 3) // 4

    def runnable(self, *, skip_invalid_lines: bool) -> bool:
        """Whether the batch can run: in skip mode bad lines are dropped, not fatal."""
        if self.file_error or self.valid_requests == 0:
            return False
        return skip_invalid_lines or self.ok


class BatchValidator:
    """Checks lines one by one and keeps the batch-wide state (endpoint, model, custom_ids)."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        default_endpoint: str = "/v1/chat/completions",
        served_models: Iterable[str] = (),
        limits: ValidationLimits | None = None,
        on_rejected: Callable[[RejectedLine], None] | None = None,
    ) -> None:
        """`on_rejected` sees every bad line as it is found (all of them, not only the first
        `max_reported_errors`): the skip mode writes them to the error file, the CLI prints them.
        """
        self._endpoint = endpoint
        self._default_endpoint = default_endpoint
        self._served_models = frozenset(served_models)
        self._limits = limits or ValidationLimits()
        self._on_rejected = on_rejected
        self._model: str | None = None
        self._seen_ids = DigestSet()
        self._valid = 0
        self._rejected = 0
        self._lines = 0
        self._prompt_chars = 0
        self._errors: list[BatchError] = []
        self._error_count = 0
        self._file_error = False

    def validate(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[ValidLine]:
        """Yield each valid request; errors are collected for `report()`."""
        for number, raw in lines:
            self._lines = number
            if not raw.strip():
                continue  # blank lines are skipped but keep their number
            try:
                request = self._check(raw, number)
            except LineError as error:
                self._reject(error, number, raw)
                continue
            self._valid += 1
            if self._valid > self._limits.max_requests:
                if self._valid == self._limits.max_requests + 1:
                    self._file_error = True
                    self._add_error(
                        "too_many_requests",
                        f"The batch has more than {self._limits.max_requests} requests.",
                        None,
                        number,
                    )
                continue
            self._prompt_chars += request.prompt_chars
            yield request

    @property
    def max_line_bytes(self) -> int:
        return self._limits.max_line_bytes

    @property
    def has_errors(self) -> bool:
        return self._error_count > 0

    def report(self) -> ValidationReport:
        """The outcome, once `validate` has been consumed."""
        if self._valid == 0 and self._error_count == 0:
            self._file_error = True
            self._add_error("empty_file", "The input file contains no requests.", None, None)
        return ValidationReport(
            endpoint=self._endpoint or self._default_endpoint,
            model=self._model,
            valid_requests=min(self._valid, self._limits.max_requests),
            rejected_lines=self._rejected,
            lines=self._lines,
            prompt_chars=self._prompt_chars,
            errors=self._errors,
            error_count=self._error_count,
            file_error=self._file_error,
        )

    def _reject(self, error: LineError, number: int, raw: bytes) -> None:
        self._rejected += 1
        batch_error = self._add_error(error.code, error.message, error.param, number)
        if self._on_rejected is not None:
            self._on_rejected(RejectedLine(number, _readable_custom_id(raw), batch_error))

    def _add_error(
        self, code: str, message: str, param: str | None, line: int | None
    ) -> BatchError:
        error = BatchError(code=code, line=line, message=message, param=param)
        self._error_count += 1
        if len(self._errors) < self._limits.max_reported_errors:
            self._errors.append(error)
        return error

    def _check(self, raw: bytes, number: int) -> ValidLine:
        if len(raw) > self._limits.max_line_bytes:
            raise LineError(
                "line_too_large",
                f"The line is longer than {self._limits.max_line_bytes} bytes.",
            )
        data = _parse(raw)
        if not isinstance(data, dict):
            raise LineError("invalid_json_line", "The line must be a JSON object.")
        custom_id = data.get("custom_id")
        if custom_id is None or custom_id == "":
            raise LineError(
                "missing_custom_id", "Each line needs a non-empty custom_id.", "custom_id"
            )
        if not isinstance(custom_id, str):
            raise LineError("missing_custom_id", "custom_id must be a string.", "custom_id")
        digest = custom_id_digest(custom_id)
        if digest in self._seen_ids:
            raise LineError(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} appears more than once in the file.",
                "custom_id",
            )
        if len(data) > 4 or not data.keys() <= _TOP_LEVEL_FIELDS:
            name = min(data.keys() - _TOP_LEVEL_FIELDS)
            raise LineError("invalid_request", f"Unrecognized field {name!r} on the line.", name)
        url = self._check_url(data)
        body = data.get("body")
        if body is None:
            raise LineError("missing_body", "Each line needs a body.", "body")
        if not isinstance(body, dict):
            raise LineError("missing_body", "body must be a JSON object.", "body")
        self._check_model(body.get("model"))
        prompt_chars, prefix = check_body(body, url)
        self._seen_ids.add(digest)
        return ValidLine(custom_id, url, body, number, prompt_chars, prefix)

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

    def _check_model(self, model: object) -> None:
        if not isinstance(model, str) or not model:
            raise LineError(
                "invalid_request", "body.model must be a non-empty string.", "body.model"
            )
        if model == self._model:
            return
        if self._served_models and model not in self._served_models:
            served = ", ".join(sorted(self._served_models))
            raise LineError(
                "model_not_found",
                f"The model {model!r} is not served here; served models: {served}.",
                "body.model",
            )
        if self._model is not None:
            raise LineError(
                "model_mismatch",
                f"The model {model!r} differs from the batch's model {self._model!r}; "
                "a batch uses one model.",
                "body.model",
            )
        self._model = model


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            raise LineError(
                "invalid_encoding", f"The line is not valid UTF-8 ({decode_error.reason})."
            ) from exc
        raise LineError("invalid_json_line", f"The line is not valid JSON: {exc}.") from exc


def _readable_custom_id(raw: bytes) -> str | None:
    """The custom_id of a rejected line, if it has one (for its line in the error file)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    return custom_id if isinstance(custom_id, str) and custom_id else None
