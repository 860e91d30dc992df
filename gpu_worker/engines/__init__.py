"""Inference engines. Only this package imports an engine library, and only when asked."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batch_core.protocol import Engine
    from gpu_worker.settings import EngineSettings


def load_engine(settings: EngineSettings) -> Engine:
    """Start the engine the settings name (vLLM starts its engine processes here)."""
    if settings.engine == "fake":
        from gpu_worker.engines.fake import FakeEngine

        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if settings.fake_fail_on_gpu and settings.fake_fail_on_gpu in gpus:
            raise RuntimeError(f"fake engine: GPU {settings.fake_fail_on_gpu} cannot load it")

        return FakeEngine(
            served_model=settings.served_model_name or settings.model or "fake-model",
            seconds_per_request=settings.fake_seconds_per_request,
            hang_after_requests=settings.fake_hang_after_requests,
        )
    from gpu_worker.engines.vllm_engine import VllmEngine

    return VllmEngine(settings)
