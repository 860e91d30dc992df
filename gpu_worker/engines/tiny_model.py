"""Build a tiny random Llama that vLLM can load offline.

It produces meaningless text: it exists so that the whole pipeline, the real vLLM
engine included, runs on a laptop or CI machine with no network and no GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Bumped whenever the recipe changes, so a cached copy from an older recipe is rebuilt.
RECIPE_VERSION = "2"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Batch inference runs many requests together to keep the accelerator busy.",
    "Write a haiku about the sea. Summarise this paragraph in one sentence.",
    "You are a helpful assistant. Answer briefly and precisely.",
    "What is the capital of France? Paris is the capital of France.",
    "Translate to German: good morning, how are you today?",
    "Explain recursion to a five year old using building blocks.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } , . ; : ! ? ' \"",
]


def default_cache_dir() -> Path:
    """Where the tiny model is cached between runs (override with TINY_MODEL_DIR)."""
    explicit = os.environ.get("TINY_MODEL_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "batch-inference" / f"tiny-llama-v{RECIPE_VERSION}"


def ensure_tiny_model(directory: Path | None = None) -> Path:
    """Return a directory holding the tiny model, building it once if missing."""
    target = directory or default_cache_dir()
    marker = target / "tiny_model.json"
    if marker.exists():
        return target
    _build(target)
    marker.write_text(json.dumps({"recipe_version": RECIPE_VERSION}))
    return target


def train_tokenizer(texts: Iterable[str], vocab_size: int, target: Path) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, with our chat template and special
    tokens, saved into `target` (a transformers fast tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)
    return fast


def _build(target: Path) -> None:
    # Heavy imports stay inside: importing this module must stay cheap.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    fast = train_tokenizer(_CORPUS * 4, 512, target)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=fast.vocab_size if len(fast) <= fast.vocab_size else len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
