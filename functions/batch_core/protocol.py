"""The per-line protocol of batch files and the engine interface the core drives.

Input lines are OpenAI's (`custom_id`, `method`, `url`, `body`); output and error lines are
OpenAI's too. The engine protocol lives here, not in the worker, so the core can run a shard
without knowing which engine serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batch_core.endpoints import usage_reader
from batch_core.errors import LineError
from batch_core.ids import new_request_id, new_request_line_id
from batch_core.json_bounds import check_bounds


class BatchRequestInput(BaseModel):
    """One line of an input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str
    """The caller's id for the request, unique within the file."""
    method: Literal["POST"] = "POST"
    url: str | None = None
    """Endpoint of the request; when absent the batch's endpoint applies."""
    body: dict[str, Any]
    """Exactly the synchronous endpoint's request body."""


class ShardRequest(BaseModel):
    """One validated request as stored in a shard file: the input line, untouched."""

    line: int
    """1-based line of the input file it came from."""
    url: str
    """The endpoint it runs on (the line may omit its url)."""
    request: BatchRequestInput

    @property
    def custom_id(self) -> str:
        return self.request.custom_id

    @property
    def body(self) -> dict[str, Any]:
        return self.request.body


@dataclass(frozen=True)
class UnreadableShardLine:
    """A shard line that cannot be read back (never written by our validator, but a shard is
    data and data can be damaged): it becomes that request's error line, not the worker's
    death."""

    line_number: int
    """1-based line of the shard file."""
    custom_id: str | None
    """Its custom_id, when one can still be read."""
    reason: str
    input_line: int = 0
    """Its input line, when one can still be read (0: not known)."""


def read_shard_line(raw: bytes, line_number: int) -> ShardRequest | UnreadableShardLine:
    """The one parser of shard lines (the worker's, the dead-shard path's and the ending's):
    the shared JSON bounds first, then orjson, then the model over plain Python values, so no
    parser recursion limit is ever reached whatever the line holds."""
    try:
        check_bounds(raw, envelope_depth=1)  # the shard line's object around the input line
        data = orjson.loads(raw)
        return ShardRequest.model_validate(data)
    except (LineError, orjson.JSONDecodeError, ValidationError, RecursionError) as error:
        reason = str(error).splitlines()[0][:300]
        custom_id, input_line = _custom_id_and_line_of(raw)
        return UnreadableShardLine(line_number, custom_id, reason, input_line)


def _custom_id_and_line_of(raw: bytes) -> tuple[str | None, int]:
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return None, 0
    if not isinstance(data, dict):
        return None, 0
    request = data.get("request")
    custom_id = request.get("custom_id") if isinstance(request, dict) else None
    line = data.get("line")
    return (
        custom_id if isinstance(custom_id, str) and custom_id else None,
        line if type(line) is int and line > 0 else 0,
    )


@dataclass(frozen=True)
class OutputFacts:
    """What the core needs from an output or error line it wrote: who, whether it
    succeeded, and its token usage. Read without a model of the response body, which is the
    engine's and can hold anything."""

    id: str
    custom_id: str | None
    succeeded: bool
    usage: tuple[int, int, int]
    """(input, cached, output) tokens."""


def read_output_line(raw: bytes) -> OutputFacts | None:
    """The facts of one line of a result part; None for a line that cannot be read (a part
    is written whole by one put, so this only happens to damaged data)."""
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    line_id = data.get("id")
    custom_id = data.get("custom_id")
    response = data.get("response")
    succeeded = isinstance(response, dict) and response.get("status_code") == 200
    body = response.get("body") if isinstance(response, dict) else None
    return OutputFacts(
        id=line_id if isinstance(line_id, str) else "",
        custom_id=custom_id if isinstance(custom_id, str) else None,
        succeeded=succeeded,
        usage=usage_of(body) if succeeded and isinstance(body, dict) else (0, 0, 0),
    )


class ErrorDetail(BaseModel):
    """The `error` object of an OpenAI error body."""

    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class BatchResponse(BaseModel):
    """The `response` of an output line."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchLineError(BaseModel):
    """A batch-level failure of one line (it never ran: expired, cancelled, poison shard)."""

    code: str
    message: str


class BatchRequestOutput(BaseModel):
    """One line of the output or error file."""

    id: str
    """`batch_req_...`"""
    custom_id: str | None
    """None only for an input line too broken to have a readable custom_id."""
    response: BatchResponse | None
    error: BatchLineError | None = None
    line: int | None = Field(default=None, exclude=True)
    """The input line it answers (never written into the line: `result_index` puts it in
    the id and the index). `Results.write` needs it on every line it is given."""

    @property
    def succeeded(self) -> bool:
        return self.response is not None and self.response.status_code == 200


class EngineRequest(BaseModel):
    """What an engine is asked to run."""

    custom_id: str
    url: str
    body: dict[str, Any]


class EngineResult(BaseModel):
    """What an engine answers for one request: a response body or an OpenAI error body."""

    custom_id: str
    status_code: int
    body: dict[str, Any]

    @classmethod
    def failure(
        cls,
        custom_id: str,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> EngineResult:
        error_type = "invalid_request_error" if status_code < 500 else "server_error"
        detail = ErrorDetail(message=message, type=error_type, param=param, code=code)
        return cls(
            custom_id=custom_id, status_code=status_code, body={"error": detail.model_dump()}
        )

    @classmethod
    def unsupported(cls, custom_id: str, served_model: str, url: str) -> EngineResult:
        """A request for an endpoint the engine does not serve (validation refuses it first;
        a shard is data, so an engine still answers it)."""
        return cls.failure(
            custom_id,
            400,
            f"The model {served_model!r} does not support {url}.",
            param="url",
            code="unsupported_endpoint",
        )

    def to_output_line(self) -> BatchRequestOutput:
        response = BatchResponse(
            status_code=self.status_code, request_id=new_request_id(), body=self.body
        )
        return BatchRequestOutput(
            id=new_request_line_id(), custom_id=self.custom_id, response=response
        )


class Engine(Protocol):
    """An inference engine: runs requests, yields one result per request as each finishes.

    Results may come in any order; every request yields exactly one result, and a request that
    fails (too long, bad parameters) yields an error result rather than raising.
    """

    @property
    def served_model(self) -> str:
        """The model name requests must carry."""
        ...

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]: ...

    def has_room(self) -> bool:
        """Whether one more shard would keep the engine busier (the worker takes another
        shard only then, so idle shard loops never hoard messages other workers could run)."""
        ...

    def close(self) -> None:
        """Release the engine (vLLM's processes and memory); nothing runs after this."""
        ...


def usage_of(body: dict[str, Any]) -> tuple[int, int, int]:
    """(input, cached, output) tokens of a response body; zeros when it has no usage. Each
    endpoint family's spec says how its bodies count (`endpoints.usage_reader`): chat,
    completions and pooling bodies say `prompt_tokens`, the Responses API `input_tokens`."""
    usage = body.get("usage") or {}
    if not isinstance(usage, dict):
        return 0, 0, 0
    return usage_reader(usage)(usage)
