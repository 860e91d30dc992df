"""Load: many requests through the local stack with the fake engine, each part of the system
in its own process (see load_run.py): it completes, and the table gets the wall time and
each process's peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
REQUESTS = scale(20_000, 1_000_000)
ROOT = Path(__file__).resolve().parents[2]


def test_load_through_the_local_stack_completes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.load_run", str(REQUESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    ok = figures["status"] == "completed" and figures["completed"] == REQUESTS
    wall = float(figures["wall_seconds"])
    record("load", "requests (fake engine)", f"{REQUESTS:,}")
    record("load", "completed", f"{figures['completed']:,}", ok)
    record("load", "wall time, drop to completed (s)", f"{wall:.1f}")
    record("load", "requests per second", f"{REQUESTS / wall:,.0f}")
    record("load", "output file (MB)", f"{figures['output_bytes'] / 1e6:.0f}")
    record("load", "peak RSS: worker process (MiB)", f"{figures['worker_peak_mib']:.0f}")
    record("load", "peak RSS: intake + finalize process (MiB)", f"{figures['lambda_peak_mib']:.0f}")
    record("load", "peak RSS: moto (S3, DynamoDB, SQS) (MiB)", f"{figures['moto_peak_mib']:.0f}")
    assert ok, figures
