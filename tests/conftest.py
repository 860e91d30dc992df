"""Shared fixtures: the local stack on moto (fake engine) and event files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine

EVENTS = Path(__file__).parent / "events"
EXAMPLES = Path(__file__).parent.parent / "examples"
MODEL = "demo-model"

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As the template's Globals set them for the functions.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "openbatch")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "OpenBatch")


def load_event(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def chat_request(
    custom_id: str, content: str = "Say hello.", *, model: str = MODEL, max_tokens: int = 8
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        },
    }


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(MODEL, max_model_len=64)


@pytest.fixture
def fake_stack(fake_engine: FakeEngine) -> Iterator[LocalStack]:
    with LocalStack(fake_engine, shard_size=4, part_size=3) as stack:
        yield stack


@pytest.fixture
def bare_stack() -> Iterator[LocalStack]:
    """moto resources only: no routing, no worker (tests drive the handlers themselves)."""
    with LocalStack(
        None, served_models=[MODEL], route_events=False, shard_size=4, part_size=3
    ) as stack:
        yield stack
