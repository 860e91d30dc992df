"""The per-line protocol of batch files and the engine interface the core drives.

Input lines are OpenAI's (`custom_id`, `method`, `url`, `body`); output and error lines are
OpenAI's too. The engine protocol lives here, not in the worker, so the core can run a shard
without knowing which engine serves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from batch_core.ids import new_request_id, new_request_line_id


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


def usage_of(body: dict[str, Any]) -> tuple[int, int, int]:
    """(input, cached, output) tokens of a response body; zeros when it has no usage."""
    usage = body.get("usage") or {}
    if not isinstance(usage, dict):
        return 0, 0, 0
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return prompt, cached, completion
