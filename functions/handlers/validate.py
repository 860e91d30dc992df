"""S3 ObjectCreated (delivered through the intake SQS queue) -> validate and plan the batch;
and the intake jobs the API hands over (join an upload, build a retry's input)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batch_core.intake_jobs import BuildRetryInput, JoinUpload, parse_job
from batch_core.wiring import default_files, default_service
from handlers.s3_notification import dropped_objects
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    metrics.add_metric(name="IntakeMessages", unit=MetricUnit.Count, value=1)
    job = parse_job(record.body)
    if isinstance(job, JoinUpload):
        joined = default_files().join_upload(job.upload_id)
        default_service().start_waiting_batches(joined)
        logger.info("upload joined", extra={"upload_id": job.upload_id, "done": bool(joined)})
        return
    if isinstance(job, BuildRetryInput):
        service = default_service()
        service.start_waiting_batches(service.build_retry_input(job.parent_id))
        logger.info("retry input built", extra={"parent_id": job.parent_id})
        return
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
