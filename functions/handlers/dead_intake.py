"""Intake events that failed every delivery (the intake dead-letter queue) -> end the batch.

Validation is retried by the intake queue; when every attempt failed the batch ends `failed`
with an `intake_failed` error, so nobody waits on a batch that stays `validating`.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from batch_core.intake_jobs import BuildRetryInput, JoinUpload, parse_job
from batch_core.wiring import default_files, default_service
from handlers.s3_notification import dropped_objects
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    job = parse_job(record.body)
    if isinstance(job, JoinUpload):
        default_service().start_waiting_batches(default_files().fail_join(job.upload_id))
        logger.error("upload join failed for good", extra={"upload_id": job.upload_id})
        metrics.add_metric(name="IntakeFailures", unit=MetricUnit.Count, value=1)
        return
    if isinstance(job, BuildRetryInput):
        service = default_service()
        service.start_waiting_batches(service.fail_retry_input(job.parent_id))
        logger.error("retry input failed for good", extra={"parent_id": job.parent_id})
        metrics.add_metric(name="IntakeFailures", unit=MetricUnit.Count, value=1)
        return
    try:
        objects = dropped_objects(record.body)
    except (ValueError, ValidationError):  # json's errors are ValueErrors
        # Names no object, so there is no batch to end; failing would only redeliver it.
        logger.error("dropping a dead intake message that names no object: %.200r", record.body)
        return
    for dropped in objects:
        batch = default_service().fail_intake(dropped)
        logger.error(
            "intake failed for good",
            extra={"key": dropped.key, "batch_id": batch and batch.id},
        )
        metrics.add_metric(name="IntakeFailures", unit=MetricUnit.Count, value=1)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
