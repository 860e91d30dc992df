"""What vLLM's score and rerank requests share (pooling models; OpenAI has neither endpoint):
their common fields and how their texts are read."""

from __future__ import annotations

import orjson

from batch_core.errors import LineError

# Every variant of vLLM 0.32's ScoreRequest and its RerankRequest has these.
POOLING_COMMON_FIELDS = frozenset(
    {
        "cache_salt", "chat_template_kwargs", "instruction", "max_tokens_per_doc",
        "max_tokens_per_query", "mm_processor_kwargs", "model", "padding", "priority",
        "request_id", "truncate_prompt_tokens", "truncation_side", "use_activation", "user",
    }
)  # fmt: skip
SCORES_REQUESTS = "vllm.entrypoints.pooling.scoring.protocol"
"""The module of vLLM's score and rerank request models (both served by ServingScores)."""


def pooling_text_chars(value: object, name: str, *, many: bool) -> int:
    """Characters of a score or rerank text: a string, a content object, or (`many`) a
    non-empty list of them."""
    if isinstance(value, str):
        return len(value)
    if type(value) is dict:
        return len(orjson.dumps(value))
    if many and type(value) is list and value:
        return sum(pooling_text_chars(item, name, many=False) for item in value)
    expected = "a string or a non-empty list of strings" if many else "a string"
    raise LineError.invalid(f"body.{name} must be {expected}.", f"body.{name}")
