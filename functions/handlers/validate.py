"""S3 ObjectCreated (delivered through the intake SQS queue) -> validate and plan the batch."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batch_core.wiring import default_service
from handlers.s3_notification import dropped_objects
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    metrics.add_metric(name="IntakeMessages", unit=MetricUnit.Count, value=1)
    for dropped in dropped_objects(record.body):
        batch = default_service().ingest_dropped_object(dropped)
        if batch is None:
            continue
        logger.info(
            "intake", extra={"batch_id": batch.id, "status": batch.status, "key": dropped.key}
        )
        metric = "BatchesRejected" if batch.status == "failed" else "BatchesAccepted"
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
