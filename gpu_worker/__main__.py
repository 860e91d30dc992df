"""`python -m gpu_worker`: the container's entry point on a GPU host."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from batch_core.wiring import default_service
from gpu_worker.engines import load_engine
from gpu_worker.settings import EngineSettings, WorkerSettings
from gpu_worker.worker import Worker


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker_settings = WorkerSettings()
    service = default_service()
    engine = load_engine(EngineSettings())
    worker = Worker(service, service.shard_queue, engine, wait_seconds=worker_settings.wait_seconds)

    def stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info(
            "signal %d: finishing the current part, then exiting", signum
        )
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run(idle_exit_seconds=worker_settings.idle_exit_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
