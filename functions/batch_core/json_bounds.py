"""The bounds every JSON document we accept keeps: nesting depth and integer size.

One rule for the validator (each input line), the worker (each shard line) and the API (each
request body), because the parsers on the way disagree past them: orjson nests 1,024 levels and
turns integers past 64 bits into floats, msgspec keeps them as big integers, pydantic stops at
about 200 levels, and DynamoDB numbers hold 38 digits. A document inside these bounds reads
the same in every one of them.

The check is lexical (strings are blanked out first), so it does not depend on which parser
reads the document next, and it runs before any parser has to recurse.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Annotated

from pydantic import BeforeValidator

from batch_core.errors import LineError

MAX_JSON_DEPTH = 64
"""Arrays and objects nested at most this deep (a JSON schema for structured output needs a
dozen levels; 64 leaves room and stays far below every parser's own limit)."""
MAX_JSON_INTEGER = 2**63 - 1
"""Integers within the signed 64-bit range (|n| <= 2**63 - 1), as every parser reads them."""

_DIGITS_OF_LARGEST = len(str(MAX_JSON_INTEGER))  # 19
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# A number token with 19 or more integer digits (not the digits of a fraction or exponent).
_INTEGER = re.compile(rb"(?<![\d.eE+\-])-?\d{19,}(?:\.\d+)?(?:[eE][+-]?\d+)?")
# Every byte but those that could break a bound (digits, opening brackets): deleted, what is
# left is counted.
SUSPECT_BYTES = bytes(b for b in range(256) if b not in b"0123456789[{")
SUSPECT_BELOW = _DIGITS_OF_LARGEST
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[{]}")


def plainly_within(raw: bytes) -> bool:
    """True when `raw` cannot break a bound: fewer digits and opening brackets in all than a
    too-large integer has digits (and so than the depth limit). One C pass; most lines."""
    return len(raw.translate(None, SUSPECT_BYTES)) < SUSPECT_BELOW


def bound_error(raw: bytes, *, envelope_depth: int = 0) -> LineError | None:
    """The first bound `raw` breaks, as a clear error; None when it keeps both.

    `envelope_depth`: levels that we added around the user's document (a shard line wraps
    the input line in one object), allowed on top of the limit."""
    if plainly_within(raw):
        return None
    bare = _STRING.sub(b'""', raw)
    depth = _depth(bare) - envelope_depth
    if depth > MAX_JSON_DEPTH:
        return LineError(
            "json_too_deep",
            f"The JSON nests {depth if depth < 10_000 else 'over 10000'} levels deep; "
            f"at most {MAX_JSON_DEPTH} are accepted.",
        )
    for match in _INTEGER.finditer(bare):
        token = match.group()
        if b"." in token or b"e" in token or b"E" in token:
            continue  # a float, which every parser reads the same (or refuses as infinite)
        digits = len(token.lstrip(b"-"))
        # Past 19 digits it is out of range whatever they are (and int() would refuse 4,300).
        if digits > _DIGITS_OF_LARGEST or abs(int(token)) > MAX_JSON_INTEGER:
            head = token[:12].decode()
            shown = token.decode() if digits <= 30 else f"{head}... ({digits} digits)"
            return LineError(
                "number_out_of_range",
                f"The integer {shown} is outside the accepted range "
                f"(-{MAX_JSON_INTEGER} to {MAX_JSON_INTEGER}).",
            )
    return None


def check_bounds(raw: bytes, *, envelope_depth: int = 0) -> None:
    """Raise the `LineError` of the first bound `raw` breaks."""
    error = bound_error(raw, envelope_depth=envelope_depth)
    if error is not None:
        raise error


def _depth(bare: bytes) -> int:
    """The deepest nesting of brackets in a document whose strings were blanked out."""
    steps = bare.translate(_BRACKETS, _NOT_BRACKET)
    return max(accumulate(array("b", steps), initial=0))


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


JsonInt = Annotated[int, BeforeValidator(_not_a_bool)]
"""An integer as JSON Schema has it: `3` and `3.0` are, `true` is not (pydantic's lax int
would take `true` as 1)."""
