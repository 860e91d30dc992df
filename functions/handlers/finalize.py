"""The tracker's finalize step (an SQS message with a task token) -> finalize the batch."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel

from batch_core.wiring import default_stages
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class FinalizeRequest(BaseModel):
    """What the tracker sends: which batch, and the token that resumes the execution."""

    batch_id: str
    task_token: str


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    request = FinalizeRequest.model_validate_json(record.body)
    batch = default_stages().ending.finalize_for_tracker(request.batch_id, request.task_token)
    logger.info("finalized", extra={"batch_id": batch.id, "status": batch.status})
    metrics.add_metric(name="BatchesFinalized", unit=MetricUnit.Count, value=1)
    metrics.add_metric(
        name="RequestsSucceeded", unit=MetricUnit.Count, value=batch.request_completed
    )
    metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=batch.request_failed)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
