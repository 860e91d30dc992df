"""How a file dropped under inbox/ chooses its endpoint, completion window, metadata and mode.

Two ways, so any upload tool can set them:

- S3 object metadata (`aws s3 cp f.jsonl s3://bucket/inbox/ --metadata
  endpoint=/v1/embeddings,completion-window=72h,invalid-lines=skip,metadata-project=alpha`):
  `endpoint`, `completion-window`, `invalid-lines`, and `metadata-<key>` for each batch
  metadata pair. Other object metadata (tools add their own, e.g. `mtime`) is ignored.
- `name=value` folders in the key (`inbox/endpoint=embeddings/window=72h/f.jsonl`), for tools
  that cannot set object metadata: `endpoint`, `window` (or `completion_window`),
  `invalid_lines`; any other `name=value` folder becomes a batch metadata pair.

Object metadata wins over folders. Endpoints may be given in full (`/v1/embeddings`) or short
(`chat`, `completions`, `embeddings`). Without an endpoint the lines' own `url` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

from batch_core.errors import InvalidRequestError
from batch_core.models import SUPPORTED_ENDPOINTS
from batch_core.windows import window_seconds

InvalidLines = Literal["fail", "skip"]

# OpenAI's limits on batch metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

_SHORT_ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "chat.completions": "/v1/chat/completions",
    "chat-completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "score": "/v1/score",
    "rerank": "/v1/rerank",
}
_OPTION_NAMES = {
    "endpoint": "endpoint",
    "window": "completion_window",
    "completion_window": "completion_window",
    "completion-window": "completion_window",
    "invalid_lines": "invalid_lines",
    "invalid-lines": "invalid_lines",
}
_METADATA_PREFIX = "metadata-"


class DropOptions(BaseModel):
    """The batch parameters of a dropped file (what `batches.create` takes for API users)."""

    endpoint: str | None = None
    """The batch's endpoint; None lets the lines' `url` decide."""
    completion_window: str | None = None
    """None means the deployment's default window."""
    metadata: dict[str, str] | None = None
    invalid_lines: InvalidLines = "fail"
    """`fail` (OpenAI's behaviour): one bad line fails the batch. `skip`: the valid lines run
    and each bad line goes to the error file as a 400 line."""


def parse_endpoint(value: str) -> str:
    endpoint = _SHORT_ENDPOINTS.get(value.strip().lower(), value.strip())
    if endpoint not in SUPPORTED_ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint {value!r} is not supported; use one of {', '.join(SUPPORTED_ENDPOINTS)} "
            f"(or {', '.join(sorted(_SHORT_ENDPOINTS))}).",
            param="endpoint",
            code="invalid_option",
        )
    return endpoint


def parse_invalid_lines(value: str) -> InvalidLines:
    mode = value.strip().lower()
    if mode == "fail":
        return "fail"
    if mode == "skip":
        return "skip"
    raise InvalidRequestError(
        f"invalid_lines {value!r} must be 'fail' or 'skip'.",
        param="invalid_lines",
        code="invalid_option",
    )


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """OpenAI's metadata limits: 16 pairs, keys up to 64 characters, values up to 512."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
            param="metadata",
            code="invalid_option",
        )
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidRequestError(
                f"metadata key {key!r} must have 1 to {MAX_METADATA_KEY} characters.",
                param=f"metadata.{key}",
                code="invalid_option",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidRequestError(
                f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE} characters.",
                param=f"metadata.{key}",
                code="invalid_option",
            )
    return dict(metadata)


def drop_options(key: str, object_metadata: Mapping[str, str]) -> DropOptions:
    """The options of the object at `key` (under inbox/) with its S3 user metadata.

    Raises InvalidRequestError (with `param`) for a value that cannot be used.
    """
    raw: dict[str, str] = {}
    metadata: dict[str, str] = {}
    folders = key.split("/")[1:-1]  # between inbox/ and the file name
    for folder in folders:
        name, sep, value = folder.partition("=")
        if not sep:
            continue
        if name in _OPTION_NAMES:
            raw[_OPTION_NAMES[name]] = value
        else:
            metadata[name] = value
    for header, value in object_metadata.items():
        name = header.lower()
        if name.startswith(_METADATA_PREFIX):
            metadata[name[len(_METADATA_PREFIX) :]] = value
        elif name in _OPTION_NAMES and name != "window":
            raw[_OPTION_NAMES[name]] = value
    window = raw.get("completion_window")
    if window is not None:
        try:
            window_seconds(window)
        except InvalidRequestError as error:
            raise InvalidRequestError(
                str(error), param="completion_window", code="invalid_option"
            ) from error
    return DropOptions(
        endpoint=parse_endpoint(raw["endpoint"]) if "endpoint" in raw else None,
        completion_window=window,
        metadata=check_metadata(metadata) if metadata else None,
        invalid_lines=parse_invalid_lines(raw["invalid_lines"])
        if "invalid_lines" in raw
        else "fail",
    )
