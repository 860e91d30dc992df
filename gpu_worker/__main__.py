"""`python -m gpu_worker`: the container's entry point on a GPU host.

Exit codes: 0 after a stop signal (SIGTERM: spot interruption, scale-in) or an idle exit;
1 when the engine died or AWS failed the worker, so the orchestrator starts a fresh one (the
shard in hand was released for another worker first), or when the model could not be copied
from S3 (MODEL=s3://...).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from batch_core.wiring import default_stages, s3_client
from gpu_worker.engines import load_engine
from gpu_worker.gpu_monitor import GpuMonitor
from gpu_worker.model_weights import ModelCopy, ModelDownloadError, local_model
from gpu_worker.observability import ShardMetrics, configure_logging
from gpu_worker.settings import EngineSettings, WorkerSettings
from gpu_worker.worker import Worker

logger = logging.getLogger("gpu_worker")


def main() -> int:
    worker_settings = WorkerSettings()
    configure_logging(worker_settings.log_level)
    stages = default_stages()
    metrics = ShardMetrics()

    def record_copy(copy: ModelCopy) -> None:
        metrics.record_model_download(copy.seconds, copy.total_bytes)

    try:
        # An s3:// MODEL is copied to the instance's cache first; vLLM gets the local copy.
        engine_settings = local_model(EngineSettings(), s3_client, on_copy=record_copy)
    except ModelDownloadError as error:
        logger.error("cannot load the model: %s", error)
        metrics.record_error()
        return 1
    engine = load_engine(engine_settings)
    worker = Worker(
        stages.runner,
        stages.shard_queue,
        engine,
        wait_seconds=worker_settings.wait_seconds,
        visibility_seconds=worker_settings.visibility_seconds,
        concurrency=worker_settings.concurrency,
        metrics=metrics,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the current part, then exiting", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("worker ready", extra={"served_model": engine.served_model})
    try:
        with GpuMonitor(metrics.record_gpu):
            worker.run(idle_exit_seconds=worker_settings.idle_exit_seconds)
    except Exception:
        logger.exception("worker failed; exiting for a restart")
        metrics.record_error()
        return 1
    finally:
        engine.close()
    logger.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
