"""The poison corpus through the local stack: deep nesting at every depth boundary, huge
numbers, invalid UTF-8 in every field, NUL, lines at the size limit. Each batch ends (failed,
or completed with error lines in skip mode), the workers stay up, and the next tenant's batch
completes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core.settings import get_settings
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, drop_requests, lines_of
from tests.integration.test_hostile_input import poison_lines
from tests.reliability.conftest import record

pytestmark = pytest.mark.reliability


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(FakeEngine(MODEL), shard_size=4, part_size=3) as local:
        yield local


def sized_line(custom_id: str, size: int) -> bytes:
    """A valid chat line of exactly `size` bytes."""
    base = json.dumps(chat_request(custom_id, "")).encode()
    return base.replace(b'"content": ""', b'"content": "' + b"a" * (size - len(base)) + b'"')


def test_the_poison_corpus_never_sticks_a_batch_or_stops_a_worker(
    stack: LocalStack, tmp_path: Path
) -> None:
    limit = get_settings().max_line_bytes
    corpus = [*poison_lines(), sized_line("at-limit", limit), sized_line("over-limit", limit + 1)]
    good = [json.dumps(chat_request(f"ok{i}")).encode() for i in range(4)]
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b"\n".join(good + corpus) + b"\n")
    failed = stack.wait_for_outbox(stack.drop(path, "poison-fail"), timeout=120)
    skipped_name = stack.drop(path, "poison-skip", metadata={"invalid-lines": "skip"})
    skipped = stack.wait_for_outbox(skipped_name, timeout=120)
    paths = stack.download_outbox(skipped_name, tmp_path / "skip")
    rows = lines_of(paths["output.jsonl"]) + lines_of(paths["errors.jsonl"])
    after = stack.wait_for_outbox(drop_requests(stack, tmp_path, 6, "after"), timeout=60)
    workers_up = all(not worker.stop.is_set() for worker in stack.workers)
    named = len(failed.errors.data or []) if failed.errors else 0
    bad = sum(
        1 for row in rows if row.get("response", {}) and row["response"]["status_code"] != 200
    )
    record("poison", "poison lines (depths, numbers, UTF-8, NUL, size)", len(corpus))
    record("poison", "fail mode: batch failed, bad lines named", f"{failed.status}, {named}",
           failed.status == "failed" and named >= len(corpus) - 3)  # fmt: skip
    accounted = f"{skipped.status}, {len(rows)}"
    record("poison", "skip mode: batch completed, lines accounted", accounted,
           skipped.status == "completed" and len(rows) == len(good) + len(corpus))  # fmt: skip
    record("poison", "next tenant's batch", after.status, after.status == "completed")
    record("poison", "workers up, handler errors", f"{workers_up}, {len(stack.handler_errors)}",
           workers_up and not stack.handler_errors)  # fmt: skip
    assert failed.status == "failed" and skipped.status == "completed"
    assert len(rows) == len(good) + len(corpus) and bad >= 1
    assert after.status == "completed" and workers_up and stack.handler_errors == []
