"""Completion windows: `24h` (OpenAI's only value, our default) up to `7d`."""

from __future__ import annotations

import re

from batch_core.errors import InvalidRequestError

MIN_WINDOW_SECONDS = 3600
MAX_WINDOW_SECONDS = 7 * 24 * 3600
WINDOW_PATTERN = r"^(?:(?:[1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h|[1-7]d)$"
"""Exactly the windows accepted: 1h to 168h, or 1d to 7d (the OpenAPI document states it)."""
_WINDOW = re.compile(WINDOW_PATTERN)


def window_seconds(window: str) -> int:
    """Seconds in a completion window such as `24h` or `7d`."""
    if not _WINDOW.fullmatch(window):  # fullmatch: "24h\n" is no window
        raise InvalidRequestError(
            f"completion_window {window!r} must be between 1h and 7d, written like '24h' or '7d'.",
            param="completion_window",
        )
    amount, unit = int(window[:-1]), window[-1]
    return amount * (3600 if unit == "h" else 86400)
