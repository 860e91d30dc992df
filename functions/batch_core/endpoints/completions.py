"""`/v1/completions`: OpenAI's (legacy) text completions, served by vLLM's
OpenAIServingCompletion."""

from __future__ import annotations

from typing import Any

from batch_core.endpoints.fast import fast_decoder
from batch_core.endpoints.prompt_text import prompt_chars
from batch_core.endpoints.sampling import (
    VLLM_SAMPLING_FIELDS,
    check_response_format,
    check_stop,
)
from batch_core.endpoints.spec import EndpointSpec, FastFacts, ServingEntry
from batch_core.errors import LineError

PATH = "/v1/completions"

_OPENAI_FIELDS = frozenset(
    {
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "model",
        "n", "presence_penalty", "prompt", "seed", "stop", "stream", "stream_options", "suffix",
        "temperature", "top_p", "user",
    }
)  # fmt: skip
# vLLM 0.32's CompletionRequest beyond its sampling extensions.
FIELDS = _OPENAI_FIELDS | VLLM_SAMPLING_FIELDS | {"prompt_embeds", "response_format"}


def check_completion(body: dict[str, Any]) -> tuple[int, int]:
    return prompt_chars(body.get("prompt"), "prompt"), 0


def _line_facts(body: Any) -> FastFacts | None:
    try:
        if body.stop is not None:
            check_stop(body.stop)
        if body.response_format is not None:
            check_response_format(body.response_format)
        chars = prompt_chars(body.prompt, "prompt")
    except LineError:
        return None
    choices = body.n or 1
    # Its only token limit: `max_completion_tokens` is chat's, refused here as unknown.
    limit = body.max_tokens
    return chars, 0, None if limit is None else limit * choices, choices


SPEC = EndpointSpec(
    path=PATH,
    aliases=("completions",),
    fields=FIELDS,
    check=check_completion,
    serving=ServingEntry(
        "openai_serving_completion",
        "create_completion",
        "vllm.entrypoints.openai.completion.protocol:CompletionRequest",
    ),
    fast=fast_decoder(PATH, "Completion", FIELDS, _line_facts),
)
