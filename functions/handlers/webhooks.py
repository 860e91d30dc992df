"""The webhook queue -> one delivery attempt per message (see `batch_core.webhooks`).

A failed attempt is queued again by the core with its own delay, so the message itself
always succeeds here; only a message that cannot be read fails (and goes to the DLQ).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batch_core.webhooks import WebhookDelivery
from batch_core.wiring import default_stages
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    delivery = WebhookDelivery.model_validate_json(record.body)
    delivered = default_stages().webhooks.deliver(delivery)
    metrics.add_metric(
        name="WebhooksDelivered" if delivered else "WebhookAttemptsFailed",
        unit=MetricUnit.Count,
        value=1,
    )


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
