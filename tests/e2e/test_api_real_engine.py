"""The whole product as a user meets it: the openai SDK against the local server, with the
real vLLM engine behind it."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai.types import Batch

from batchctl.server import serve_locally
from gpu_worker.engines.vllm_engine import VllmEngine
from tests.conftest import EXAMPLES

# With the other real-engine tests, after the moto-bound part: unmarked, it loaded its own
# engine (about two minutes) on one of that part's test processes.
pytestmark = pytest.mark.e2e

KEY = "sk-e2e-0123456789"


def test_the_openai_sdk_runs_a_batch_on_the_real_engine(vllm_engine: VllmEngine) -> None:
    with serve_locally(vllm_engine, api_keys={KEY: "e2e"}, shard_size=8) as (_, server):
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        source = (EXAMPLES / "chat.jsonl").read_bytes()
        uploaded = client.files.create(file=("chat.jsonl", source), purpose="batch")
        created = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 600
        while True:
            raw = client.batches.with_raw_response.retrieve(created.id).http_response.json()
            batch = Batch.model_validate(raw)
            if batch.status in {"completed", "failed", "expired", "cancelled"}:
                break
            assert time.monotonic() < deadline, batch.status
            time.sleep(0.5)
        assert batch.status == "completed", batch.errors
        assert batch.request_counts is not None and batch.request_counts.completed == 20
        assert batch.usage is not None and batch.usage.output_tokens > 0
        assert batch.output_file_id is not None
        lines = [
            json.loads(line) for line in client.files.content(batch.output_file_id).iter_lines()
        ]
        wanted = sorted(json.loads(line)["custom_id"] for line in source.splitlines() if line)
        assert sorted(line["custom_id"] for line in lines) == wanted
        for line in lines:
            body = line["response"]["body"]
            assert body["object"] == "chat.completion" and body["model"] == "demo-model"
