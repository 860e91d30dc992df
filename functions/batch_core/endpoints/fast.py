"""Typed line decoders for the fast path (`fast_lines`): msgspec structs built from a
family's accepted fields that enforce, in C, what the dict checks would (known fields only,
`custom_id` and `model` non-empty, `method: POST`, the numeric ranges, `stream` not true)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from batch_core.endpoints.spec import FastDecoder, FastFacts

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# The fields the slow path range-checks, with the same bounds; every other accepted field is Any.
_TYPED: dict[str, Any] = {
    "max_tokens": Positive | None,
    "max_completion_tokens": Positive | None,
    "max_output_tokens": Positive | None,
    "top_logprobs": Annotated[int, msgspec.Meta(ge=0, le=20)] | None,
    "top_n": Annotated[int, msgspec.Meta(ge=0)] | None,
    "n": Annotated[int, msgspec.Meta(ge=1, le=128)] | None,
    "temperature": Annotated[float, msgspec.Meta(ge=0, le=2)] | None,
    "top_p": Annotated[float, msgspec.Meta(ge=0, le=1)] | None,
    "presence_penalty": Annotated[float, msgspec.Meta(ge=-2, le=2)] | None,
    "frequency_penalty": Annotated[float, msgspec.Meta(ge=-2, le=2)] | None,
    "seed": int | None,
    "stream": Literal[False] | None,  # stream: true is refused (by the slow path)
}


def _body_struct(
    name: str, fields: frozenset[str], required: Mapping[str, Any]
) -> type[msgspec.Struct]:
    """`required`: fields the body must have, with their types (besides `model`)."""
    members: list[Any] = [("model", NonEmpty), *required.items()]
    typed = {"model", *required}
    for field in sorted(fields - typed):
        members.append((field, _TYPED.get(field, Any), None))
    return msgspec.defstruct(name, members, forbid_unknown_fields=True)


def fast_decoder(
    path: str,
    name: str,
    fields: frozenset[str],
    facts: Callable[[Any], FastFacts | None],
    required: Mapping[str, Any] | None = None,
) -> FastDecoder:
    """The typed decoder of `path`'s lines (structs named after `name`) and its facts."""
    line = msgspec.defstruct(
        f"{name}Line",
        [
            ("custom_id", NonEmpty),
            ("body", _body_struct(f"{name}Body", fields, required or {})),
            ("method", Literal["POST"], "POST"),
            ("url", Literal[path] | None, None),  # another endpoint: url_mismatch, slow path
        ],
        forbid_unknown_fields=True,
    )
    return FastDecoder(msgspec.json.Decoder(line), facts)
