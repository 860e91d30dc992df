"""The fast path of line validation: typed decoding in C (msgspec) for lines that are valid.

Validation runs over up to a million lines. Parsing each into dicts and walking them in Python
costs about twice the parse itself; msgspec instead decodes a line straight into typed structs
that already enforce the body schema (known fields only, message roles, numeric ranges), and
builds no dict at all. What is left for Python is cheap.

This path only ever *accepts*. When it cannot (anything unusual, any doubt) it answers None and
the validator runs the dict-based checks of `request_schema`, which are the authority on every
error's code, message and param. So the two paths can only disagree about lines the fast path
passes, and it passes nothing the slow path would refuse (the property test checks both).
"""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Literal

import msgspec

from batch_core.errors import LineError
from batch_core.json_bounds import plainly_within
from batch_core.request_schema import (
    ACCEPTED_FIELDS,
    check_response_format,
    check_stop,
    prompt_chars,
)

_Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Message(msgspec.Struct):
    role: _Role
    content: str | None = None  # content parts (a list) fail here and take the slow path
    tool_call_id: Any = None
    tool_calls: Any = None
    function_call: Any = None


_Positive = Annotated[int, msgspec.Meta(ge=1)]
# The fields the slow path range-checks, with the same bounds; every other accepted field is Any.
_TYPED: dict[str, Any] = {
    "max_tokens": _Positive | None,
    "max_completion_tokens": _Positive | None,
    "n": Annotated[int, msgspec.Meta(ge=1, le=128)] | None,
    "temperature": Annotated[float, msgspec.Meta(ge=0, le=2)] | None,
    "top_p": Annotated[float, msgspec.Meta(ge=0, le=1)] | None,
    "presence_penalty": Annotated[float, msgspec.Meta(ge=-2, le=2)] | None,
    "frequency_penalty": Annotated[float, msgspec.Meta(ge=-2, le=2)] | None,
    "seed": int | None,
    "stream": Literal[False] | None,  # stream: true is refused (by the slow path)
}
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


def _body_struct(url: str, name: str) -> type[msgspec.Struct]:
    fields: list[Any] = [("model", _NonEmpty)]
    typed = {"model"}
    if url == "/v1/chat/completions":
        fields.append(("messages", Annotated[list[_Message], msgspec.Meta(min_length=1)]))
        typed.add("messages")
    for field in sorted(ACCEPTED_FIELDS[url] - typed):
        fields.append((field, _TYPED.get(field, Any), None))
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True)


def _line_decoder(url: str, name: str) -> msgspec.json.Decoder[Any]:
    line = msgspec.defstruct(
        f"{name}Line",
        [
            ("custom_id", _NonEmpty),
            ("body", _body_struct(url, f"{name}Body")),
            ("method", Literal["POST"], "POST"),
            ("url", Literal[url] | None, None),  # another endpoint: url_mismatch, slow path
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(line)


_DECODERS = {
    "/v1/chat/completions": _line_decoder("/v1/chat/completions", "Chat"),
    "/v1/completions": _line_decoder("/v1/completions", "Completion"),
    "/v1/embeddings": _line_decoder("/v1/embeddings", "Embedding"),
}


# custom_id, model, prompt characters, prefix digest, output token limit, choices.
FastLine = tuple[str, str, int, int, int | None, int]


def decoder_for(endpoint: str) -> msgspec.json.Decoder[Any]:
    """The typed decoder of lines for `endpoint` (raises msgspec errors or ValueError)."""
    return _DECODERS[endpoint]


def chat_facts(body: Any) -> tuple[int, int] | None:
    """Prompt characters and preamble digest of a decoded chat body, or None for the slow path.

    The digest matches `request_schema.check_messages` for string contents.
    """
    try:
        if body.stop is not None:
            check_stop(body.stop)
        if body.response_format is not None:
            check_response_format(body.response_format)
    except LineError:
        return None
    chars = prefix = 0
    messages = body.messages
    last = len(messages) - 1
    for index, message in enumerate(messages):
        content = message.content
        if content is None:
            return None  # legal only for some assistant messages: the slow path decides
        chars += len(content)
        if index < last:
            prefix = zlib.crc32(content.encode(), prefix)
        if message.role == "tool" and type(message.tool_call_id) is not str:
            return None
    return chars, (prefix or 1) if last else 0


def decode_fast(raw: bytes, endpoint: str) -> FastLine | None:
    """The line's facts if it is plainly valid for `endpoint`; None means "ask the slow path".

    (The validator inlines this for chat lines; this is the general form. Endpoints without
    a typed decoder, the Responses API's and the pooling ones, always take the slow path.)
    """
    if endpoint not in _DECODERS or not plainly_within(raw):
        return None  # deep nesting or a huge integer: the slow path names the bound it breaks
    try:
        line = _DECODERS[endpoint].decode(raw)
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8 in a string
        return None
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # msgspec does not check the UTF-8 of strings it never builds
        except UnicodeDecodeError:
            return None
    body = line.body
    if endpoint == "/v1/chat/completions":
        facts = chat_facts(body)
    else:
        facts = _prompt_facts(body, endpoint)
    if facts is None:
        return None
    if endpoint == "/v1/embeddings":
        return line.custom_id, body.model, facts[0], 0, 0, 1
    limit = body.max_completion_tokens or body.max_tokens
    choices = body.n or 1
    output_tokens = None if limit is None else limit * choices
    return line.custom_id, body.model, facts[0], facts[1], output_tokens, choices


def _prompt_facts(body: Any, endpoint: str) -> tuple[int, int] | None:
    try:
        if endpoint == "/v1/embeddings":
            if body.messages is not None:
                return None  # vLLM's chat-style embeddings: the slow path checks those
            return prompt_chars(body.input, "input"), 0
        if body.stop is not None:
            check_stop(body.stop)
        if body.response_format is not None:
            check_response_format(body.response_format)
        return prompt_chars(body.prompt, "prompt"), 0
    except LineError:
        return None
