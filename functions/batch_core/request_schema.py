"""What a request body must look like for each endpoint, checked without a model per line.

The checks mirror what OpenAI's API answers with a 400 for a synchronous request: required
fields, message roles and content parts, numeric ranges, `stream: true`, and unrecognized
fields ("Unrecognized request argument supplied: X"). A body field is accepted when OpenAI
documents it or when vLLM's request model has it (vLLM's sampling extensions such as `top_k`
and `structured_outputs` are why people self-host); tests/unit/test_request_schema.py checks
the vLLM list against the installed vLLM so an upgrade cannot drift silently.

These dict checks are the authority on every error (code, message, param). Valid lines
usually take the faster typed path in `fast_lines`, which accepts only what these accept.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import orjson

from batch_core.errors import LineError
from batch_core.media_urls import MediaPolicy, refused_media
from batch_core.pooling_schema import SCORE_PAIRS, check_rerank, check_score
from batch_core.responses_schema import check_responses

DENY_REMOTE_MEDIA = MediaPolicy()

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
_OPENAI_RESPONSES_FIELDS = frozenset(
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

# vLLM 0.32's ResponsesRequest beyond OpenAI's fields.
_VLLM_RESPONSES_FIELDS = frozenset(
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
# vLLM's pooling requests (no OpenAI counterpart): every variant of ScoreRequest, RerankRequest.
_VLLM_POOLING_COMMON = frozenset(
    {
        "cache_salt", "chat_template_kwargs", "instruction", "max_tokens_per_doc",
        "max_tokens_per_query", "mm_processor_kwargs", "model", "padding", "priority",
        "request_id", "truncate_prompt_tokens", "truncation_side", "use_activation", "user",
    }
)  # fmt: skip
_VLLM_SCORE_FIELDS = _VLLM_POOLING_COMMON | {name for pair in SCORE_PAIRS for name in pair}
_VLLM_RERANK_FIELDS = _VLLM_POOLING_COMMON | {"query", "documents", "top_n"}

ACCEPTED_FIELDS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": _OPENAI_CHAT_FIELDS | _VLLM_SAMPLING_FIELDS | _VLLM_CHAT_FIELDS,
    "/v1/completions": _OPENAI_COMPLETION_FIELDS
    | _VLLM_SAMPLING_FIELDS
    | {"prompt_embeds", "response_format"},
    "/v1/embeddings": _OPENAI_EMBEDDING_FIELDS | _VLLM_EMBEDDING_FIELDS,
    "/v1/responses": _OPENAI_RESPONSES_FIELDS | _VLLM_RESPONSES_FIELDS,
    "/v1/score": _VLLM_SCORE_FIELDS,
    "/v1/rerank": _VLLM_RERANK_FIELDS,
}
# Endpoints served by pooling models: they generate no tokens.
POOLING_ENDPOINTS = frozenset({"/v1/embeddings", "/v1/score", "/v1/rerank"})


QUOTE_CHARS = 100
"""What an error message shows of a value from the input: enough to find it in the file.
An error is stored on the batch and listed with it, so it must not grow with the input."""


def clipped(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` (a value from the input, or a name or path made of one) cut to `limit`
    characters, then how long it was: `abc…(500000 bytes)`."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """A value from the input as a message quotes it (`repr`), cut as `clipped` cuts."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        size = len(value.encode("utf-8", "surrogatepass"))
        return f"{value[:limit]!r}…({size} bytes)"
    if isinstance(value, list | dict) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items"  # no repr of all of them
    return clipped(repr(value), limit)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise LineError(
            "invalid_request",
            f"Invalid 'body.{name}': expected an integer {bound}, got {quoted(value)}.",
            f"body.{name}",
        )


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise LineError(
            "invalid_request",
            f"Invalid 'body.{name}': expected a number between {low} and {high}, "
            f"got {quoted(value)}.",
            f"body.{name}",
        )


def check_stop(value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return
    raise LineError(
        "invalid_request",
        "Invalid 'body.stop': expected a string or a list of strings.",
        "body.stop",
    )


def check_response_format(value: object) -> None:
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


def _check_seed(name: str, value: object) -> None:
    if not _is_int(value):
        raise LineError("invalid_request", "Invalid 'body.seed': expected an integer.", "body.seed")


# The fields OpenAI range-checks, each with its check; a line pays only for those it sets.
_SAMPLING_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "max_tokens": lambda name, value: _check_int(name, value, 1),
    "max_completion_tokens": lambda name, value: _check_int(name, value, 1),
    "max_output_tokens": lambda name, value: _check_int(name, value, 1),
    "top_logprobs": lambda name, value: _check_int(name, value, 0, 20),
    "top_n": lambda name, value: _check_int(name, value, 0),
    "n": lambda name, value: _check_int(name, value, 1, 128),
    "temperature": lambda name, value: _check_number(name, value, 0, 2),
    "top_p": lambda name, value: _check_number(name, value, 0, 1),
    "presence_penalty": lambda name, value: _check_number(name, value, -2, 2),
    "frequency_penalty": lambda name, value: _check_number(name, value, -2, 2),
    "seed": _check_seed,
    "stop": lambda name, value: check_stop(value),
    "response_format": lambda name, value: check_response_format(value),
}
_CHECKED_FIELDS = frozenset(_SAMPLING_CHECKS)
_TOKEN_LIMITS = frozenset({"max_tokens", "max_completion_tokens", "max_output_tokens"})


def check_sampling(body: dict[str, Any]) -> None:
    """Ranges OpenAI enforces on the sampling fields that are present (null means unset)."""
    present = body.keys() & _CHECKED_FIELDS
    for name in sorted(present) if len(present) > 1 else present:
        value = body[name]
        if value is None:
            continue
        if name in _TOKEN_LIMITS:
            if type(value) is not int or value < 1:
                _check_int(name, value, 1)
        elif name == "temperature":
            if not (type(value) is float or type(value) is int) or not 0 <= value <= 2:
                _check_number(name, value, 0, 2)
        else:
            _SAMPLING_CHECKS[name](name, value)


def check_unknown_fields(body: dict[str, Any], url: str) -> None:
    accepted = ACCEPTED_FIELDS[url]
    if body.keys() <= accepted:
        return
    name = clipped(min(body.keys() - accepted))
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
                f"{', '.join(sorted(CONTENT_PART_TYPES))}, got {quoted(kind)}.",
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
    preamble, which the shard planner keeps together for vLLM's prefix cache. The digest is
    a CRC of the contents: it only picks a shard slot, so a collision merely shares one.
    """
    if type(messages) is not list or not messages:
        raise LineError(
            "invalid_request", "body.messages must be a non-empty list.", "body.messages"
        )
    chars = 0
    prefix = 0
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message.get("role") if type(message) is dict else None
        if role not in CHAT_ROLES:
            where = f"body.messages[{index}]"
            raise LineError(
                "invalid_request",
                f"{where} needs a role among {', '.join(sorted(CHAT_ROLES))}, got {quoted(role)}.",
                f"{where}.role",
            )
        content = message.get("content")
        if type(content) is str:  # the common case, kept short
            chars += len(content)
        else:
            chars += _other_content(message, role, content, f"body.messages[{index}]")
        if index < last:
            text = content.encode() if type(content) is str else orjson.dumps(content)
            prefix = zlib.crc32(text, prefix)
        if role == "tool" and type(message.get("tool_call_id")) is not str:
            where = f"body.messages[{index}]"
            raise LineError(
                "invalid_request",
                f"{where} has role 'tool' and needs a 'tool_call_id' string.",
                f"{where}.tool_call_id",
            )
    return chars, (prefix or 1) if last else 0


def _other_content(message: dict[str, Any], role: str, content: object, where: str) -> int:
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return 0
        raise LineError("invalid_request", f"{where}.content is required.", f"{where}.content")
    return _text_chars(content, f"{where}.content")


def prompt_chars(value: object, name: str) -> int:
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


def check_body(
    body: dict[str, Any], url: str, media: MediaPolicy = DENY_REMOTE_MEDIA
) -> tuple[int, int]:
    """Check a body against its endpoint; returns (prompt characters, prefix digest).
    Every URL a worker would fetch, in any shape, must be one `media` lets it fetch."""
    if body.get("stream"):
        raise LineError("invalid_request", "Streaming is not supported in a batch.", "body.stream")
    if not body.keys() <= ACCEPTED_FIELDS[url]:
        check_unknown_fields(body, url)
    if url == "/v1/chat/completions":
        chars, prefix = check_messages(body.get("messages"))
    elif url == "/v1/completions":
        chars, prefix = prompt_chars(body.get("prompt"), "prompt"), 0
    elif url == "/v1/responses":
        chars, prefix = check_responses(body), 0
    elif url == "/v1/score":
        chars, prefix = check_score(body), 0
    elif url == "/v1/rerank":
        chars, prefix = check_rerank(body), 0
    elif "messages" in body:  # vLLM's chat-style embeddings request
        chars, prefix = check_messages(body.get("messages"))
    else:
        chars, prefix = prompt_chars(body.get("input"), "input"), 0
    check_sampling(body)
    # Every shape that carries a URL, by the walk the worker applies too (media_urls).
    refused = refused_media(body, url, media)
    if refused is not None:
        param, reason = refused
        raise LineError("media_url_refused", f"Invalid '{param}': {reason}.", param)
    return chars, prefix
