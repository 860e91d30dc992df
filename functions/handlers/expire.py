"""The EventBridge schedule -> the expiry sweep (`batch_core.sweep`): expire every batch whose
completion window has run out, delete every File past its `expires_at`, and check running
batches' deadlines."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch_core.wiring import default_stages

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    report = default_stages().sweep.run(
        time_left=lambda: context.get_remaining_time_in_millis() / 1000
    )
    # The workers scale out on this too: work due within the hour over the fleet's hour,
    # for the stack's workers, and per model for each worker-fleet's.
    pressures = report.pressures or {}
    if report.pressures is not None:  # unknown is not zero: no metric scales the fleet in
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
    metrics.add_metric(name="BatchesOverdue", unit=MetricUnit.Count, value=len(report.expired))
    metrics.add_metric(name="FilesExpired", unit=MetricUnit.Count, value=len(report.deleted_files))
    # Items that raised: each is logged with its stack and tried again by the next run.
    metrics.add_metric(
        name="SweepFailures", unit=MetricUnit.Count, value=sum(report.failures.values())
    )
    logger.info(
        "swept overdue batches and expired files",
        extra={
            "batch_ids": report.expired,
            "file_ids": report.deleted_files,
            "slots": report.released_slots,
            "escalated": report.escalated,
            "topped_up": report.topped_up,
            "at_risk": report.at_risk,
            "fleets": report.fleets,
            "failures": report.failures,
            "unfinished": report.unfinished,
        },
    )
    return {
        "expired": report.expired,
        "deleted_files": report.deleted_files,
        "failures": report.failures,
    }
