"""How an error message quotes a value from the input: enough to find it in the file."""

from __future__ import annotations

QUOTE_CHARS = 100
"""What an error message shows of a value from the input: enough to find it in the file.
An error is stored on the batch and listed with it, so it must not grow with the input."""


def clipped(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` (a value from the input, or a name or path made of one) cut to `limit`
    characters, then how long it was: `abc…(500000 bytes)`."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """A value from the input as a message quotes it (`repr`), cut as `clipped` cuts."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        size = len(value.encode("utf-8", "surrogatepass"))
        return f"{value[:limit]!r}…({size} bytes)"
    if isinstance(value, list | dict) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items"  # no repr of all of them
    return clipped(repr(value), limit)
