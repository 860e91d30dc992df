"""One real vLLM engine for the whole session (tiny offline Llama on CPU, or MODEL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpu_worker.engines.vllm_engine import VllmEngine
from gpu_worker.settings import EngineSettings
from tests.conftest import MODEL

CONTEXT_TOKENS = 256


@pytest.fixture(scope="session")
def vllm_engine() -> Iterator[VllmEngine]:
    engine = VllmEngine(
        EngineSettings(served_model_name=MODEL, max_model_len=CONTEXT_TOKENS, max_num_seqs=16)
    )
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
