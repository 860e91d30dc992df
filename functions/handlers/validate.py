"""S3 ObjectCreated (delivered through the intake SQS queue) -> validate and plan the batch;
and the intake jobs the API hands over (join an upload, build a retry's input)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batch_core.wiring import default_stages
from handlers.s3_notification import intake_work
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    metrics.add_metric(name="IntakeMessages", unit=MetricUnit.Count, value=1)
    for work in intake_work(record.body):
        batch = default_stages().intake.run(work)
        logger.info(
            "intake",
            extra={"work": work, "batch_id": batch and batch.id, "status": batch and batch.status},
        )
        if batch is not None:
            metric = "BatchesRejected" if batch.status == "failed" else "BatchesAccepted"
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
