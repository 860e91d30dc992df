"""`/v1/score`: vLLM's score of pairs of texts (cosine similarity for an embedding model,
the classifier's score for a cross-encoder), served by ServingScores."""

from __future__ import annotations

from typing import Any

from batch_core.endpoints.pooling import (
    POOLING_COMMON_FIELDS,
    SCORES_REQUESTS,
    pooling_text_chars,
)
from batch_core.endpoints.spec import EndpointSpec, ServingEntry, without_prefix
from batch_core.errors import LineError

PATH = "/v1/score"

# The pairs of fields a score request may compare (the four forms of vLLM's ScoreRequest).
SCORE_PAIRS = (
    ("queries", "documents"),
    ("queries", "items"),
    ("text_1", "text_2"),
    ("data_1", "data_2"),
)
FIELDS = POOLING_COMMON_FIELDS | {name for pair in SCORE_PAIRS for name in pair}


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
    return pooling_text_chars(body.get(first), first, many=True) + pooling_text_chars(
        body.get(second), second, many=True
    )


SPEC = EndpointSpec(
    path=PATH,
    aliases=("score",),
    fields=FIELDS,
    check=without_prefix(check_score),
    serving=ServingEntry("serving_scores", None, f"{SCORES_REQUESTS}:ScoreRequest"),
    pooling=True,
)
