"""The cost of a batch (issue 27) through the official openai SDK against the local server:
`gpu_seconds` and `estimated_cost` ride beside `usage` as extension fields the SDK keeps in
`model_extra` (its clients ignore unknown fields), and `batchctl status` prints them."""

from __future__ import annotations

import json
import time

import openai
import pytest

from batchctl.cli import main
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api

KEY = "sk-test-cost-0123456789"
PRICE = 0.45
"""GpuHourlyPrice's default (about g5.xlarge spot)."""
STEP = 0.05
"""The fake engine's seconds per request."""


def test_gpu_seconds_and_cost_reach_the_sdk_and_batchctl_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = FakeEngine(MODEL, seconds_per_request=STEP)
    with serve_api(engine, {KEY: "acme"}, shard_size=4, part_size=2) as (_, server):
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        payload = b"".join(json.dumps(chat_request(f"r{i}")).encode() + b"\n" for i in range(6))
        file = client.files.create(file=("in.jsonl", payload), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while batch.status != "completed":
            assert time.monotonic() < deadline, f"{batch.id} still {batch.status}"
            time.sleep(0.2)
            batch = client.batches.retrieve(batch.id)

        extra = batch.model_extra
        assert extra is not None and batch.usage is not None
        # Six requests of STEP seconds on one 1-GPU engine, its time shared by the shards it
        # ran at once: at least their engine time, never a multiple of it.
        assert 6 * STEP * 0.9 <= extra["gpu_seconds"] < 6 * STEP + 2
        # At the template's GpuHourlyPrice (g5.xlarge on-demand), the local stack's too.
        assert extra["estimated_cost"] == round(extra["gpu_seconds"] / 3600 * PRICE, 6) > 0
        assert batch.to_dict()["estimated_cost"] == extra["estimated_cost"]

        code = main(["status", batch.id, "--base-url", server.base_url, "--api-key", KEY])
        shown = json.loads(capsys.readouterr().out)
        assert code == 0
        assert (shown["gpu_seconds"], shown["estimated_cost"]) == (
            extra["gpu_seconds"],
            extra["estimated_cost"],
        )
