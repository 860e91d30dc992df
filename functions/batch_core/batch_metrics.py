"""Batches started and ended, by status, and what the ended ones cost, as CloudWatch metrics
(EMF): the dashboard's "batches by status" and "GPU time and cost", and the alarm on failing
or expiring batches, read them.

Powertools' Metrics instances share one metric set per process, so these are flushed by the
handler's own `@metrics.log_metrics` (namespace and `service` dimension from the template's
Globals), wherever in the core a batch changes status.
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from batch_core.models import TERMINAL_STATUSES, BatchStatus
from batch_core.records import BatchRecord

STATUS_METRICS: dict[BatchStatus, str] = {
    "in_progress": "BatchesStarted",
    "completed": "BatchesCompleted",
    "failed": "BatchesFailed",
    "expired": "BatchesExpired",
    "cancelled": "BatchesCancelled",
}

_metrics = Metrics()


def count_status(status: BatchStatus) -> None:
    """One more batch reached `status` (only the statuses above are counted)."""
    name = STATUS_METRICS.get(status)
    if name is not None:
        _metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def count_cost(record: BatchRecord) -> None:
    """An ended batch's GPU time and its estimated cost (USD, at GPU_HOURLY_PRICE): the
    dashboard's "GPU time and cost of ended batches" sums them."""
    if record.status not in TERMINAL_STATUSES:
        return
    batch = record.to_batch()
    _metrics.add_metric(name="BatchGpuSeconds", unit=MetricUnit.Seconds, value=batch.gpu_seconds)
    _metrics.add_metric(
        name="BatchEstimatedCost", unit=MetricUnit.NoUnit, value=batch.estimated_cost
    )
