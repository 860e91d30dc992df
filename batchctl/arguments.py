"""Argument types that refuse a bad value in argparse itself: one line and exit code 2, with
the rule in the message, before any work starts."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from batch_core.batch_params import window_seconds
from batch_core.errors import InvalidRequestError


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int from `low` up (to `high`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {bound}")
        return value

    return parse


def real_number(
    what: str, refused: str, *, zero: bool = False, finite: bool = True
) -> Callable[[str], float]:
    """An argparse type: a number above zero (or from zero, with `zero`; finite unless told),
    named `what` when it is no number and `refused` when it is out of range."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ((value >= 0) if zero else (value > 0)) or (finite and value == float("inf")):
            raise argparse.ArgumentTypeError(f"{text} is not {refused}")
        return value

    return parse


seconds = real_number("a number of seconds", "a positive number of seconds", finite=False)
"""A positive number of seconds."""


def completion_window(text: str) -> str:
    """A completion window the API accepts (`24h`, `1h` to `168h`, `1d` to `7d`)."""
    try:
        window_seconds(text)
    except InvalidRequestError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no completion window: give 1h to 168h, or 1d to 7d"
        ) from None
    return text


rate = real_number("a number", "a positive number")
"""A positive, finite number (a throughput)."""
price = real_number("a price", "a price (zero or more)", zero=True)
"""A price: zero or more, finite."""
port = whole_number(0, 65535)
positive = whole_number(1)
