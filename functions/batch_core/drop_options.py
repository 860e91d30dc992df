"""How a file dropped under inbox/ chooses its endpoint, completion window, metadata and mode.

Two ways, so any upload tool can set them:

- S3 object metadata (`aws s3 cp f.jsonl s3://bucket/inbox/ --metadata
  endpoint=/v1/embeddings,completion-window=72h,invalid-lines=skip,metadata-project=alpha`):
  `endpoint`, `completion-window`, `invalid-lines`, `priority` (-1000 to 1000: a tenant's
  own batches in one tier, higher first), and `metadata-<key>` for each batch metadata pair.
  Other object metadata (tools add their own, e.g. `mtime`) is ignored.
- `name=value` folders in the key (`inbox/endpoint=embeddings/window=72h/f.jsonl`), for tools
  that cannot set object metadata: `endpoint`, `window` (or `completion_window`),
  `invalid_lines`, `priority`; any other `name=value` folder becomes a batch metadata pair.

`reuse-results=true` (object metadata or folder; `reuse_results` too) opts the batch in to
reuse results across the tenant's batches (`reuse`): it is the metadata pair
`reuse_results: "true"`, as the API takes it.

Object metadata wins over folders. Endpoints may be given in full (`/v1/embeddings`) or by a
short name of their family's spec (`chat`, `completions`, `embeddings`: `batch_core.endpoints`).
Without an endpoint the lines' own `url` decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from batch_core import endpoints
from batch_core.batch_params import (
    CompletionWindow,
    Endpoint,
    InvalidLines,
    Metadata,
    Priority,
    checked,
)
from batch_core.errors import InvalidRequestError
from batch_core.reuse import REUSE_RESULTS, check_reuse_option

_OPTION_NAMES = {
    "endpoint": "endpoint",
    "window": "completion_window",
    "completion_window": "completion_window",
    "completion-window": "completion_window",
    "invalid_lines": "invalid_lines",
    "invalid-lines": "invalid_lines",
    "priority": "priority",
}
_METADATA_PREFIX = "metadata-"
_REUSE_NAMES = frozenset({"reuse-results", REUSE_RESULTS})


class DropOptions(BaseModel):
    """The batch parameters of a dropped file (`batch_params` types, as the API's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: Endpoint | None = None
    """The batch's endpoint; None lets the lines' `url` decide."""
    completion_window: CompletionWindow | None = None
    """None means the deployment's default window."""
    metadata: Metadata | None = None
    invalid_lines: InvalidLines = "fail"
    priority: Priority = 0


def parse_endpoint(value: str) -> str:
    """A full or short endpoint name (`chat`, `embeddings`) as the full one."""
    short = endpoints.aliases()
    endpoint = short.get(value.strip().lower(), value.strip())
    if endpoint not in endpoints.ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint {value!r} is not supported; "
            f"use one of {', '.join(endpoints.ENDPOINTS)} (or {', '.join(sorted(short))}).",
            param="endpoint",
            code="invalid_option",
        )
    return endpoint


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
        elif name in _REUSE_NAMES:
            metadata[REUSE_RESULTS] = value.strip().lower()
        else:
            metadata[name] = value
    for header, value in object_metadata.items():
        name = header.lower()
        if name.startswith(_METADATA_PREFIX):
            metadata[name[len(_METADATA_PREFIX) :]] = value
        elif name in _REUSE_NAMES:
            metadata[REUSE_RESULTS] = value.strip().lower()
        elif name in _OPTION_NAMES and name != "window":
            raw[_OPTION_NAMES[name]] = value
    if "endpoint" in raw:
        raw["endpoint"] = parse_endpoint(raw["endpoint"])
    if "invalid_lines" in raw:
        raw["invalid_lines"] = raw["invalid_lines"].strip().lower()
    check_reuse_option(metadata, "reuse-results", code="invalid_option")
    values: dict[str, object] = {**raw, "metadata": metadata or None}
    if "priority" in raw:  # text in metadata and keys: a whole number, nothing else
        text = raw["priority"].strip()
        values["priority"] = int(text) if re.fullmatch(r"[+-]?[0-9]{1,6}", text) else text
    return checked(DropOptions, values, code="invalid_option")
