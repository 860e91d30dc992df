"""The shape every SQS-triggered handler shares: Powertools' batch processor with partial
failures (a failed record is retried alone), Lambda context in the logs, tracing, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

SQSHandler = Callable[[dict[str, Any], LambdaContext], PartialItemFailureResponse]


def sqs_batch_handler(
    record_handler: Callable[[SQSRecord], None], logger: Logger, tracer: Tracer, metrics: Metrics
) -> SQSHandler:
    """A Lambda handler that runs `record_handler` on each record of an SQS event."""
    processor = BatchProcessor(event_type=EventType.SQS)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return handler
