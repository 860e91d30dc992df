"""What Lambda's event sources do, in-process: SQS event source mappings deliver queue messages
to the handlers (with partial batch failures), and EventBridge schedules invoke them on a timer.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from batchctl.local.resources import ACCOUNT, REGION

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

# Lambda retries a failed SQS record after its visibility timeout; locally we retry sooner.
_RETRY_DELAY_SECONDS = 2


def sqs_event(messages: list[Any], arn: str) -> dict[str, Any]:
    """The event an SQS event source hands a function for these received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


@dataclass
class LocalLambdaContext:
    """Enough of Lambda's context object for Powertools."""

    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = ""
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class EventSources:
    """Threads that play Lambda's event sources until `stop` is set; a handler's exception is
    logged and kept in `handler_errors`, as Lambda would log it and retry."""

    def __init__(self, session: boto3.session.Session, stop: threading.Event) -> None:
        self.session = session
        self._stop = stop
        self.threads: list[threading.Thread] = []
        self.handler_errors: list[BaseException] = []

    def schedule(self, module_name: str, every_seconds: float) -> None:
        """What an EventBridge schedule does: invoke the handler with a scheduled event."""
        module = importlib.import_module(module_name)

        def tick() -> None:
            while not self._stop.wait(every_seconds):
                event = {
                    "version": "0",
                    "id": str(uuid.uuid4()),
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "account": ACCOUNT,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "region": REGION,
                    "resources": [],
                    "detail": {},
                }
                try:
                    module.handler(event, LocalLambdaContext(function_name=module_name))
                except Exception as error:  # as Lambda would: log it, try at the next tick
                    logger.exception("%s failed", module_name)
                    self.handler_errors.append(error)

        self._start(tick, f"schedule-{module_name}")

    def route(self, queue_name: str, queue_url: str, queue_arn: str, module_name: str) -> None:
        """What an SQS event source mapping does: deliver the queue's messages to a handler."""
        module = importlib.import_module(module_name)

        def poll() -> None:
            sqs = self.session.client("sqs")
            while not self._stop.is_set():
                response = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                )
                messages = response.get("Messages", [])
                if messages:
                    self._deliver(sqs, queue_url, queue_arn, module, messages)

        self._start(poll, f"route-{queue_name}")

    def _start(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _deliver(
        self, sqs: SQSClient, url: str, arn: str, module: ModuleType, messages: list[Any]
    ) -> None:
        event = sqs_event(messages, arn)
        context = LocalLambdaContext(
            function_name=module.__name__,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{module.__name__}",
        )
        failed: set[str] = set()
        try:
            result = module.handler(event, context)
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception as error:  # every record failed: Lambda retries them all
            logger.exception("handler %s failed", module.__name__)
            self.handler_errors.append(error)
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=_RETRY_DELAY_SECONDS,
                )
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
