"""The EventBridge schedule -> expire every batch whose completion window has run out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch_core.wiring import default_service

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    expired = default_service().expire_overdue()
    metrics.add_metric(name="BatchesExpired", unit=MetricUnit.Count, value=len(expired))
    logger.info("expired overdue batches", extra={"batch_ids": [b.id for b in expired]})
    return {"expired": [b.id for b in expired]}
