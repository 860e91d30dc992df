"""Generated files through both intake paths (an S3 drop and an API-created batch), in skip
mode: every batch ends, every non-blank line is counted once (a result, a failed request or a
rejected line), workers and intake stay up."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core import wiring
from batch_core.batch_params import BatchParams
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, lines_of
from tests.integration.test_hostile_input import poison_lines
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
FILES = scale(2, 5)
LINES = scale(500, 2_000)  # per file: 1,000 generated lines fast, 10,000 in full


def generated_file(seed: int, lines: int) -> bytes:
    rng = random.Random(seed)
    poison = poison_lines()
    out: list[bytes] = []
    for index in range(lines):
        good = json.dumps(chat_request(f"g{seed}-{index}", "x" * rng.randint(1, 40))).encode()
        kind = rng.random()
        if kind < 0.6:
            out.append(good)
        elif kind < 0.8:  # a mutation: bytes flipped, the line cut, a byte dropped
            at = rng.randrange(len(good))
            how = rng.choice(["flip", "cut", "drop"])
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3))).replace(b"\n", b" ")
            line = {
                "flip": good[:at] + junk + good[at + len(junk) :],
                "cut": good[:at],
                "drop": good[:at] + good[at + 1 :],
            }[how]
            out.append(line)
        elif kind < 0.9:
            out.append(
                rng.choice(poison).replace(b'"custom_id": "', f'"custom_id": "p{index}'.encode(), 1)
            )
        else:
            out.append(
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 80))).replace(b"\n", b" ")
            )
    return b"\n".join(out) + b"\n"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(FakeEngine(MODEL), shard_size=200, part_size=100) as local:
        yield local


def nonblank(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def test_generated_files_through_both_intake_paths_end_with_every_line_counted(
    stack: LocalStack, tmp_path: Path
) -> None:
    generated = ended = exact = 0
    for seed in range(FILES):
        data = generated_file(seed, LINES)
        generated += LINES
        # The drop path.
        path = tmp_path / f"fuzz{seed}.jsonl"
        path.write_bytes(data)
        name = stack.drop(path, metadata={"invalid-lines": "skip"})
        dropped = stack.wait_for_outbox(name, timeout=300)
        # The API path: an uploaded File and a batch over it.
        files = wiring.default_stages().files
        uploaded = files.create("fuzz", filename="fuzz.jsonl", purpose="batch", data=data)
        created = stack.stages.batches.create_batch(
            "fuzz",
            BatchParams(
                endpoint="/v1/chat/completions", completion_window="24h", invalid_lines="skip"
            ),
            input_file_id=uploaded.id,
        )
        final = stack.stages.batches.get_for("fuzz", created.id)

        deadline = time.monotonic() + 300
        while final.status not in {"completed", "failed", "expired", "cancelled"}:
            assert time.monotonic() < deadline, final.status
            time.sleep(0.2)
            final = stack.stages.batches.get_for("fuzz", created.id)
        for batch in (dropped, final.to_batch()):
            ended += 1
            counts = batch.request_counts
            assert counts is not None
            assert batch.status == "completed", batch.errors
            if counts.total == nonblank(data) == counts.completed + counts.failed:
                exact += 1
        paths = stack.download_outbox(name, tmp_path / f"out{seed}")
        rows = lines_of(paths["output.jsonl"]) + lines_of(paths["errors.jsonl"])
        assert len(rows) == nonblank(data)
    record("intake fuzz", "generated lines (drop + API paths)", generated * 2)
    record("intake fuzz", "batches ended / started", f"{ended}/{FILES * 2}", ended == FILES * 2)
    record("intake fuzz", "batches with every line counted once", exact, exact == FILES * 2)
    assert stack.handler_errors == []
    assert exact == FILES * 2
