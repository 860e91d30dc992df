"""The accepted body fields stay in step with the vLLM the workers run."""

from __future__ import annotations

import pytest

from batch_core.request_schema import ACCEPTED_FIELDS


def test_every_field_vllm_accepts_is_accepted() -> None:
    pytest.importorskip("vllm")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.pooling.embed.protocol import (
        EmbeddingChatRequest,
        EmbeddingCompletionRequest,
    )

    expected = {
        "/v1/chat/completions": set(ChatCompletionRequest.model_fields),
        "/v1/completions": set(CompletionRequest.model_fields),
        "/v1/embeddings": set(EmbeddingCompletionRequest.model_fields)
        | set(EmbeddingChatRequest.model_fields),
    }
    for url, fields in expected.items():
        missing = fields - ACCEPTED_FIELDS[url]
        assert not missing, f"{url}: vLLM accepts {sorted(missing)}; add them to request_schema"
