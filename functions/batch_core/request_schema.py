"""What a request body must look like for each endpoint, checked without a model per line.

The checks mirror what OpenAI's API answers with a 400 for a synchronous request: required
fields, message roles and content parts, numeric ranges, `stream: true`, and unrecognized
fields ("Unrecognized request argument supplied: X"). A body field is accepted when OpenAI
documents it or when vLLM's request model has it (vLLM's sampling extensions such as `top_k`
and `structured_outputs` are why people self-host); tests/unit/test_request_schema.py checks
the vLLM list against the installed vLLM so an upgrade cannot drift silently.

Plain dict checks rather than pydantic models: validation runs over up to a million lines,
and the body is passed on untouched to vLLM's own request models, which parse it again.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from batch_core.errors import LineError

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CONTENT_PART_TYPES = frozenset(
    {
        "text",
        "image_url",
        "input_audio",
        "audio_url",
        "video_url",
        "file",
        "refusal",
        "image_embeds",
        "image_pil",
        "input_image",
        "input_text",
    }
)
RESPONSE_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema", "structural_tag"})

_OPENAI_CHAT_FIELDS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
_OPENAI_COMPLETION_FIELDS = frozenset(
    {
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "model",
        "n", "presence_penalty", "prompt", "seed", "stop", "stream", "stream_options", "suffix",
        "temperature", "top_p", "user",
    }
)  # fmt: skip
_OPENAI_EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})

# vLLM 0.32's extensions (ChatCompletionRequest, CompletionRequest, Embedding*Request).
_VLLM_SAMPLING_FIELDS = frozenset(
    {
        "add_special_tokens", "allowed_token_ids", "bad_words", "cache_salt",
        "ec_transfer_params", "echo", "ignore_eos", "include_stop_str_in_output",
        "kv_transfer_params", "length_penalty", "logprob_token_ids", "min_p", "min_tokens",
        "mm_payload", "priority", "prompt_logprobs", "repetition_detection",
        "repetition_penalty", "request_id", "return_mm_kwargs", "return_token_ids",
        "return_token_offsets", "return_tokens_as_token_ids", "routed_experts_prompt_start",
        "session_id", "skip_special_tokens", "spaces_between_special_tokens", "stop_token_ids",
        "stream_interval", "structured_outputs", "thinking_token_budget", "top_k",
        "truncate_prompt_tokens", "truncation_side", "use_beam_search", "vllm_xargs",
        "watermarking",
    }
)  # fmt: skip
_VLLM_CHAT_FIELDS = frozenset(
    {
        "add_generation_prompt", "chat_template", "chat_template_kwargs",
        "continue_final_message", "documents", "include_reasoning", "media_io_kwargs",
        "mm_processor_kwargs", "return_prompt_text",
    }
)  # fmt: skip
_VLLM_EMBEDDING_FIELDS = frozenset(
    {
        "add_generation_prompt", "add_special_tokens", "cache_salt", "chat_template",
        "chat_template_kwargs", "continue_final_message", "embed_dtype", "endianness",
        "media_io_kwargs", "messages", "mm_processor_kwargs", "padding", "priority",
        "request_id", "truncate_prompt_tokens", "truncation_side", "use_activation",
    }
)  # fmt: skip

ACCEPTED_FIELDS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": _OPENAI_CHAT_FIELDS | _VLLM_SAMPLING_FIELDS | _VLLM_CHAT_FIELDS,
    "/v1/completions": _OPENAI_COMPLETION_FIELDS
    | _VLLM_SAMPLING_FIELDS
    | {"prompt_embeds", "response_format"},
    "/v1/embeddings": _OPENAI_EMBEDDING_FIELDS | _VLLM_EMBEDDING_FIELDS,
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise LineError(
            "invalid_request",
            f"Invalid 'body.{name}': expected an integer {bound}, got {value!r}.",
            f"body.{name}",
        )


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise LineError(
            "invalid_request",
            f"Invalid 'body.{name}': expected a number between {low} and {high}, got {value!r}.",
            f"body.{name}",
        )


def _check_stop(value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return
    raise LineError(
        "invalid_request",
        "Invalid 'body.stop': expected a string or a list of strings.",
        "body.stop",
    )


def _check_response_format(value: object) -> None:
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMAT_TYPES:
        raise LineError(
            "invalid_request",
            "Invalid 'body.response_format': expected an object whose type is one of "
            f"{', '.join(sorted(RESPONSE_FORMAT_TYPES))}.",
            "body.response_format.type",
        )
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise LineError(
                "invalid_request",
                "response_format json_schema needs a 'json_schema' object with a 'name'.",
                "body.response_format.json_schema",
            )


def check_sampling(body: dict[str, Any]) -> None:
    """Ranges OpenAI enforces on the sampling fields that are present."""
    for name in ("max_tokens", "max_completion_tokens"):
        if (value := body.get(name)) is not None:
            _check_int(name, value, 1)
    if (value := body.get("n")) is not None:
        _check_int("n", value, 1, 128)
    if (value := body.get("temperature")) is not None:
        _check_number("temperature", value, 0, 2)
    if (value := body.get("top_p")) is not None:
        _check_number("top_p", value, 0, 1)
    for name in ("presence_penalty", "frequency_penalty"):
        if (value := body.get(name)) is not None:
            _check_number(name, value, -2, 2)
    if (value := body.get("seed")) is not None and not _is_int(value):
        raise LineError("invalid_request", "Invalid 'body.seed': expected an integer.", "body.seed")
    if "stop" in body:
        _check_stop(body["stop"])
    if (value := body.get("response_format")) is not None:
        _check_response_format(value)


def check_unknown_fields(body: dict[str, Any], url: str) -> None:
    unknown = body.keys() - ACCEPTED_FIELDS[url]
    if unknown:
        name = min(unknown)
        raise LineError(
            "invalid_request", f"Unrecognized request argument supplied: {name}.", f"body.{name}"
        )


def _text_chars(content: object, where: str) -> int:
    """Characters of text in a message's content; raises for content OpenAI would refuse."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        raise LineError(
            "invalid_request",
            f"Invalid '{where}': expected a string or a list of content parts.",
            where,
        )
    chars = 0
    for index, part in enumerate(content):
        part_at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in CONTENT_PART_TYPES:
            raise LineError(
                "invalid_request",
                f"Invalid '{part_at}.type': expected one of "
                f"{', '.join(sorted(CONTENT_PART_TYPES))}, got {kind!r}.",
                f"{part_at}.type",
            )
        assert isinstance(part, dict)
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise LineError(
                    "invalid_request", f"'{part_at}.text' must be a string.", f"{part_at}.text"
                )
            chars += len(text)
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise LineError(
                    "invalid_request",
                    f"'{part_at}.image_url' must be an object with a 'url' string.",
                    f"{part_at}.image_url",
                )
    return chars


def check_messages(messages: object) -> tuple[int, int]:
    """Characters of prompt text, and a digest of the leading messages (0: none).

    The leading messages are all but the last one: a shared system prompt or few-shot
    preamble, which the shard planner keeps together for vLLM's prefix cache.
    """
    if not isinstance(messages, list) or not messages:
        raise LineError(
            "invalid_request", "body.messages must be a non-empty list.", "body.messages"
        )
    chars = 0
    for index, message in enumerate(messages):
        where = f"body.messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise LineError(
                "invalid_request",
                f"{where} needs a role among {', '.join(sorted(CHAT_ROLES))}, got {role!r}.",
                f"{where}.role",
            )
        assert isinstance(message, dict)
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            raise LineError("invalid_request", f"{where}.content is required.", f"{where}.content")
        chars += _text_chars(content, f"{where}.content")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise LineError(
                "invalid_request",
                f"{where} has role 'tool' and needs a 'tool_call_id' string.",
                f"{where}.tool_call_id",
            )
    return chars, _digest(messages[:-1]) if len(messages) > 1 else 0


def _digest(value: object) -> int:
    """A stable 64-bit digest (never 0, which means "no prefix")."""
    data = orjson.dumps(value)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


def _prompt_chars(value: object, name: str) -> int:
    """Characters of a completions prompt or an embeddings input (strings or token ids)."""
    if isinstance(value, str) and value:
        return len(value)
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return sum(len(item) for item in value)
        if all(_is_int(item) for item in value):
            return 4 * len(value)  # token ids: about four characters each
        if all(isinstance(item, list) and all(_is_int(t) for t in item) for item in value):
            return 4 * sum(len(item) for item in value)
    raise LineError(
        "invalid_request",
        f"body.{name} must be a non-empty string, a list of strings, or token ids.",
        f"body.{name}",
    )


def check_body(body: dict[str, Any], url: str) -> tuple[int, int]:
    """Check a body against its endpoint; returns (prompt characters, prefix digest)."""
    if body.get("stream"):
        raise LineError("invalid_request", "Streaming is not supported in a batch.", "body.stream")
    check_unknown_fields(body, url)
    if url == "/v1/chat/completions":
        chars, prefix = check_messages(body.get("messages"))
    elif url == "/v1/completions":
        chars, prefix = _prompt_chars(body.get("prompt"), "prompt"), 0
    elif "messages" in body:  # vLLM's chat-style embeddings request
        chars, prefix = check_messages(body.get("messages"))
    else:
        chars, prefix = _prompt_chars(body.get("input"), "input"), 0
    check_sampling(body)
    return chars, prefix
