"""`python -m gpu_worker`: the container's entry point on a GPU host.

Exit codes: 0 after a stop signal (SIGTERM: spot interruption, scale-in) or an idle exit;
1 when the engine died or AWS failed the worker, so the orchestrator starts a fresh one (the
shard in hand was released for another worker first), when the engine stalled for
ENGINE_STALL_SECONDS (its shards' leases lapse for other workers), or when the model could not
be copied from S3 (MODEL=s3://...).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from batch_core.wiring import default_stages, s3_client
from gpu_worker.cold_start import ColdStart, fetch_task_metadata, image_pull
from gpu_worker.engine_groups import CHILD_VARIABLE, engine_groups, supervise, visible_gpus
from gpu_worker.engines import load_engine
from gpu_worker.gpu_monitor import GpuMonitor
from gpu_worker.model_weights import ModelCopy, ModelDownloadError, local_model
from gpu_worker.observability import ShardMetrics, configure_logging
from gpu_worker.settings import EngineSettings, WorkerSettings
from gpu_worker.stall_watchdog import EngineStalledError
from gpu_worker.worker import Worker

logger = logging.getLogger("gpu_worker")


def main() -> int:
    cold_start = ColdStart()
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
    cold_start.weights_ready()
    if worker_settings.gpus_per_engine and CHILD_VARIABLE not in os.environ:
        groups = engine_groups(visible_gpus(), worker_settings.gpus_per_engine)
        if len(groups) > 1:
            # The weights are on the instance now: the engines load the one local copy.
            model = {"MODEL": engine_settings.model} if engine_settings.model else {}
            if engine_settings.served_model_name:
                model["SERVED_MODEL_NAME"] = engine_settings.served_model_name
            return supervise(groups, model)
    engine = load_engine(engine_settings)
    cold_start.engine_ready()
    metrics.record_cold_start(cold_start.phases(image_pull(fetch_task_metadata())))
    worker = Worker(
        stages.runner,
        stages.shard_queue,
        engine,
        wait_seconds=worker_settings.wait_seconds,
        visibility_seconds=worker_settings.visibility_seconds,
        concurrency=worker_settings.concurrency,
        metrics=metrics,
        stall_seconds=worker_settings.engine_stall_seconds,
        gpus=engine_settings.tensor_parallel_size,  # the GPUs its engine holds
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the current part, then exiting", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info(
        "worker ready",
        extra={"served_model": engine.served_model, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")},
    )
    try:
        with GpuMonitor(metrics.record_gpu):
            worker.run(idle_exit_seconds=worker_settings.idle_exit_seconds)
    except EngineStalledError:
        logger.exception("engine stalled; exiting for a restart")
        metrics.record_error()
        logging.shutdown()
        # At once, without closing the engine: closing a hung engine would hang too, and the
        # shard loops stuck in it must not write anything after their leases lapse.
        os._exit(1)
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
