"""Completion windows: `24h` (OpenAI's only value, our default) up to `7d`."""

from __future__ import annotations

import re

from batch_core.errors import InvalidRequestError

MIN_WINDOW_SECONDS = 3600
MAX_WINDOW_SECONDS = 7 * 24 * 3600
_WINDOW = re.compile(r"^(\d+)([hd])$")


def window_seconds(window: str) -> int:
    """Seconds in a completion window such as `24h` or `7d`."""
    match = _WINDOW.match(window)
    if not match:
        raise InvalidRequestError(
            f"completion_window {window!r} must look like '24h' or '7d'.",
            param="completion_window",
        )
    amount, unit = int(match.group(1)), match.group(2)
    seconds = amount * (3600 if unit == "h" else 86400)
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise InvalidRequestError(
            f"completion_window {window!r} must be between 1h and 7d.", param="completion_window"
        )
    return seconds
