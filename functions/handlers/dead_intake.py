"""Intake events that failed every delivery (the intake dead-letter queue) -> end the batch.

Validation is retried by the intake queue; when every attempt failed the batch ends `failed`
with an `intake_failed` error, so nobody waits on a batch that stays `validating`.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from batch_core.wiring import default_stages
from handlers.s3_notification import intake_work
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    try:
        works = intake_work(record.body)
    except (ValueError, ValidationError):  # json's errors are ValueErrors
        # Names no object, so there is no batch to end; failing would only redeliver it.
        logger.error("dropping a dead intake message that names no object: %.200r", record.body)
        return
    for work in works:
        batch = default_stages().intake.give_up(work)
        logger.error("intake failed for good", extra={"work": work, "batch_id": batch and batch.id})
        metrics.add_metric(name="IntakeFailures", unit=MetricUnit.Count, value=1)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
