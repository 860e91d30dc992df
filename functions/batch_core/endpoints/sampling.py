"""The sampling fields generating endpoints share: vLLM's extensions, and the ranges OpenAI
enforces on the fields a body sets (checked for every endpoint's body)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batch_core.endpoints.quoting import quoted
from batch_core.errors import LineError

# vLLM 0.32's extensions (ChatCompletionRequest, CompletionRequest).
VLLM_SAMPLING_FIELDS = frozenset(
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
RESPONSE_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema", "structural_tag"})


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
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
    if not is_int(value):
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
