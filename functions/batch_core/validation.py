"""Streaming validation of batch input files: every bad line named with its 1-based number.

The validator sees one line at a time, so memory does not grow with the file's bytes: duplicate
custom_ids are tracked as 64-bit digests, not as the strings (see `BatchValidator`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import orjson

from batch_core.endpoints import ENDPOINTS
from batch_core.endpoints.spec import FastDecoder
from batch_core.errors import LineError
from batch_core.fast_lines import decode_fast
from batch_core.json_bounds import SUSPECT_BELOW, SUSPECT_BYTES, check_bounds
from batch_core.media_urls import MediaPolicy
from batch_core.models import BatchError, BatchErrors
from batch_core.request_schema import check_body, clipped, quoted

_UTF8_BOM = b"\xef\xbb\xbf"
_TOP_LEVEL_FIELDS = frozenset({"custom_id", "method", "url", "body"})

MAX_MESSAGE_CHARS = 1000
MAX_PARAM_CHARS = 300
"""Ceilings on one error's message and param, whichever check worded them: each quoted value
is cut where it is quoted (`request_schema.quoted`), and these hold for any that is not."""
STORED_ERRORS_BYTES = 16 * 1024
"""The most a failed batch's `errors` take (as JSON). They are stored on its item (DynamoDB
refuses items over 400 KB) and returned with it in every page of the batch list (up to 100
batches a page, 1.6 MB of errors at most, within a Lambda response's 6 MB)."""
_LIST_BYTES = len(BatchErrors().model_dump_json())
_SUMMARY_BYTES = 300  # room kept for the `too_many_errors` entry that counts the rest


def bounded_error(error: BatchError) -> BatchError:
    """`error` with its message and param within their ceilings."""
    message, param = error.message, error.param
    if (message is None or len(message) <= MAX_MESSAGE_CHARS) and (
        param is None or len(param) <= MAX_PARAM_CHARS
    ):
        return error
    return error.model_copy(
        update={
            "message": None if message is None else clipped(message, MAX_MESSAGE_CHARS - 32),
            "param": None if param is None else clipped(param, MAX_PARAM_CHARS - 32),
        }
    )  # 32: room for the "…(N bytes)" that says how long it was


@dataclass(frozen=True)
class StoredErrors:
    """What a failed batch keeps of its errors."""

    errors: list[BatchError]
    complete: bool
    """Every error is in `errors`; otherwise the last one counts those left out."""


def stored_errors(errors: list[BatchError], total: int, *, error_file: bool) -> StoredErrors:
    """The first of `errors` that fit in `STORED_ERRORS_BYTES`, each within its ceilings, and,
    when any of the `total` found is left out, a `too_many_errors` entry that counts them
    (and, with `error_file`, says the batch's error file has every one)."""
    kept: list[BatchError] = []
    used = _LIST_BYTES + _SUMMARY_BYTES
    for error in map(bounded_error, errors):
        used += len(error.model_dump_json().encode()) + 1  # and its comma
        if used > STORED_ERRORS_BYTES:
            break
        kept.append(error)
    if len(kept) == len(errors) and total <= len(errors):
        return StoredErrors(kept, complete=True)
    message = f"{total} errors in all; the first {len(kept)} are listed."
    if error_file:
        message += " The batch's error file (error_file_id) has every one."
    return StoredErrors([*kept, BatchError(code="too_many_errors", message=message)], False)


def iter_lines(
    chunks: Iterable[bytes], max_line_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Split a byte stream into (1-based line number, line) pairs, CRLF or LF, BOM dropped.

    With `max_line_bytes`, a longer line is cut to `max_line_bytes + 1` bytes (enough for the
    validator to call it too large) and the rest of it is dropped as it streams by, so a
    file with no newline cannot fill memory.
    """
    cap = sys.maxsize if max_line_bytes is None else max_line_bytes + 1
    pending = b""
    overflowing = False  # the pending line was cut: drop its bytes until its newline
    number = 0
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        if pieces:
            pieces[0] = pending if overflowing else pending + pieces[0]
            pending, overflowing = b"", False
            if number == 0 and pieces[0].startswith(_UTF8_BOM):
                pieces[0] = pieces[0][len(_UTF8_BOM) :]
            for piece in pieces:
                number += 1
                line = piece[:-1] if piece.endswith(b"\r") else piece
                yield number, line if len(line) <= cap else line[:cap]
        if not overflowing:
            pending += tail
            if len(pending) > cap:
                pending, overflowing = pending[:cap], True
    if pending:
        if number == 0 and pending.startswith(_UTF8_BOM):
            pending = pending[len(_UTF8_BOM) :]
        yield number + 1, pending[:-1] if pending.endswith(b"\r") else pending


def custom_id_digest(custom_id: str) -> int:
    """64 bits of the custom_id's hash.

    Python's str hash is keyed per process, which is fine: duplicates are only compared
    within one pass over one file. At a million ids the chance of any false duplicate is
    about 3 in 100 million, and a retried intake would not repeat it.
    """
    return hash(custom_id) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds a batch must stay within."""

    max_requests: int = 1_000_000
    max_line_bytes: int = 8 * 1024**2
    max_reported_errors: int = 1000


class ValidLine(NamedTuple):
    """One request that passed validation, with what the shard planner needs to know."""

    custom_id: str
    url: str
    line: int
    """1-based line number in the input file."""
    prompt_chars: int
    """Characters of prompt text (about four per token)."""
    prefix: int
    """Digest of the leading chat messages (shared system prompt / few-shot); 0 if none."""
    output_tokens: int | None
    """The most tokens it may generate over all its choices; None when it sets no limit."""
    choices: int
    """`n`: how many completions it asks for."""
    request_json: bytes
    """The request line's JSON (as read, or re-serialized when the slow path parsed it)."""

    def shard_line(self) -> bytes:
        """The line as stored in a shard file (a `protocol.ShardRequest`), newline included."""
        return b'{"line":%d,"url":"%s","request":%s}\n' % (
            self.line,
            self.url.encode(),
            self.request_json,
        )


# Builds a ValidLine without NamedTuple's Python-level __new__ (this runs once per line).
_new_valid_line: Callable[[tuple[str, str, int, int, int, int | None, int, bytes]], ValidLine] = (
    functools.partial(tuple.__new__, ValidLine)
)


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
        media: MediaPolicy | None = None,
    ) -> None:
        """`media`: the media URLs requests may make the workers fetch (default: none).
        `on_rejected` sees every bad line as it is found (all of them, not only the first
        `max_reported_errors`): the skip mode writes them to the error file, the CLI prints them.
        """
        self._endpoint = endpoint
        self._default_endpoint = default_endpoint
        self._served_models = frozenset(served_models)
        self._limits = limits or ValidationLimits()
        self._max_line_bytes = self._limits.max_line_bytes
        self._on_rejected = on_rejected
        self._media = media or MediaPolicy()
        self._model: str | None = None
        # The typed decoder of the endpoint's lines (its spec's), once the batch's endpoint
        # and model are known; None for an endpoint without one.
        self._fast: FastDecoder | None = None
        self._fast_url = ""
        # 64-bit digests, not the strings: about 80 bytes an id (80 MB at a million) in a set
        # whose lookups cost nothing next to parsing the line.
        self._seen_ids: set[int] = set()
        self._valid = 0
        self._rejected = 0
        self._lines = 0
        self._prompt_chars = 0
        self._errors: list[BatchError] = []
        self._error_count = 0
        self._file_error = False

    def validate(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[ValidLine]:
        """Yield each valid request; errors are collected for `report()`.

        This loop runs a million times per batch, so the common case is written out here:
        a line that its endpoint's typed decoder (`fast_lines`) decodes cleanly, for the
        batch's model, with a new custom_id. Anything else goes through `_check`. Counters
        live in locals and are written back when the generator finishes or is closed.
        """
        max_requests = self._limits.max_requests
        max_line_bytes = self._max_line_bytes
        seen = self._seen_ids
        check = self._check
        number, valid, prompt_chars = self._lines, self._valid, self._prompt_chars
        try:
            for number, raw in lines:
                request = None
                fast = self._fast
                if (
                    fast is not None
                    and len(raw) <= max_line_bytes
                    and raw.isascii()  # other lines need their UTF-8 checked: slow path
                    # json_bounds.plainly_within, inlined: deep or huge-number lines go slow
                    and len(raw.translate(None, SUSPECT_BYTES)) < SUSPECT_BELOW
                ):
                    try:
                        line = fast.decoder.decode(raw)
                    except (msgspec.MsgspecError, ValueError):
                        line = None
                    if line is not None and line.body.model == self._model:
                        digest = hash(line.custom_id) & 0xFFFF_FFFF_FFFF_FFFF
                        facts = fast.facts(line.body) if digest not in seen else None
                        if facts is not None:
                            seen.add(digest)
                            request = _new_valid_line(
                                (
                                    line.custom_id,
                                    self._fast_url,
                                    number,
                                    facts[0],
                                    facts[1],
                                    facts[2],
                                    facts[3],
                                    raw,
                                )
                            )
                if request is None:
                    if not raw or raw.isspace():
                        continue  # blank lines are skipped but keep their number
                    try:
                        request = check(raw, number)
                    except LineError as error:
                        self._reject(error, number, raw)
                        continue
                valid += 1
                if valid > max_requests:
                    if valid == max_requests + 1:
                        self._file_error = True
                        self._add_error(
                            "too_many_requests",
                            f"The batch has more than {max_requests} requests.",
                            None,
                            number,
                        )
                    continue
                prompt_chars += request.prompt_chars
                yield request
        finally:
            self._lines, self._valid, self._prompt_chars = number, valid, prompt_chars

    @property
    def model(self) -> str | None:
        """The batch's model, once a line has named it."""
        return self._model

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
        error = bounded_error(BatchError(code=code, line=line, message=message, param=param))
        self._error_count += 1
        if len(self._errors) < self._limits.max_reported_errors:
            self._errors.append(error)
        return error

    def _check(self, raw: bytes, number: int) -> ValidLine:
        if len(raw) > self._max_line_bytes:
            raise LineError(
                "line_too_large",
                f"The line is longer than {self._limits.max_line_bytes} bytes.",
            )
        endpoint = self._endpoint
        if endpoint is not None and self._model is not None:
            fast = decode_fast(raw, endpoint)  # None for lines past the JSON bounds
            if fast is not None and fast[1] == self._model:
                custom_id = fast[0]
                digest = hash(custom_id) & 0xFFFF_FFFF_FFFF_FFFF  # custom_id_digest, inlined
                if digest not in self._seen_ids:
                    self._seen_ids.add(digest)
                    _, _, chars, prefix, output_tokens, choices = fast
                    return _new_valid_line(
                        (custom_id, endpoint, number, chars, prefix, output_tokens, choices, raw)
                    )
        return self._check_slow(raw, number)

    def _check_slow(self, raw: bytes, number: int) -> ValidLine:
        """Every check, on the parsed line: the authority on what is wrong with a line."""
        check_bounds(raw)  # before any parser recurses into it
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _parse_error(raw, exc) from exc
        if type(data) is not dict:
            raise LineError("invalid_json_line", "The line must be a JSON object.")
        custom_id = data.get("custom_id")
        if type(custom_id) is not str or not custom_id:
            raise LineError(
                "missing_custom_id",
                "Each line needs a non-empty custom_id."
                if custom_id is None or custom_id == ""
                else "custom_id must be a string.",
                "custom_id",
            )
        digest = custom_id_digest(custom_id)
        if digest in self._seen_ids:
            raise LineError(
                "duplicate_custom_id",
                f"The custom_id {quoted(custom_id)} appears more than once in the file.",
                "custom_id",
            )
        if not data.keys() <= _TOP_LEVEL_FIELDS:
            name = min(data.keys() - _TOP_LEVEL_FIELDS)
            raise LineError(
                "invalid_request", f"Unrecognized field {quoted(name)} on the line.", clipped(name)
            )
        url = self._check_url(data)
        body = data.get("body")
        if type(body) is not dict:
            raise LineError(
                "missing_body",
                "Each line needs a body." if body is None else "body must be a JSON object.",
                "body",
            )
        model = body.get("model")
        if model != self._model or model is None:
            self._check_model(model)
        prompt_chars, prefix = check_body(body, url, self._media)
        spec = ENDPOINTS[url]
        self._seen_ids.add(digest)
        choices = body.get("n") or 1
        limit = (
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or body.get("max_output_tokens")
        )
        if spec.pooling:
            output_tokens: int | None = 0
        else:
            output_tokens = None if limit is None else limit * choices
        request_json = orjson.dumps(data)
        if self._fast is None and spec.fast is not None:
            # The endpoint and the model are known from here on.
            self._fast, self._fast_url = spec.fast, url
        return _new_valid_line(
            (custom_id, url, number, prompt_chars, prefix, output_tokens, choices, request_json)
        )

    def _check_url(self, data: dict[str, Any]) -> str:
        method = data.get("method", "POST")
        if method != "POST":
            raise LineError(
                "invalid_method", f"Only POST is supported, got {quoted(method)}.", "method"
            )
        url = data.get("url")
        endpoint = self._endpoint
        if endpoint is not None and url == endpoint:
            return endpoint
        if url is None:
            return self._endpoint or self._default_endpoint
        if not isinstance(url, str) or url not in ENDPOINTS:
            raise LineError(
                "unsupported_endpoint",
                f"The url {quoted(url)} is not supported; use one of {', '.join(ENDPOINTS)}.",
                "url",
            )
        if self._endpoint is None:
            self._endpoint = url
        elif url != self._endpoint:
            raise LineError(
                "url_mismatch",
                f"The url {quoted(url)} does not match the batch's endpoint "
                f"{quoted(self._endpoint)}.",
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
                f"The model {quoted(model)} is not served here; served models: {served}.",
                "body.model",
            )
        if self._model is not None:
            raise LineError(
                "model_mismatch",
                f"The model {quoted(model)} differs from the batch's model "
                f"{quoted(self._model)}; "
                "a batch uses one model.",
                "body.model",
            )
        self._model = model


def _parse_error(raw: bytes, error: orjson.JSONDecodeError) -> LineError:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        reason = decode_error.reason
        return LineError("invalid_encoding", f"The line is not valid UTF-8 ({reason}).")
    return LineError("invalid_json_line", f"The line is not valid JSON: {error}.")


def _readable_custom_id(raw: bytes) -> str | None:
    """The custom_id of a rejected line, if it has one (for its line in the error file)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    return custom_id if isinstance(custom_id, str) and custom_id else None
