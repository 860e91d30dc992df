"""What describes one endpoint family: the `EndpointSpec` every family module defines once.

Everything the service knows about an endpoint hangs off its spec (as vLLM keeps each
endpoint's protocol and serving together in one package): intake checks a body with it, drops
and the CLI resolve a short name with it, the ending reads usage with it, and the worker's
engine finds the vLLM serving object to run it with it. The serving object is named, never
imported: only `gpu_worker/engines/` imports vLLM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

BodyCheck = Callable[[dict[str, Any]], tuple[int, int]]
"""Checks a body's own shape (past the fields, `stream` and sampling ranges every family
shares); returns (prompt characters, digest of the leading chat messages, 0 for none).
Raises `LineError` with the code, message and param of the first problem."""


def without_prefix(check: Callable[[dict[str, Any]], int]) -> BodyCheck:
    """A `BodyCheck` from a check that counts prompt characters only: the family has no
    leading chat messages to group shards by."""

    def checked(body: dict[str, Any]) -> tuple[int, int]:
        return check(body), 0

    return checked


FastFacts = tuple[int, int, int | None, int]
"""(prompt characters, prefix digest, output token limit over all choices, choices)."""


@dataclass(frozen=True)
class ServingEntry:
    """Which vLLM serving object runs the endpoint, by name (resolved by the worker's engine)."""

    state: str
    """The attribute of vLLM's app state holding the serving object (`init_app_state` sets
    it only when the model supports the task), e.g. `openai_serving_chat`."""
    method: str | None
    """Its coroutine to call with the parsed request; None when the object itself is called
    (the pooling serving classes)."""
    request: str
    """`module:name` of vLLM's request model the body is parsed into."""


@dataclass(frozen=True)
class UsageReader:
    """How a response body of the family counts tokens: (input, cached, output)."""

    input: str
    output: str
    details: str
    """The object holding `cached_tokens`."""

    def __call__(self, usage: dict[str, Any]) -> tuple[int, int, int]:
        details = usage.get(self.details) or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        return _count(usage.get(self.input)), _count(cached), _count(usage.get(self.output))


PROMPT_USAGE = UsageReader("prompt_tokens", "completion_tokens", "prompt_tokens_details")
"""The usage of chat, completions and the pooling endpoints' bodies (and of any body whose
usage no other reader recognizes)."""


def _count(value: object) -> int:
    """A token count as the engine reported it; anything that is not one counts 0."""
    return value if type(value) is int and 0 <= value <= 2**53 else 0


@dataclass(frozen=True)
class FastDecoder:
    """The typed decoder of plainly valid lines (`fast_lines`), and the facts of one: it only
    ever accepts, so `facts` answers None whenever the dict checks must decide."""

    decoder: msgspec.json.Decoder[Any]
    facts: Callable[[Any], FastFacts | None]
    """The facts of a decoded body, or None for the slow path."""


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint: all the service needs to accept, run and account for its requests."""

    path: str
    """The line's `url` and the batch's `endpoint`, e.g. `/v1/chat/completions`."""
    aliases: tuple[str, ...]
    """Short names a drop folder, drop metadata or the CLI may give (lowercase)."""
    fields: frozenset[str]
    """Every body field accepted (OpenAI's documented ones and vLLM's request model's);
    any other is refused as OpenAI refuses it."""
    check: BodyCheck
    serving: ServingEntry
    usage: UsageReader = PROMPT_USAGE
    pooling: bool = False
    """Served by a pooling model: it generates no tokens."""
    fast: FastDecoder | None = None
    """None: every line takes the dict checks."""
