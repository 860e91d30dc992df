"""S3 event notifications as the intake queue and its dead-letter queue deliver them."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

from pydantic import BaseModel

from batch_core.intake_jobs import DroppedObject, IntakeWork, parse_job


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


def intake_work(body: str) -> list[IntakeWork]:
    """What an intake queue message asks for: a job the API handed over, or the objects of
    an S3 notification."""
    job = parse_job(body)
    return [job] if job is not None else list(dropped_objects(body))
