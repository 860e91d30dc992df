"""A deterministic engine for fast tests: OpenAI-shaped bodies, no model.

It answers like a server would (chat.completion, text_completion, embedding lists, a 400 for a
prompt longer than its context, a 404 for another model), so the pipeline around it is
exercised for real; only the text is made up. Like the vLLM engine it goes by the endpoint's
spec: the body shape follows the vLLM request model its serving entry names.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from batch_core.endpoints import spec_for
from batch_core.endpoints.score import score_pair
from batch_core.protocol import EngineRequest, EngineResult

Reply = Literal["chat", "completion", "responses", "embedding", "score", "rerank"]
# What the fake answers for each vLLM request model a serving entry may name (by class name).
_REPLIES: dict[str, Reply] = {
    "ChatCompletionRequest": "chat",
    "CompletionRequest": "completion",
    "ResponsesRequest": "responses",
    "EmbeddingRequest": "embedding",
    "ScoreRequest": "score",
    "RerankRequest": "rerank",
}


def reply_of(url: str) -> Reply | None:
    """The kind of body the fake answers `url` with; None for an endpoint it cannot serve."""
    spec = spec_for(url)
    return None if spec is None else _REPLIES.get(spec.serving.request.rpartition(":")[2])


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [w for item in value for w in _words(item)]
    if isinstance(value, dict):
        return _words(value.get("content") or value.get("text") or "")  # messages, parts
    return []


class FakeEngine:
    """Echoes prompts back; a token is a whitespace-separated word."""

    def __init__(
        self,
        served_model: str = "fake-model",
        max_model_len: int = 2048,
        seconds_per_request: float = 0.0,
        hang_after_requests: int | None = None,
    ) -> None:
        """`seconds_per_request` makes it slow enough for crash tests to catch it mid-shard;
        `hang_after_requests` makes it hang for good after that many answers, as a wedged GPU
        does, for the stall watchdog's tests."""
        self._served_model = served_model
        self.max_model_len = max_model_len
        self.seconds_per_request = seconds_per_request
        self.hang_after_requests = hang_after_requests
        self.calls = 0
        self._never = threading.Event()

    @property
    def served_model(self) -> str:
        return self._served_model

    def has_room(self) -> bool:
        """Always: it runs one request at a time per shard loop, so each loop takes a shard."""
        return True

    def close(self) -> None:
        """Nothing to release."""

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        for request in requests:
            if self.hang_after_requests is not None and self.calls >= self.hang_after_requests:
                self._never.wait()  # never set: the hang lasts
            self.calls += 1
            if self.seconds_per_request:
                time.sleep(self.seconds_per_request)
            yield self.answer(request)

    def answer(self, request: EngineRequest) -> EngineResult:
        body = request.body
        if body.get("model") != self._served_model:
            return EngineResult.failure(
                request.custom_id,
                404,
                f"The model `{body.get('model')}` does not exist.",
                param="model",
                code="model_not_found",
            )
        kind = reply_of(request.url)
        if kind is None:
            return EngineResult.unsupported(request.custom_id, self._served_model, request.url)
        if kind == "embedding":
            return self._embed(request)
        if kind in ("score", "rerank"):
            return self._score(request, rerank=kind == "rerank")
        source: object
        if kind == "responses":
            source = [body.get("instructions") or "", body.get("input")]
        else:
            source = body.get("messages") if "messages" in body else body.get("prompt")
        prompt = _words(source)
        field = None
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            if body.get(name) is not None:  # null: not given, as OpenAI reads it
                field = name
                break
        asked = body[field] if field else 16
        if field and (not isinstance(asked, int) or isinstance(asked, bool) or asked < 1):
            return EngineResult.failure(
                request.custom_id,
                400,
                f"{field} must be a whole number of at least 1, not {str(asked)[:40]!r}.",
                param=field,
            )
        if len(prompt) + 1 > self.max_model_len:
            return EngineResult.failure(
                request.custom_id,
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, your prompt contains {len(prompt)} input tokens.",
                param="input_tokens",
                code="context_length_exceeded",
            )
        # As vLLM's serving layer: what is asked for is clamped to the room the context
        # leaves, and nothing is ever sized by the number asked (2^63-1 once killed the worker).
        room = self.max_model_len - len(prompt)
        max_tokens = min(asked, room)
        words = ["echo:", *prompt]
        reply = (words * (1 + max_tokens // len(words)))[:max_tokens]
        cut = asked > room or len(prompt) + 1 > max_tokens
        finish = "length" if len(reply) == max_tokens and cut else "stop"
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(reply),
            "total_tokens": len(prompt) + len(reply),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        created = int(time.time())
        if kind == "responses":
            return EngineResult(
                custom_id=request.custom_id,
                status_code=200,
                body=self._response(" ".join(reply), len(prompt), len(reply), finish, created),
            )
        if kind == "completion":
            completion: dict[str, Any] = {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": created,
                "model": self._served_model,
                "choices": [
                    {"index": 0, "text": " ".join(reply), "finish_reason": finish, "logprobs": None}
                ],
                "usage": usage,
            }
            return EngineResult(custom_id=request.custom_id, status_code=200, body=completion)
        chat: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": self._served_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(reply)},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return EngineResult(custom_id=request.custom_id, status_code=200, body=chat)

    def _response(
        self, text: str, prompt: int, output: int, finish: str, created: int
    ) -> dict[str, Any]:
        """A Responses API body as vLLM's server writes one."""
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": created,
            "model": self._served_model,
            "status": "completed" if finish == "stop" else "incomplete",
            "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
            "output": [
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": text, "annotations": [], "logprobs": None}
                    ],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output,
            },
        }

    def _score(self, request: EngineRequest, *, rerank: bool) -> EngineResult:
        """vLLM's score and rerank bodies; a score is the shared-word share of two texts."""
        body = request.body
        queries: object
        documents: object
        if rerank:
            queries, documents = [body.get("query")], body.get("documents") or []
        else:
            first, second = score_pair(body)
            queries, documents = body.get(first), body.get(second)
        queries = queries if isinstance(queries, list) else [queries]
        documents = documents if isinstance(documents, list) else [documents]
        if len(queries) == 1:
            queries = queries * len(documents)
        assert isinstance(queries, list) and isinstance(documents, list)

        def similarity(one: object, two: object) -> float:
            left, right = set(_words(one)), set(_words(two))
            return len(left & right) / max(len(left | right), 1)

        scores = [similarity(q, d) for q, d in zip(queries, documents, strict=False)]
        tokens = sum(
            len(_words(q)) + len(_words(d)) for q, d in zip(queries, documents, strict=False)
        )
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        if not rerank:
            data = [
                {"index": i, "object": "score", "score": score} for i, score in enumerate(scores)
            ]
            score_body: dict[str, Any] = {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": self._served_model,
                "data": data,
                "usage": usage,
            }
        else:
            ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
            top_n = body.get("top_n") or len(ranked)
            score_body = {
                "id": f"score-{uuid.uuid4().hex}",
                "model": self._served_model,
                "results": [
                    {
                        "index": i,
                        "document": {"text": str(documents[i])},
                        "relevance_score": scores[i],
                    }
                    for i in ranked[:top_n]
                ],
                "usage": usage,
            }
        return EngineResult(custom_id=request.custom_id, status_code=200, body=score_body)

    def _embed(self, request: EngineRequest) -> EngineResult:
        inputs = request.body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        tokens = 0
        for index, item in enumerate(items):
            text = str(item)
            tokens += len(text.split())
            digest = hashlib.sha256(text.encode()).digest()
            data.append(
                {"object": "embedding", "index": index, "embedding": [b / 255 for b in digest[:8]]}
            )
        body = {
            "object": "list",
            "data": data,
            "model": self._served_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EngineResult(custom_id=request.custom_id, status_code=200, body=body)
