"""The EventBridge schedule -> expire every batch whose completion window has run out, and
delete every File past its `expires_at`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch_core.wiring import default_files, default_service

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    expired = default_service().expire_overdue()
    deleted = default_files().delete_expired()
    released = default_service().release_ended_slots()  # tenant slots a crash left behind
    running = default_service().running_batches()  # read once for the four checks
    escalated = default_service().escalate_near_deadlines(running)
    topped_up = default_service().top_up_shards(running)  # held shards a crash kept out
    at_risk = default_service().flag_at_risk(running)
    # The workers scale out on this too: work due within the hour over the fleet's hour,
    # for the stack's workers, and per model for each worker-fleet's.
    pressures = default_service().deadline_pressures(running=running)
    metrics.add_metric(
        name="DeadlinePressure", unit=MetricUnit.NoUnit, value=sum(pressures.values())
    )
    for model, pressure in pressures.items():
        if model:
            with single_metric(
                name="DeadlinePressure",
                unit=MetricUnit.NoUnit,
                value=pressure,
                default_dimensions=metrics.default_dimensions,
            ) as metric:
                metric.add_dimension(name="model", value=model)
    # Overdue batches it began to end (the core counts BatchesExpired once each has ended).
    metrics.add_metric(name="BatchesOverdue", unit=MetricUnit.Count, value=len(expired))
    metrics.add_metric(name="FilesExpired", unit=MetricUnit.Count, value=len(deleted))
    logger.info(
        "expired overdue batches and files",
        extra={
            "batch_ids": [b.id for b in expired],
            "file_ids": deleted,
            "slots": released,
            "escalated": escalated,
            "topped_up": topped_up,
            "at_risk": at_risk,
        },
    )
    return {"expired": [b.id for b in expired], "deleted_files": deleted}
