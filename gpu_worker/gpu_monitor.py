"""GPU utilisation for the dashboard: `nvidia-smi` read once a minute, sent as the worker's EMF
metric `GpuUtilization` (percent, one value per GPU). The ECS agent reports GPUs reserved,
not how busy they are, so the worker says it itself. No GPU, no `nvidia-smi`: nothing sent."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

QUERY = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
INTERVAL_SECONDS = 60.0


def gpu_utilization(executable: str = "nvidia-smi") -> list[float] | None:
    """Each GPU's utilisation in percent; None without `nvidia-smi` or when it fails."""
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path, *QUERY], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        logger.warning("nvidia-smi failed", exc_info=True)
        return None
    values: list[float] = []
    for line in result.stdout.splitlines():
        try:
            values.append(float(line.strip()))
        except ValueError:  # "[N/A]" on GPUs that do not report it
            continue
    return values


class GpuMonitor:
    """A daemon thread that samples the GPUs until `stop` is set (use as a context manager)."""

    def __init__(
        self,
        record: Callable[[list[float]], None],
        *,
        interval_seconds: float = INTERVAL_SECONDS,
        sample: Callable[[], list[float] | None] = gpu_utilization,
    ) -> None:
        self._record = record
        self._interval = interval_seconds
        self._sample = sample
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)

    def __enter__(self) -> GpuMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            values = self._sample()
            if values is None:
                logger.info("no nvidia-smi: GPU utilisation is not reported")
                return
            if values:
                try:
                    self._record(values)
                except Exception:  # a metric must never stop the worker
                    logger.warning("could not record GPU utilisation", exc_info=True)
            if self.stop.wait(self._interval):
                return
