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


def seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def completion_window(text: str) -> str:
    """A completion window the API accepts (`24h`, `1h` to `168h`, `1d` to `7d`)."""
    try:
        window_seconds(text)
    except InvalidRequestError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no completion window: give 1h to 168h, or 1d to 7d"
        ) from None
    return text


def rate(text: str) -> float:
    """A positive, finite number (a throughput)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def price(text: str) -> float:
    """A price: zero or more, finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a price") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a price (zero or more)")
    return value


port = whole_number(0, 65535)
positive = whole_number(1)
