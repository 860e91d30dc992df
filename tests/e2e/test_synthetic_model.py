"""`bench.worker --synthetic`: a real architecture with random weights, built with no hub
access, loads in vLLM and serves chats (one layer here, to keep the CPU run short)."""

from __future__ import annotations

import json

import pytest

from batch_core.protocol import EngineRequest
from bench.synthetic_model import SYNTHETIC, build_synthetic
from gpu_worker.engines.vllm_engine import VllmEngine
from gpu_worker.settings import EngineSettings

pytestmark = pytest.mark.e2e


def test_a_synthetic_qwen_is_the_published_shape_and_serves_chats() -> None:
    from transformers import AutoTokenizer

    recipe = SYNTHETIC["qwen2.5-0.5b"]
    path = build_synthetic("qwen2.5-0.5b", gpu=False, layers=1)
    config = json.loads((path / "config.json").read_text())
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads"):
        assert config[name] == recipe[name], name
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["num_hidden_layers"] == 1
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == recipe["_tokenizer_vocab"]  # a realistic vocabulary, trained here
    # English prompts take about as many tokens as a real tokenizer gives them.
    prompt = "Tell me about the river engine market and the copper signal in winter"
    assert len(tokenizer(prompt)["input_ids"]) <= 2 * len(prompt.split())

    engine = VllmEngine(
        EngineSettings(model=str(path), served_model_name="synthetic", max_model_len=256)
    )
    try:
        body = {
            "model": "synthetic",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 12,
            "ignore_eos": True,
        }
        [result] = list(
            engine.run([EngineRequest(custom_id="a", url="/v1/chat/completions", body=body)])
        )
    finally:
        engine.close()
    assert result.status_code == 200, result.body
    assert result.body["usage"]["completion_tokens"] == 12  # ignore_eos: the full budget
