"""Worker processes SIGKILLed and SIGTERMed at random moments: in every run each custom_id is
exactly once in output + errors, the counts are exact, and the batch ends.

Real `python -m gpu_worker` processes (fake engine) share a moto server with the test, which
routes intake and finalize as Lambda would. One worker runs at a time: moto's DynamoDB is not
safe under concurrent transactions (docs/architecture.md), real DynamoDB is.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from tests.conftest import chat_request, lines_of, write_jsonl
from tests.integration.test_worker_faults import moto_server_stack, start_worker
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
RUNS = scale(3, 20)
REQUESTS = 30


@pytest.fixture(scope="module")
def server_stack() -> Iterator[LocalStack]:
    with moto_server_stack(shard_size=10, part_size=3) as stack:
        yield stack


def stop(worker: subprocess.Popen[str], how: signal.Signals) -> None:
    worker.send_signal(how)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=10)


def test_random_kills_never_lose_or_duplicate_a_result(
    server_stack: LocalStack, tmp_path: Path
) -> None:
    rng = random.Random(20261201)
    exact = kills = terms = 0
    started = time.monotonic()
    for run in range(RUNS):
        ids = [f"k{run}-{i}" for i in range(REQUESTS)]
        name = server_stack.drop(
            write_jsonl(tmp_path / f"kill{run}.jsonl", [chat_request(i) for i in ids])
        )
        for _ in range(rng.randint(1, 3)):
            worker = start_worker(visibility_seconds=2)
            time.sleep(rng.uniform(1.5, 4.0))  # startup takes ~1.5 s: some die before work
            how = rng.choice([signal.SIGKILL, signal.SIGTERM])
            stop(worker, how)
            kills += how == signal.SIGKILL
            terms += how == signal.SIGTERM
        survivor = start_worker(visibility_seconds=2)
        try:
            final = server_stack.wait_for_outbox(name, timeout=180)
        finally:
            stop(survivor, signal.SIGTERM)
        paths = server_stack.download_outbox(name, tmp_path / f"out{run}")
        rows = lines_of(paths["output.jsonl"]) + lines_of(paths["errors.jsonl"])
        counts = final.request_counts
        if (
            final.status == "completed"
            and sorted(row["custom_id"] for row in rows) == sorted(ids)
            and (counts.total, counts.completed + counts.failed) == (REQUESTS, REQUESTS)
        ):
            exact += 1
    record("worker kills", "runs (random SIGKILL/SIGTERM)", RUNS)
    record("worker kills", "SIGKILLs / SIGTERMs sent", f"{kills}/{terms}")
    record("worker kills", "runs exactly once, counts exact", f"{exact}/{RUNS}", exact == RUNS)
    record("worker kills", "wall time of the runs (s)", f"{time.monotonic() - started:.0f}")
    assert exact == RUNS
