"""Repeats run once and results reused across batches (issue 28), through the official
openai SDK against the local server: `reused_requests` on the retrieved Batch, one output
line per input line, and the opt-in checked at create."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from openai.types import Batch

from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api

KEY = "sk-test-reuse-0123456789"


def lines(count: int, distinct: int) -> list[dict[str, Any]]:
    """`count` deterministic requests over `distinct` bodies."""
    made = [chat_request(f"q{i}", f"question {i % distinct}") for i in range(count)]
    for line in made:
        line["body"]["temperature"] = 0
    return made


def run(client: openai.OpenAI, data: list[dict[str, Any]], **params: Any) -> Batch:
    payload = b"".join(json.dumps(line).encode() + b"\n" for line in data)
    file = client.files.create(file=("in.jsonl", payload), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **params,
    )
    deadline = time.monotonic() + 60
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.monotonic() < deadline, f"{batch.id} still {batch.status}"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return batch


def test_repeats_and_reuse_show_on_the_sdks_batch() -> None:
    engine = FakeEngine(MODEL)
    with serve_api(engine, {KEY: "acme"}, shard_size=4, part_size=2) as (_, server):
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)

        first = run(client, lines(10, 6), metadata={"reuse_results": "true"})

        assert first.status == "completed"
        assert engine.calls == 6
        assert first.model_extra is not None and first.model_extra["reused_requests"] == 4
        assert first.to_dict()["reused_requests"] == 4
        assert first.request_counts is not None and first.request_counts.completed == 10
        assert first.output_file_id is not None
        output = [
            json.loads(raw) for raw in client.files.content(first.output_file_id).iter_lines()
        ]
        assert len(output) == 10 and len({line["id"] for line in output}) == 10
        assert sorted(line["custom_id"] for line in output) == sorted(f"q{i}" for i in range(10))

        again = run(client, lines(10, 6), metadata={"reuse_results": "true"})

        assert again.status == "completed" and engine.calls == 6
        assert again.to_dict()["reused_requests"] == 10
        assert again.usage is not None and again.usage.total_tokens == 0

        not_opted = run(client, lines(10, 6))
        assert not_opted.to_dict()["reused_requests"] == 4 and engine.calls == 12

        with pytest.raises(openai.BadRequestError) as refused:
            run(client, lines(1, 1), metadata={"reuse_results": "sometimes"})
        error = refused.value.response.json()["error"]
        assert (error["param"], error["type"]) == (
            "metadata.reuse_results",
            "invalid_request_error",
        )
