"""What vLLM's score (`/v1/score`) and rerank (`/v1/rerank`) bodies must look like, checked at
intake (pooling models; OpenAI has neither endpoint).
"""

from __future__ import annotations

from typing import Any

import orjson

from batch_core.errors import LineError

# The pairs of fields a score request may compare (the four forms of vLLM's ScoreRequest).
SCORE_PAIRS = (
    ("queries", "documents"),
    ("queries", "items"),
    ("text_1", "text_2"),
    ("data_1", "data_2"),
)


def _pooling_text_chars(value: object, name: str, *, many: bool) -> int:
    """Characters of a score or rerank text: a string, a content object, or (`many`) a
    non-empty list of them."""
    if isinstance(value, str):
        return len(value)
    if type(value) is dict:
        return len(orjson.dumps(value))
    if many and type(value) is list and value:
        return sum(_pooling_text_chars(item, name, many=False) for item in value)
    expected = "a string or a non-empty list of strings" if many else "a string"
    raise LineError.invalid(f"body.{name} must be {expected}.", f"body.{name}")


def score_pair(body: dict[str, Any]) -> tuple[str, str]:
    """The two fields a score body compares (queries and documents unless it names another
    pair; `queries` goes with `documents` or with `items`)."""
    for first, second in SCORE_PAIRS:
        if second in body:
            return first, second
    for first, second in SCORE_PAIRS:
        if first in body:
            return first, second
    return SCORE_PAIRS[0]


def check_score(body: dict[str, Any]) -> int:
    """A vLLM score body (`/v1/score`): one pair of texts to compare."""
    first, second = score_pair(body)
    if first not in body and second not in body:
        raise LineError.invalid(
            "A score request needs queries and documents (or text_1 and text_2).", "body.queries"
        )
    return _pooling_text_chars(body.get(first), first, many=True) + _pooling_text_chars(
        body.get(second), second, many=True
    )


def check_rerank(body: dict[str, Any]) -> int:
    """A vLLM rerank body (`/v1/rerank`): a query and the documents to rank."""
    query = _pooling_text_chars(body.get("query"), "query", many=False)
    documents = body.get("documents")
    if type(documents) is not list or not documents:
        raise LineError.invalid("body.documents must be a non-empty list.", "body.documents")
    return query + _pooling_text_chars(documents, "documents", many=True)
