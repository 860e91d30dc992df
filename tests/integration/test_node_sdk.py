"""The official openai Node SDK (tests/node, installed by `make test` with npm) against the
local server at its default request rate: files from a stream and from `toFile`, content byte
for byte, batches with an idempotency key, auto-paging over more than 100 files, cancels in a
loop, delete and the SDK's error classes, with no retries and not one 429."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core import wiring
from batch_core.settings import Settings
from batchctl.local import LocalStack
from batchctl.server import ApiServer, serve_locally
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request

KEY = "sk-test-node-0123456789"
OTHER_KEY = "sk-test-node-other-0123456789"
NODE_TESTS = Path(__file__).parents[1] / "node"


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    # Not serve_api, which turns the request rate off: the SDK's paging must fit the defaults.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("API_REQUESTS_PER_SECOND", raising=False)
        patch.delenv("API_BURST_SECONDS", raising=False)
        with serve_locally(
            engine, api_keys={KEY: "node", OTHER_KEY: "node-other"}, shard_size=2
        ) as running:
            yield running


def test_the_node_sdk_runs_the_whole_flow(
    local_api: tuple[LocalStack, ApiServer], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no Node.js on this machine: the Node SDK cannot run here")
    assert (NODE_TESTS / "node_modules" / "openai").is_dir(), (
        "the Node SDK is not installed: `make test` runs `npm ci` in tests/node"
    )
    limiter = wiring.default_rate_limiter()
    defaults = Settings.model_fields
    assert limiter.per_second == defaults["api_requests_per_second"].default > 0
    assert limiter.burst_seconds == defaults["api_burst_seconds"].default
    # Big enough that the SDK's stream goes out in several chunks.
    lines = [chat_request(f"n{i}", "x" * 2000) for i in range(40)]
    source = tmp_path / "node_input.jsonl"
    source.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    run = subprocess.run(
        [node, str(NODE_TESTS / "sdk_flow.mjs")],
        env={
            **os.environ,
            "OPENAI_BASE_URL": local_api[1].base_url,
            "OPENAI_API_KEY": KEY,
            "OTHER_KEY": OTHER_KEY,
            "INPUT": str(source),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["output_lines"] == len(lines)
    assert summary["batches_listed"] >= 2 and summary["files"] >= 2
    assert summary["files_walked"] >= 105 and summary["cancelled"] == 6
    assert summary["rate_limited"] == 0, summary["statuses"]
    assert summary["statuses"]["200"] > 105 + 105 // 2  # the creates and the pages, counted
