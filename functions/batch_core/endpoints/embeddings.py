"""`/v1/embeddings`: OpenAI's embeddings (and vLLM's chat-style embeddings, a `messages`
body), served by vLLM's ServingEmbedding on a pooling model."""

from __future__ import annotations

from typing import Any

from batch_core.endpoints.fast import fast_decoder
from batch_core.endpoints.prompt_text import check_messages, prompt_chars
from batch_core.endpoints.spec import EndpointSpec, FastFacts, ServingEntry
from batch_core.errors import LineError

PATH = "/v1/embeddings"

_OPENAI_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})
# vLLM 0.32's EmbeddingCompletionRequest and EmbeddingChatRequest beyond OpenAI's fields.
_VLLM_FIELDS = frozenset(
    {
        "add_generation_prompt", "add_special_tokens", "cache_salt", "chat_template",
        "chat_template_kwargs", "continue_final_message", "embed_dtype", "endianness",
        "media_io_kwargs", "messages", "mm_processor_kwargs", "padding", "priority",
        "request_id", "truncate_prompt_tokens", "truncation_side", "use_activation",
    }
)  # fmt: skip
FIELDS = _OPENAI_FIELDS | _VLLM_FIELDS


def check_embedding(body: dict[str, Any]) -> tuple[int, int]:
    if "messages" in body:  # vLLM's chat-style embeddings request
        return check_messages(body.get("messages"))
    return prompt_chars(body.get("input"), "input"), 0


def _line_facts(body: Any) -> FastFacts | None:
    if body.messages is not None:
        return None  # vLLM's chat-style embeddings: the slow path checks those
    try:
        return prompt_chars(body.input, "input"), 0, 0, 1
    except LineError:
        return None


SPEC = EndpointSpec(
    path=PATH,
    aliases=("embeddings",),
    fields=FIELDS,
    check=check_embedding,
    serving=ServingEntry(
        "serving_embedding", None, "vllm.entrypoints.pooling.embed.protocol:EmbeddingRequest"
    ),
    pooling=True,
    fast=fast_decoder(PATH, "Embedding", FIELDS, _line_facts),
)
