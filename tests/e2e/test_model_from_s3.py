"""MODEL=s3://bucket/models/tiny/ on moto: the real vLLM engine loads the worker's local copy
of the S3 folder and serves a batch to completion (the session engine, see conftest: no
engine start of its own)."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from batchctl.local import LocalStack
from gpu_worker.engines.tiny_model import ensure_tiny_model
from gpu_worker.engines.vllm_engine import VllmEngine
from gpu_worker.model_weights import MARKER, parse_s3_uri
from gpu_worker.settings import EngineSettings
from tests.conftest import MODEL, chat_request, lines_of, write_jsonl
from tests.e2e.conftest import S3_MODEL

pytestmark = pytest.mark.e2e


def test_the_engine_loads_a_model_from_s3_and_serves_a_batch(
    vllm_engine: VllmEngine, session_engine_settings: EngineSettings, tmp_path: Path
) -> None:
    if os.environ.get("MODEL"):
        pytest.skip("MODEL names the session's model: it is not the tiny one on S3")
    copy = Path(str(session_engine_settings.model))
    assert copy == session_engine_settings.model_cache_dir / parse_s3_uri(S3_MODEL).directory_name
    assert vllm_engine.engine_client.vllm_config.model_config.model == str(copy)
    tiny = ensure_tiny_model()
    files = [str(p.relative_to(tiny)) for p in tiny.rglob("*") if p.is_file()]
    assert sorted(filecmp.cmpfiles(tiny, copy, files, shallow=False)[0]) == sorted(files)
    assert (copy / MARKER).is_file()

    lines = [chat_request(f"r{i}") for i in range(6)]
    with LocalStack(vllm_engine, shard_size=4) as stack:
        name = stack.drop(write_jsonl(tmp_path / "from-s3.jsonl", lines))
        batch = stack.wait_for_outbox(name, timeout=600)
        paths = stack.download_outbox(name, tmp_path / "out")
    assert batch.status == "completed", batch.errors
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (6, 6, 0)
    output = lines_of(paths["output.jsonl"])
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(6))
    for line in output:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.model == MODEL
        assert completion.usage is not None and completion.usage.completion_tokens > 0
