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
