"""One real vLLM engine for the whole session (tiny offline Llama on CPU, or MODEL).

Without MODEL, the session engine gets the tiny model as a worker with MODEL=s3://... does:
put into moto's S3, copied to a model cache by the worker's own code, loaded from the copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from gpu_worker.engines.tiny_model import ensure_tiny_model
from gpu_worker.engines.vllm_engine import VllmEngine
from gpu_worker.model_weights import local_model
from gpu_worker.settings import EngineSettings
from tests.conftest import MODEL

CONTEXT_TOKENS = 256
MODEL_BUCKET = "openbatch-models"
S3_MODEL = f"s3://{MODEL_BUCKET}/models/tiny/"


@pytest.fixture(scope="session")
def session_engine_settings(tmp_path_factory: pytest.TempPathFactory) -> EngineSettings:
    """The session engine's settings, MODEL already replaced by its local copy."""
    settings = EngineSettings(
        served_model_name=MODEL, max_model_len=CONTEXT_TOKENS, max_num_seqs=16
    )
    if os.environ.get("MODEL"):
        return settings
    tiny = ensure_tiny_model()
    # moto only while copying: the engine reads the copy, and no stack's mock overlaps this.
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MODEL_BUCKET)
        for path in sorted(tiny.rglob("*")):
            if path.is_file():
                key = f"models/tiny/{path.relative_to(tiny).as_posix()}"
                s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=path.read_bytes())
        s3_settings = settings.model_copy(
            update={"model": S3_MODEL, "model_cache_dir": tmp_path_factory.mktemp("model-cache")}
        )
        return local_model(s3_settings, lambda: s3)


@pytest.fixture(scope="session")
def vllm_engine(session_engine_settings: EngineSettings) -> Iterator[VllmEngine]:
    engine = VllmEngine(session_engine_settings)
    yield engine
    engine.close()


EMBEDDING_MODEL = "demo-embedder"


@pytest.fixture(scope="session")
def embedding_engine() -> Iterator[VllmEngine]:
    """The same tiny Llama, run by vLLM as a pooling (embedding) model."""
    engine = VllmEngine(
        EngineSettings(
            served_model_name=EMBEDDING_MODEL,
            max_model_len=128,
            max_num_seqs=8,
            extra_engine_args="--runner pooling --convert embed",
        )
    )
    yield engine
    engine.close()
