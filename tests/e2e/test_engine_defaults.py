"""The engine starts with vLLM's offline (`LLM` class) scheduler defaults of the platform it
runs on, read from vLLM itself, and MAX_NUM_SEQS / MAX_NUM_BATCHED_TOKENS / EXTRA_ENGINE_ARGS
win over them."""

from __future__ import annotations

import pytest

from gpu_worker.engines.vllm_engine import (
    VllmEngine,
    engine_args,
    engine_argv,
    resolve_model,
    usage_context,
)
from gpu_worker.settings import EngineSettings
from tests.conftest import MODEL

pytestmark = pytest.mark.e2e

CONTEXT_TOKENS = 512


def llm_class_scheduler(model: str, **llm_kwargs: object) -> tuple[int, int]:
    """What `vllm.LLM(model, **llm_kwargs)` picks on this machine: LLM() builds these
    EngineArgs and creates its config in the LLM_CLASS usage context."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    config = EngineArgs(model=model, **llm_kwargs).create_engine_config(  # type: ignore[arg-type]
        UsageContext.LLM_CLASS
    )
    return config.scheduler_config.max_num_seqs, config.scheduler_config.max_num_batched_tokens


def test_the_real_engine_starts_with_what_llm_picks_on_this_machine() -> None:
    settings = EngineSettings(served_model_name=MODEL, max_model_len=CONTEXT_TOKENS)
    engine = VllmEngine(settings)
    try:
        scheduler = engine.engine_client.vllm_config.scheduler_config
        running = (scheduler.max_num_seqs, scheduler.max_num_batched_tokens)
    finally:
        engine.close()
    model = resolve_model(settings)[0]
    memory = 0.1  # what the engine sets on a CPU; it does not change the scheduler's defaults
    expected = llm_class_scheduler(
        model, max_model_len=CONTEXT_TOKENS, gpu_memory_utilization=memory
    )
    assert running == expected
    # ...which is not what vLLM's batch runner would have picked (the old handicap).
    from vllm.usage.usage_lib import UsageContext

    argv = engine_argv(settings, model, MODEL, on_cpu=True)
    runner = engine_args(argv).create_engine_config(UsageContext.OPENAI_BATCH_RUNNER)
    assert runner.scheduler_config.max_num_seqs < expected[0]


def test_the_session_engine_keeps_its_max_num_seqs_setting(vllm_engine: VllmEngine) -> None:
    assert vllm_engine.engine_client.vllm_config.scheduler_config.max_num_seqs == 16


@pytest.mark.parametrize(
    ("options", "want"),
    [
        ({"max_num_seqs": 24, "max_num_batched_tokens": 1536}, (24, 1536)),
        ({"max_num_batched_tokens": 3000}, (None, 3000)),
        ({"max_num_seqs": 24, "extra_engine_args": "--max-num-seqs 40"}, (40, None)),
    ],
)
def test_settings_and_extra_args_win_over_the_defaults(
    options: dict[str, object], want: tuple[int | None, int | None]
) -> None:
    settings = EngineSettings(served_model_name=MODEL, max_model_len=CONTEXT_TOKENS, **options)  # type: ignore[arg-type]
    model = resolve_model(settings)[0]
    argv = engine_argv(settings, model, MODEL, on_cpu=True)
    # The two calls vLLM's engine client makes with our argv and usage context.
    scheduler = engine_args(argv).create_engine_config(usage_context()).scheduler_config
    defaults = llm_class_scheduler(model, max_model_len=CONTEXT_TOKENS, gpu_memory_utilization=0.1)
    assert scheduler.max_num_seqs == (want[0] or defaults[0])
    if want[1] is not None:
        assert scheduler.max_num_batched_tokens == want[1]
