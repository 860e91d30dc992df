"""Load: many requests through the local stack with the fake engine, each part of the system
in its own process (moto for S3/DynamoDB/SQS/Step Functions, the Lambda side in this process,
a worker process): it completes, and the table gets wall time and each process's peak RSS."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from batchctl.moto_server import start_moto_server, stop_moto_server
from tests.conftest import MODEL
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
REQUESTS = scale(20_000, 1_000_000)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process: the most resident memory it ever had."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_requests(path: Path, count: int) -> None:
    head = '{"custom_id": "L'
    tail = (
        '", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "'
        + MODEL
        + '", "messages": [{"role": "system", "content": "You are terse."}, '
        + '{"role": "user", "content": "Name a colour number '
    )
    with path.open("w") as handle:
        for index in range(count):
            handle.write(f'{head}{index}{tail}{index}."}}], "max_tokens": 8}}}}\n')


def test_load_through_the_local_stack_completes(tmp_path: Path) -> None:
    server, url = start_moto_server()
    worker: subprocess.Popen[bytes] | None = None
    try:
        with LocalStack(None, served_models=[MODEL], endpoint_url=url) as stack:
            path = tmp_path / "load.jsonl"
            write_requests(path, REQUESTS)
            worker = subprocess.Popen(
                [sys.executable, "-m", "gpu_worker"],
                env={
                    **os.environ,
                    "ENGINE": "fake",
                    "SERVED_MODEL_NAME": MODEL,
                    "WORKER_WAIT_SECONDS": "1",
                    "WORKER_CONCURRENCY": "1",
                    "POWERTOOLS_METRICS_DISABLED": "true",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started = time.monotonic()
            name = stack.drop(path)
            final = stack.wait_for_outbox(name, timeout=3600)
            wall = time.monotonic() - started
            worker_peak = peak_rss_mib(worker.pid)
            moto_peak = peak_rss_mib(server.pid)
            output = stack.session.client("s3").head_object(
                Bucket=stack.bucket, Key=f"outbox/{name}/output.jsonl"
            )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        stop_moto_server(server)
    lambda_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = final.request_counts
    done = final.status == "completed" and counts.completed == REQUESTS
    record("load", "requests (fake engine)", f"{REQUESTS:,}")
    record("load", "completed", f"{counts.completed:,}", done)
    record("load", "wall time, drop to completed (s)", f"{wall:.1f}")
    record("load", "requests per second", f"{REQUESTS / wall:,.0f}")
    record("load", "output file (MB)", f"{int(output['ContentLength']) / 1e6:.0f}")
    record("load", "peak RSS: worker process (MiB)", f"{worker_peak:.0f}")
    record("load", "peak RSS: intake + finalize process (MiB)", f"{lambda_peak:.0f}")
    record("load", "peak RSS: moto (S3, DynamoDB, SQS) (MiB)", f"{moto_peak:.0f}")
    assert done, final
