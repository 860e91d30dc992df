"""`/v1/rerank`: vLLM's ranking of documents against a query,
served by ServingScores."""

from __future__ import annotations

from typing import Any

from batch_core.endpoints.pooling import (
    POOLING_COMMON_FIELDS,
    SCORES_REQUESTS,
    pooling_text_chars,
)
from batch_core.endpoints.spec import EndpointSpec, ServingEntry, without_prefix
from batch_core.errors import LineError

PATH = "/v1/rerank"
FIELDS = POOLING_COMMON_FIELDS | {"query", "documents", "top_n"}


def check_rerank(body: dict[str, Any]) -> int:
    """A vLLM rerank body (`/v1/rerank`): a query and the documents to rank."""
    query = pooling_text_chars(body.get("query"), "query", many=False)
    documents = body.get("documents")
    if type(documents) is not list or not documents:
        raise LineError.invalid("body.documents must be a non-empty list.", "body.documents")
    return query + pooling_text_chars(documents, "documents", many=True)


SPEC = EndpointSpec(
    path=PATH,
    aliases=("rerank",),
    fields=FIELDS,
    check=without_prefix(check_rerank),
    serving=ServingEntry("serving_scores", None, f"{SCORES_REQUESTS}:RerankRequest"),
    pooling=True,
)
