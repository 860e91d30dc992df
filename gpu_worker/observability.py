"""The worker's logs (JSON, Powertools) and metrics (CloudWatch EMF, Powertools).

The worker is a long-running container, not a Lambda function, so the Lambda decorators do
not apply: the root logger gets Powertools' JSON formatter, and metrics are flushed as one EMF
document per shard (CloudWatch Logs turns them into metrics).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

from batch_core.shard_run import ShardRun

SERVICE = "openbatch-worker"


def configure_logging(level: str = "INFO") -> None:
    """JSON log lines on stdout for every logger in the process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LambdaPowertoolsFormatter(service=SERVICE))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class ShardMetrics:
    """Per-shard metrics: requests, tokens in and out, tokens/s, shard latency, errors."""

    def __init__(self, namespace: str | None = None) -> None:
        self._metrics = Metrics(namespace=namespace, service=SERVICE)
        self._lock = threading.Lock()  # several shard loops share one worker

    def record(self, run: ShardRun) -> None:
        with self._lock:
            add = self._metrics.add_metric
            add(name="RequestsSucceeded", unit=MetricUnit.Count, value=run.succeeded)
            add(name="RequestsFailed", unit=MetricUnit.Count, value=run.failed)
            add(name="InputTokens", unit=MetricUnit.Count, value=run.input_tokens)
            add(name="OutputTokens", unit=MetricUnit.Count, value=run.output_tokens)
            add(name="ShardSeconds", unit=MetricUnit.Seconds, value=run.seconds)
            if run.seconds > 0:
                rate = run.output_tokens / run.seconds
                add(name="OutputTokensPerSecond", unit=MetricUnit.CountPerSecond, value=rate)
            add(name=f"Shards_{run.outcome}", unit=MetricUnit.Count, value=1)
            self._metrics.flush_metrics()

    def record_gpu(self, utilizations: list[float]) -> None:
        """One sample of each GPU's utilisation (percent)."""
        with self._lock:
            for value in utilizations:
                self._metrics.add_metric(
                    name="GpuUtilization", unit=MetricUnit.Percent, value=value
                )
            self._metrics.flush_metrics()

    def record_model_download(self, seconds: float, size: int) -> None:
        """A model copied from S3 at start (not recorded when the cached copy was used)."""
        with self._lock:
            add = self._metrics.add_metric
            add(name="ModelDownloadSeconds", unit=MetricUnit.Seconds, value=seconds)
            add(name="ModelDownloadBytes", unit=MetricUnit.Bytes, value=size)
            self._metrics.flush_metrics()

    def record_cold_start(self, phases: Mapping[str, float]) -> None:
        """A worker's cold start, once its engine is ready: each measured phase's seconds
        (gpu_worker/cold_start.py), one metric per phase for the dashboard's cold start widget."""
        with self._lock:
            add, unit = self._metrics.add_metric, MetricUnit.Seconds
            if "ImagePull" in phases:
                add(name="ColdStartImagePullSeconds", unit=unit, value=phases["ImagePull"])
            if "Startup" in phases:
                add(name="ColdStartStartupSeconds", unit=unit, value=phases["Startup"])
            if "Weights" in phases:
                add(name="ColdStartWeightsSeconds", unit=unit, value=phases["Weights"])
            if "Engine" in phases:
                add(name="ColdStartEngineSeconds", unit=unit, value=phases["Engine"])
            if "Total" in phases:
                add(name="ColdStartSeconds", unit=unit, value=phases["Total"])
            self._metrics.flush_metrics()

    def record_error(self) -> None:
        with self._lock:
            self._metrics.add_metric(name="WorkerErrors", unit=MetricUnit.Count, value=1)
            self._metrics.flush_metrics()
