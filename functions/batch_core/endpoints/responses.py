"""`/v1/responses`: OpenAI's Responses API, served by vLLM's OpenAIServingResponses.

Every request of a batch stands alone: the workers keep no responses and run nothing in the
background, so what needs a stored response is refused here, by name, rather than failing on
the GPU. vLLM keeps no response store unless VLLM_ENABLE_RESPONSES_API_STORE is set (it is
not), so `store` is ignored and nothing accumulates across a shard.
"""

from __future__ import annotations

from typing import Any

from batch_core.endpoints.spec import EndpointSpec, ServingEntry, UsageReader, without_prefix
from batch_core.errors import LineError

PATH = "/v1/responses"

_OPENAI_FIELDS = frozenset(
    {
        "access_programs", "background", "background_options", "context_management",
        "conversation", "image", "include", "input", "instructions", "max_output_tokens",
        "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
        "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
        "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
        "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip
# vLLM 0.32's ResponsesRequest beyond OpenAI's fields.
_VLLM_FIELDS = frozenset(
    {
        "cache_salt", "chat_template_kwargs", "ec_transfer_params", "enable_response_messages",
        "frequency_penalty", "ignore_eos", "include_reasoning", "include_stop_str_in_output",
        "kv_transfer_params", "logit_bias", "media_io_kwargs", "min_p", "mm_payload",
        "mm_processor_kwargs", "presence_penalty", "previous_input_messages", "priority",
        "repetition_penalty", "request_id", "return_mm_kwargs", "seed", "session_id",
        "skip_special_tokens", "stop", "stop_token_ids", "structured_outputs", "top_k",
        "vllm_xargs", "watermarking",
    }
)  # fmt: skip
FIELDS = _OPENAI_FIELDS | _VLLM_FIELDS

RESPONSE_ROLES = frozenset({"system", "developer", "user", "assistant"})
# Responses content parts that carry text (the rest: images, files, audio, tool output).
_RESPONSE_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


def check_responses(body: dict[str, Any]) -> int:
    """A Responses API body; returns its characters of input text (and refuses by name what
    would need a stored response)."""
    if body.get("background"):
        raise LineError.invalid(
            "background is not supported in a batch: it already runs offline.", "body.background"
        )
    for name in ("previous_response_id", "conversation"):
        if body.get(name) is not None:
            raise LineError.invalid(
                f"{name} is not supported in a batch: no response is stored between requests;"
                " put the earlier turns in body.input.",
                f"body.{name}",
            )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise LineError.invalid("body.instructions must be a string.", "body.instructions")
    chars = len(instructions or "")
    value = body.get("input")
    if isinstance(value, str) and value:
        return chars + len(value)
    if type(value) is not list or not value:
        raise LineError.invalid(
            "body.input must be a non-empty string or a list of input items.", "body.input"
        )
    for index, item in enumerate(value):
        where = f"body.input[{index}]"
        if type(item) is not dict:
            raise LineError.invalid(f"{where} must be an input item object.", where)
        role = item.get("role")
        if role is not None and role not in RESPONSE_ROLES:
            raise LineError.invalid(
                f"{where} needs a role among {', '.join(sorted(RESPONSE_ROLES))}, got {role!r}.",
                f"{where}.role",
            )
        if "content" in item:
            chars += _response_content_chars(item["content"], f"{where}.content")
        elif role is not None:
            raise LineError.invalid(f"{where}.content is required.", f"{where}.content")
    return chars


def _response_content_chars(content: object, where: str) -> int:
    if isinstance(content, str):
        return len(content)
    if type(content) is not list:
        raise LineError.invalid(
            f"Invalid '{where}': expected a string or a list of content parts.", where
        )
    chars = 0
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if type(part) is dict else None
        if not isinstance(kind, str):
            raise LineError.invalid(f"'{at}' must be a content part with a type.", f"{at}.type")
        if kind in _RESPONSE_TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise LineError.invalid(f"'{at}.text' must be a string.", f"{at}.text")
            chars += len(text)
    return chars  # its media URLs: media_urls.media_urls_of, from request_schema.check_body


SPEC = EndpointSpec(
    path=PATH,
    aliases=("responses",),
    fields=FIELDS,
    check=without_prefix(check_responses),
    serving=ServingEntry(
        "openai_serving_responses",
        "create_responses",
        "vllm.entrypoints.openai.responses.protocol:ResponsesRequest",
    ),
    # Responses bodies count `input_tokens` and `output_tokens`.
    usage=UsageReader("input_tokens", "output_tokens", "input_tokens_details"),
)
