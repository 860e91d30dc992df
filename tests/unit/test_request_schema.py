"""The accepted body fields stay in step with the vLLM the workers run."""

from __future__ import annotations

from typing import get_args

import pytest

from batch_core.request_schema import ACCEPTED_FIELDS


def test_every_field_vllm_accepts_is_accepted() -> None:
    pytest.importorskip("vllm")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
    from vllm.entrypoints.pooling.embed.protocol import (
        EmbeddingChatRequest,
        EmbeddingCompletionRequest,
    )
    from vllm.entrypoints.pooling.scoring.protocol import RerankRequest, ScoreRequest

    expected = {
        "/v1/chat/completions": set(ChatCompletionRequest.model_fields),
        "/v1/completions": set(CompletionRequest.model_fields),
        "/v1/embeddings": set(EmbeddingCompletionRequest.model_fields)
        | set(EmbeddingChatRequest.model_fields),
        "/v1/responses": set(ResponsesRequest.model_fields),
        "/v1/score": {name for model in get_args(ScoreRequest) for name in model.model_fields},
        "/v1/rerank": set(RerankRequest.model_fields),
    }
    for url, fields in expected.items():
        missing = fields - ACCEPTED_FIELDS[url]
        assert not missing, f"{url}: vLLM accepts {sorted(missing)}; add them to request_schema"


def test_every_field_the_openai_sdk_sends_to_responses_is_accepted() -> None:
    from openai.types.responses import response_create_params

    sdk_fields = set(response_create_params.ResponseCreateParamsBase.__annotations__)
    missing = sdk_fields - ACCEPTED_FIELDS["/v1/responses"]
    assert not missing, f"the OpenAI SDK sends {sorted(missing)}; add them to request_schema"
