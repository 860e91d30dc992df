"""One load run, in a process of its own so that its peak RSS is the Lambda side's alone:
`python -m tests.reliability.load_run REQUESTS` prints the figures as one JSON line.

Each part runs in its own process: moto's server (S3, DynamoDB, SQS, Step Functions), this
process (intake, finalize and the routing Lambda would do), and a worker (fake engine)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from batchctl.local import LocalStack
from batchctl.moto_server import start_moto_server, stop_moto_server

MODEL = "demo-model"


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


def run(requests: int) -> dict[str, object]:
    server, url = start_moto_server()
    worker: subprocess.Popen[bytes] | None = None
    try:
        with (
            LocalStack(None, served_models=[MODEL], endpoint_url=url) as stack,
            TemporaryDirectory() as tmp,
        ):
            path = Path(tmp) / "load.jsonl"
            write_requests(path, requests)
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
            output = stack.session.client("s3").head_object(
                Bucket=stack.bucket, Key=f"outbox/{name}/output.jsonl"
            )
            figures: dict[str, object] = {
                "status": final.status,
                "completed": final.request_counts.completed,
                "wall_seconds": wall,
                "output_bytes": int(output["ContentLength"]),
                "worker_peak_mib": peak_rss_mib(worker.pid),
                "moto_peak_mib": peak_rss_mib(server.pid),
            }
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        stop_moto_server(server)
    figures["lambda_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]))))
