"""Batches started and ended, by status, as CloudWatch metrics (EMF): the dashboard's "batches
by status" and the alarm on failing or expiring batches read them.

Powertools' Metrics instances share one metric set per process, so these are flushed by the
handler's own `@metrics.log_metrics` (namespace and `service` dimension from the template's
Globals), wherever in the core a batch changes status.
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from batch_core.models import BatchStatus

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
