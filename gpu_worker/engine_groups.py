"""Several engines per host: one worker process per group of `GPUS_PER_ENGINE` GPUs.

A 7B model fits one GPU, so an 8-GPU host runs it best as 8 engines, not one engine with
tensor parallelism over 8. Each engine is a whole worker process (its own shard loops,
heartbeats and watchdog) that sees only its GPUs (CUDA_VISIBLE_DEVICES) and runs with
tensor parallelism over them. Processes, not threads: vLLM binds a process to its devices.

The parent only supervises: it passes SIGTERM on (each child writes its part in hand and
releases its shards), and when one child fails it stops the others and exits 1, so ECS
replaces the whole task; the failed child's shards come back as after any crash.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from types import FrameType

logger = logging.getLogger(__name__)

CHILD_VARIABLE = "GPU_WORKER_ENGINE_GROUP"
"""Set in each child: it runs one engine instead of supervising."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what `nvidia-smi -L`
    lists (inside an ECS task: the GPUs the task reserved), else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    path = shutil.which("nvidia-smi")
    if path is None:
        return []
    try:
        result = subprocess.run(
            [path, "-L"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(result.stdout.splitlines()) if line.startswith("GPU")]


def engine_groups(gpus: list[str], per_engine: int) -> list[list[str]]:
    """Whole groups of `per_engine` GPUs; a remainder too small for an engine stays idle."""
    return [gpus[i : i + per_engine] for i in range(0, len(gpus) - per_engine + 1, per_engine)]


def supervise(groups: list[list[str]], environ: dict[str, str]) -> int:
    """Run one worker process per group (`environ` added to each one's environment) until
    all end; the exit code the task should have."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "gpu_worker"],
            env={
                **os.environ,
                **environ,
                CHILD_VARIABLE: str(index),
                "CUDA_VISIBLE_DEVICES": ",".join(group),
                "TENSOR_PARALLEL_SIZE": str(len(group)),
            },
        )
        for index, group in enumerate(groups)
    ]
    logger.info("started %d engines", len(children), extra={"groups": groups})

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    while any(child.poll() is None for child in children):
        if not failed and any(child.poll() not in (None, 0) for child in children):
            failed = True
            logger.error("an engine's worker failed: stopping the others for a fresh task")
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return 1 if failed or any(child.returncode != 0 for child in children) else 0
