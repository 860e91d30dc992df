"""The parameters a batch is created with: one annotated type each, checked by one model.

Every edge that makes a batch checks them here, so a value refused at one is refused at all:
the HTTP body (`api_models.BatchCreateParams` is built from these types), a dropped file's
options (`drop_options`), and the service call itself (`Batches.create_batch`, which retries
and tests call directly). A refused value becomes an `InvalidRequestError` naming its param.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from batch_core.errors import InvalidRequestError
from batch_core.models import SUPPORTED_ENDPOINTS, Endpoint
from batch_core.retention import ExpiresAfter

__all__ = [
    "SUPPORTED_ENDPOINTS",
    "BatchParams",
    "CompletionWindow",
    "Endpoint",
    "InvalidLines",
    "Metadata",
    "Priority",
    "checked",
    "window_seconds",
]

MIN_WINDOW_SECONDS = 3600
MAX_WINDOW_SECONDS = 7 * 24 * 3600
WINDOW_PATTERN = r"^(?:(?:[1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h|[1-7]d)$"
"""Exactly the windows accepted: 1h to 168h, or 1d to 7d (the OpenAPI document states it)."""
_WINDOW = re.compile(WINDOW_PATTERN)

# OpenAI's limits on batch metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def _check_window(window: str) -> str:
    if not _WINDOW.fullmatch(window):  # fullmatch: "24h\n" is no window
        raise PydanticCustomError(
            "completion_window",
            "'{window}' must be between 1h and 7d, written like '24h' or '7d'",
            {"window": window},
        )
    return window


CompletionWindow = Annotated[
    str,
    AfterValidator(_check_window),
    WithJsonSchema({"type": "string", "pattern": WINDOW_PATTERN}),
]
"""`24h` (OpenAI's only value, the default); `1h` to `168h` or `1d` to `7d`."""

InvalidLines = Literal["fail", "skip"]
"""`fail` (OpenAI's behaviour): one bad line fails the batch. `skip`: the valid lines run and
each bad line goes to the error file as a 400 line."""

Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY)],
        Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]
"""Up to 16 pairs; keys of 1 to 64 characters, values up to 512."""


MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


def _whole_number(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 to a JSON Schema `integer` (and to the
    clients that write it so); strings and booleans stay refused (strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The bounds before the validator, so the JSON Schema says minimum/maximum.
Priority = Annotated[
    int, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY, strict=True), BeforeValidator(_whole_number)
]
"""Extension: orders a tenant's own batches inside a scheduling tier (higher first; equal ones
take turns as before); never another tenant's. -1000 to 1000, default 0."""


def window_seconds(window: CompletionWindow) -> int:
    """Seconds in a completion window such as `24h` or `7d`."""
    checked(_Window, {"completion_window": window})
    amount, unit = int(window[:-1]), window[-1]
    return amount * (3600 if unit == "h" else 86400)


class BatchParams(BaseModel):
    """What a batch is asked to be, apart from its input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: Endpoint
    completion_window: CompletionWindow = "24h"
    metadata: Metadata | None = None
    invalid_lines: InvalidLines = "fail"
    output_expires_after: ExpiresAfter | None = None
    """How long the output and error Files are kept (default: the deployment's)."""
    priority: Priority = 0


class _Window(BaseModel):
    completion_window: CompletionWindow


def problem_of(error: Mapping[str, Any]) -> tuple[str, str | None]:
    """A refused value as OpenAI says it: a message and the dotted param (`metadata.k`).

    The API's request-validation handler uses it too, so both edges word a problem alike."""
    # pydantic places a bad dict key at `(..., key, "[key]")`, its value at `(..., key)`.
    skipped = {"body", "query", "[key]"}
    param = ".".join(str(part) for part in error.get("loc", ()) if part not in skipped) or None
    if error.get("type") == "missing":
        return f"Missing required parameter: {param!r}.", param
    return f"Invalid value for {param!r}: {error.get('msg', 'invalid')}.", param


Params = TypeVar("Params", bound=BaseModel)


def checked(
    model: type[Params], values: dict[str, object], *, code: str = "invalid_value"
) -> Params:
    """`values` as a `model`, or an InvalidRequestError naming the first one refused."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        message, param = problem_of(error.errors(include_url=False)[0])
        raise InvalidRequestError(message, param=param, code=code) from error
