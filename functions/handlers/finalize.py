"""The tracker's finalize step (an SQS message with a task token) -> finalize the batch."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from batch_core.wiring import default_service

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


class FinalizeRequest(BaseModel):
    """What the tracker sends: which batch, and the token that resumes the execution."""

    batch_id: str
    task_token: str


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    request = FinalizeRequest.model_validate_json(record.body)
    batch = default_service().finalize_for_tracker(request.batch_id, request.task_token)
    logger.info("finalized", extra={"batch_id": batch.id, "status": batch.status})
    metrics.add_metric(name="BatchesFinalized", unit=MetricUnit.Count, value=1)
    metrics.add_metric(
        name="RequestsSucceeded", unit=MetricUnit.Count, value=batch.request_completed
    )
    metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=batch.request_failed)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
