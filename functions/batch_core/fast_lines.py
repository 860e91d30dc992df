"""The fast path of line validation: typed decoding in C (msgspec) for lines that are valid.

Validation runs over up to a million lines. Parsing each into dicts and walking them in Python
costs about twice the parse itself; msgspec instead decodes a line straight into typed structs
that already enforce the body schema (known fields only, message roles, numeric ranges), and
builds no dict at all. What is left for Python is cheap.

This path only ever *accepts*. When it cannot (anything unusual, any doubt) it answers None and
the validator runs the dict-based checks of `request_schema`, which are the authority on every
error's code, message and param. So the two paths can only disagree about lines the fast path
passes, and it passes nothing the slow path would refuse (the property test checks both).

Each endpoint family's spec holds its decoder and the facts of a decoded line
(`batch_core.endpoints`); a family without one (the Responses API's, the pooling ones but
embeddings) always takes the slow path.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batch_core.endpoints import spec_for
from batch_core.endpoints.chat import chat_facts
from batch_core.endpoints.spec import FastDecoder
from batch_core.json_bounds import plainly_within

__all__ = ["FastLine", "chat_facts", "decode_fast", "decoder_for", "fast_path"]

# custom_id, model, prompt characters, prefix digest, output token limit, choices.
FastLine = tuple[str, str, int, int, int | None, int]


def fast_path(endpoint: str) -> FastDecoder | None:
    """The typed decoder and facts of `endpoint`'s lines; None when it has none."""
    spec = spec_for(endpoint)
    return None if spec is None else spec.fast


def decoder_for(endpoint: str) -> msgspec.json.Decoder[Any]:
    """The typed decoder of lines for `endpoint` (raises msgspec errors or ValueError)."""
    fast = fast_path(endpoint)
    if fast is None:
        raise KeyError(endpoint)
    return fast.decoder


def decode_fast(raw: bytes, endpoint: str) -> FastLine | None:
    """The line's facts if it is plainly valid for `endpoint`; None means "ask the slow path".

    (The validator inlines this in its loop; this is the general form.)
    """
    fast = fast_path(endpoint)
    if fast is None or not plainly_within(raw):
        return None  # deep nesting or a huge integer: the slow path names the bound it breaks
    try:
        line = fast.decoder.decode(raw)
    except (msgspec.MsgspecError, ValueError):  # ValueError: invalid UTF-8 in a string
        return None
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # msgspec does not check the UTF-8 of strings it never builds
        except UnicodeDecodeError:
            return None
    facts = fast.facts(line.body)
    if facts is None:
        return None
    chars, prefix, output_tokens, choices = facts
    return line.custom_id, line.body.model, chars, prefix, output_tokens, choices
