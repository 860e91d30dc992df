"""S3 ObjectCreated (delivered through the intake SQS queue) -> validate and plan the batch."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel

from batch_core.service import DroppedObject
from batch_core.wiring import default_service
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class S3Object(BaseModel):
    key: str
    eTag: str = ""  # noqa: N815 (S3's field names)
    sequencer: str = ""
    versionId: str | None = None  # noqa: N815


class S3Entity(BaseModel):
    object: S3Object


class S3Record(BaseModel):
    eventName: str  # noqa: N815
    s3: S3Entity


class S3Notification(BaseModel):
    """The part of an S3 event notification we use.

    Powertools' S3Model requires fields (userIdentity, requestParameters, ...) that moto's
    notifications leave out; this model reads what AWS and moto both send.
    """

    Records: list[S3Record]


def dropped_objects(body: str) -> list[DroppedObject]:
    """The objects an S3 notification names; none for S3's `s3:TestEvent`."""
    document = json.loads(body)
    if document.get("Event") == "s3:TestEvent":
        return []
    event = S3Notification.model_validate(document)
    return [
        DroppedObject(
            # Keys arrive URL-encoded (spaces as '+'), as AWS sends them.
            key=unquote_plus(record.s3.object.key),
            etag=record.s3.object.eTag or "",
            sequencer=record.s3.object.sequencer or "",
            version_id=record.s3.object.versionId or "",
        )
        for record in event.Records
        if record.eventName.startswith("ObjectCreated")
    ]


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
