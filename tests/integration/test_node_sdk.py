"""The official openai Node SDK (tests/node, installed by `make test` with npm) against the
local server: files from a stream and from `toFile`, content byte for byte, batches with an
idempotency key, auto-paging, cancel, delete and the SDK's error classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api

KEY = "sk-test-node-0123456789"
OTHER_KEY = "sk-test-node-other-0123456789"
NODE_TESTS = Path(__file__).parents[1] / "node"


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "node", OTHER_KEY: "node-other"}, shard_size=2) as running:
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
