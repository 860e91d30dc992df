"""What a request body must look like for each endpoint, checked without a model per line.

The checks mirror what OpenAI's API answers with a 400 for a synchronous request: required
fields, message roles and content parts, numeric ranges, `stream: true`, and unrecognized
fields ("Unrecognized request argument supplied: X"). A body field is accepted when OpenAI
documents it or when vLLM's request model has it (vLLM's sampling extensions such as `top_k`
and `structured_outputs` are why people self-host); tests/unit/test_request_schema.py checks
the vLLM list against the installed vLLM so an upgrade cannot drift silently.

What differs by endpoint (its fields, its body's own shape) is its family's spec in
`batch_core.endpoints`; `check_body` is the one check every body takes, over its spec. The
shared checks keep their names here for the modules that import them.

These dict checks are the authority on every error (code, message, param). Valid lines
usually take the faster typed path in `fast_lines`, which accepts only what these accept.
"""

from __future__ import annotations

from typing import Any

from batch_core.endpoints import ENDPOINTS
from batch_core.endpoints.prompt_text import (
    CHAT_ROLES,
    CONTENT_PART_TYPES,
    check_messages,
    prompt_chars,
)
from batch_core.endpoints.quoting import QUOTE_CHARS, clipped, quoted
from batch_core.endpoints.sampling import (
    RESPONSE_FORMAT_TYPES,
    check_response_format,
    check_sampling,
    check_stop,
)
from batch_core.errors import LineError
from batch_core.media_urls import MediaPolicy, refused_media

__all__ = [
    "ACCEPTED_FIELDS",
    "CHAT_ROLES",
    "CONTENT_PART_TYPES",
    "DENY_REMOTE_MEDIA",
    "POOLING_ENDPOINTS",
    "QUOTE_CHARS",
    "RESPONSE_FORMAT_TYPES",
    "check_body",
    "check_messages",
    "check_response_format",
    "check_sampling",
    "check_stop",
    "check_unknown_fields",
    "clipped",
    "prompt_chars",
    "quoted",
]

DENY_REMOTE_MEDIA = MediaPolicy()

ACCEPTED_FIELDS: dict[str, frozenset[str]] = {path: spec.fields for path, spec in ENDPOINTS.items()}
"""The accepted body fields of each endpoint, as registered at import (checks read the specs)."""
POOLING_ENDPOINTS = frozenset(path for path, spec in ENDPOINTS.items() if spec.pooling)
"""Endpoints served by pooling models: they generate no tokens (as registered at import)."""


def check_unknown_fields(body: dict[str, Any], url: str) -> None:
    accepted = ENDPOINTS[url].fields
    if body.keys() <= accepted:
        return
    name = clipped(min(body.keys() - accepted))
    raise LineError(
        "invalid_request", f"Unrecognized request argument supplied: {name}.", f"body.{name}"
    )


def check_body(
    body: dict[str, Any], url: str, media: MediaPolicy = DENY_REMOTE_MEDIA
) -> tuple[int, int]:
    """Check a body against its endpoint; returns (prompt characters, prefix digest).
    Every URL a worker would fetch, in any shape, must be one `media` lets it fetch."""
    if body.get("stream"):
        raise LineError("invalid_request", "Streaming is not supported in a batch.", "body.stream")
    spec = ENDPOINTS[url]
    if not body.keys() <= spec.fields:
        check_unknown_fields(body, url)
    chars, prefix = spec.check(body)
    check_sampling(body)
    # Every shape that carries a URL, by the walk the worker applies too (media_urls).
    refused = refused_media(body, url, media)
    if refused is not None:
        param, reason = refused
        raise LineError("media_url_refused", f"Invalid '{param}': {reason}.", param)
    return chars, prefix
