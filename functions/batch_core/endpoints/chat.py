"""`/v1/chat/completions`: OpenAI's chat completions, served by vLLM's OpenAIServingChat."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Literal

import msgspec

from batch_core.endpoints.fast import fast_decoder
from batch_core.endpoints.prompt_text import check_messages
from batch_core.endpoints.sampling import (
    VLLM_SAMPLING_FIELDS,
    check_response_format,
    check_stop,
)
from batch_core.endpoints.spec import EndpointSpec, FastFacts, ServingEntry
from batch_core.errors import LineError

PATH = "/v1/chat/completions"

_OPENAI_FIELDS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
# vLLM 0.32's ChatCompletionRequest beyond its sampling extensions.
_VLLM_CHAT_FIELDS = frozenset(
    {
        "add_generation_prompt", "chat_template", "chat_template_kwargs",
        "continue_final_message", "documents", "include_reasoning", "media_io_kwargs",
        "mm_processor_kwargs", "return_prompt_text",
    }
)  # fmt: skip
FIELDS = _OPENAI_FIELDS | VLLM_SAMPLING_FIELDS | _VLLM_CHAT_FIELDS


def check_chat(body: dict[str, Any]) -> tuple[int, int]:
    return check_messages(body.get("messages"))


class _Message(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | None = None  # content parts (a list) fail here and take the slow path
    tool_call_id: Any = None
    tool_calls: Any = None
    function_call: Any = None


def chat_line_facts(body: Any) -> FastFacts | None:
    """The facts of a decoded chat body, or None for the slow path. The validator's loop
    calls this once per line, so it is written out rather than built of smaller calls.

    The digest matches `prompt_text.check_messages` for string contents.
    """
    try:
        if body.stop is not None:
            check_stop(body.stop)
        if body.response_format is not None:
            check_response_format(body.response_format)
    except LineError:
        return None
    chars = prefix = 0
    messages = body.messages
    last = len(messages) - 1
    for index, message in enumerate(messages):
        content = message.content
        if content is None:
            return None  # legal only for some assistant messages: the slow path decides
        chars += len(content)
        if index < last:
            prefix = zlib.crc32(content.encode(), prefix)
        if message.role == "tool" and type(message.tool_call_id) is not str:
            return None
    limit = body.max_completion_tokens or body.max_tokens
    choices = body.n or 1
    return (
        chars,
        (prefix or 1) if last else 0,
        None if limit is None else limit * choices,
        choices,
    )


def chat_facts(body: Any) -> tuple[int, int] | None:
    """Prompt characters and preamble digest of a decoded chat body, or None for the slow path."""
    facts = chat_line_facts(body)
    return None if facts is None else (facts[0], facts[1])


SPEC = EndpointSpec(
    path=PATH,
    aliases=("chat", "chat.completions", "chat-completions"),
    fields=FIELDS,
    check=check_chat,
    serving=ServingEntry(
        "openai_serving_chat",
        "create_chat_completion",
        "vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest",
    ),
    fast=fast_decoder(
        PATH,
        "Chat",
        FIELDS,
        chat_line_facts,
        {"messages": Annotated[list[_Message], msgspec.Meta(min_length=1)]},
    ),
)
