"""Models of real architectures with random weights, built on the host with no hub access.

    python -m bench.worker --gpu --synthetic qwen2.5-0.5b

A GPU host with vLLM installed can take the worker table without downloading anything: the
configs below are the published ones (`config.json` of each model, written out here), the
weights are random, and the tokenizer is a byte-level BPE trained in-process to the real
tokenizer's vocabulary size on generated text (plus the bench's own words, so prompts
tokenize to a realistic number of tokens). With `ignore_eos` (the bench sets it) every
request generates its full budget, and a random model does the same work per token as a
trained one of the same shape: the same matrix sizes, attention and KV cache.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from gpu_worker.engines.tiny_model import default_cache_dir, train_tokenizer

RECIPE_VERSION = "1"

_QWEN2_COMMON: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "use_cache": True,
    "torch_dtype": "bfloat16",
}

SYNTHETIC: dict[str, dict[str, Any]] = {
    # Qwen/Qwen2.5-0.5B-Instruct
    "qwen2.5-0.5b": {
        **_QWEN2_COMMON,
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "_tokenizer_vocab": 151665,
    },
    # Qwen/Qwen2.5-7B-Instruct
    "qwen2.5-7b": {
        **_QWEN2_COMMON,
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_window_layers": 28,
        "tie_word_embeddings": False,
        "_tokenizer_vocab": 151665,
    },
    # meta-llama/Llama-3.1-8B-Instruct
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "_tokenizer_vocab": 128000,
    },
}

# The bench's prompt words and some common English, so prompts tokenize as real text does.
_ENGLISH_TEXT = (
    "you are a concise assistant answer in plain english at most three sentences and do not "
    "repeat the question tell me about river engine market orbit garden signal winter copper "
    "the of to is it that for on with as was he be at by this had not but what all were when "
    "we there can an your which their said if will each about how up out them then she many"
)
_ENGLISH = _ENGLISH_TEXT.split()


def synthetic_dir(name: str, layers: int | None = None) -> Path:
    """Where the synthetic model is cached (next to the tiny model's cache)."""
    suffix = f"-{layers}l" if layers else ""
    return default_cache_dir().parent / f"synthetic-{name}{suffix}-v{RECIPE_VERSION}"


def build_synthetic(name: str, *, gpu: bool, layers: int | None = None) -> Path:
    """A directory vLLM loads as the named architecture; built once and cached.
    `layers` cuts the depth (tests on a CPU); the bench always builds the full model."""
    target = synthetic_dir(name, layers)
    marker = target / "synthetic_model.json"
    if marker.exists():
        return target
    config = dict(SYNTHETIC[name])
    tokenizer_vocab = config.pop("_tokenizer_vocab")
    if layers:
        config["num_hidden_layers"] = layers
        if "max_window_layers" in config:
            config["max_window_layers"] = layers
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tokenizer_vocab, target)
    config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _write_weights(config, target, gpu=gpu)
    marker.write_text(json.dumps({"recipe_version": RECIPE_VERSION, "name": name}))
    return target


def _train_tokenizer(vocab_size: int, target: Path) -> Any:
    rng = random.Random(0)
    onsets = [*"bcdfghjklmnprstvwz", "ch", "sh", "th", "st", "br", "tr", "pl"]
    vowels = [*"aeiou", "ai", "ea", "ou", "io"]
    syllables = [c + v for c in onsets for v in vowels] + [
        c + v + coda for c in onsets[:12] for v in vowels[:5] for coda in "nrstlm"
    ]
    lexicon = [
        "".join(rng.choices(syllables, k=rng.choice([1, 1, 2, 2, 2, 3, 3, 4])))
        for _ in range(400_000)
    ] + _ENGLISH * 200
    corpus = (" ".join(rng.choices(lexicon, k=100)) + "." for _ in range(20_000))
    return train_tokenizer(corpus, vocab_size, target)


def _write_weights(config: dict[str, Any], target: Path, *, gpu: bool) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    # On the GPU host the random initialisation of an 8B model takes seconds, not minutes.
    with torch.device("cuda" if gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(hf_config, torch_dtype=torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
