"""The endpoints a batch may use, one family module each (as vLLM keeps one package per
endpoint): each module defines one `EndpointSpec` named `SPEC`, and `ENDPOINTS` registers it.

Intake (`validation`, `request_schema`, `fast_lines`), drops and the CLI (`drop_options`),
usage (`protocol.usage_of`) and the worker's engines (`gpu_worker/engines/`) read the specs,
so a new endpoint is its family module, its line in `_FAMILIES` and its tests. The batch
parameters' `models.Endpoint` type is the registry's too (the API's body, drops, and the
OpenAPI document's enum).
"""

from __future__ import annotations

from collections.abc import Container

from batch_core.endpoints import chat, completions, embeddings, rerank, responses, score
from batch_core.endpoints.spec import PROMPT_USAGE, EndpointSpec, UsageReader

__all__ = ["ENDPOINTS", "EndpointSpec", "aliases", "spec_for", "usage_reader"]

# In the order errors list them.
_FAMILIES = (chat, completions, embeddings, responses, score, rerank)

ENDPOINTS: dict[str, EndpointSpec] = {family.SPEC.path: family.SPEC for family in _FAMILIES}
"""Every endpoint served, by path. Its readers look it up at each use (no copies), so a
spec registered later (a test's) is served like the others."""


def spec_for(path: str) -> EndpointSpec | None:
    """The spec of `path`; None for an endpoint not served."""
    return ENDPOINTS.get(path)


def aliases() -> dict[str, str]:
    """Every short name (`chat`, `embeddings`) with the path it stands for."""
    return {alias: spec.path for spec in ENDPOINTS.values() for alias in spec.aliases}


def usage_reader(usage: Container[str]) -> UsageReader:
    """The reader of a body's `usage` object, known by its keys (an output line does not say
    which endpoint answered it): the first family's own reader whose input count it has, else
    the prompt-token reader most families share. (Runs once per result line: no copies.)"""
    for spec in ENDPOINTS.values():
        reader = spec.usage
        if reader is not PROMPT_USAGE and reader.input in usage:
            return reader
    return PROMPT_USAGE
