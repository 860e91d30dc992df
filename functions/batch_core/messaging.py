"""SQS and Step Functions access: the shard queue and the batch tracker."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from batch_core.scheduling import TIERS, ShardTier
from batch_core.table_keys import batch_pk

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


class ShardTask(BaseModel):
    """The body of one shard message."""

    batch_id: str
    shard_index: int


@dataclass(frozen=True)
class QueueMessage:
    """A received message and what is needed to settle it."""

    body: str
    receipt_handle: str
    receive_count: int
    queue_url: str = ""
    """The queue it came from (a shard queue has one per tier)."""


class ShardQueue:
    """The queues GPU workers pull shards from: one per priority tier (`scheduling`), taken
    most urgent first. A tier without a queue of its own uses the normal one."""

    def __init__(
        self, sqs: SQSClient, queue_url: str, *, urgent_url: str = "", bulk_url: str = ""
    ) -> None:
        self._sqs = sqs
        self.url = queue_url
        self.urls: dict[ShardTier, str] = {
            "urgent": urgent_url or queue_url,
            "normal": queue_url,
            "bulk": bulk_url or queue_url,
        }
        # The queues in the order a worker polls them (a tier without its own queue shares).
        self._poll_order = list(dict.fromkeys(self.urls[tier] for tier in TIERS))

    def of_model(self, queue_url: str, *, urgent_url: str = "", bulk_url: str = "") -> ShardQueue:
        """The shard queues of another served model, through the same client."""
        return ShardQueue(self._sqs, queue_url, urgent_url=urgent_url, bulk_url=bulk_url)

    def send(
        self, tasks: Iterable[ShardTask], tier: ShardTier = "normal", *, tenant: str = ""
    ) -> None:
        """Queue shards in `tier`. With `tenant` as the MessageGroupId, SQS fair queues keep
        one tenant's backlog from delaying the others' shards in the same tier."""
        url = self.urls[tier]
        group = {"MessageGroupId": tenant} if tenant else {}
        entries = [
            {"Id": str(i), "MessageBody": task.model_dump_json(), **group}
            for i, task in enumerate(tasks)
        ]
        for start in range(0, len(entries), 10):
            chunk: Any = entries[start : start + 10]
            response = self._sqs.send_message_batch(QueueUrl=url, Entries=chunk)
            if response.get("Failed"):
                raise RuntimeError(f"SQS refused shard messages: {response['Failed']}")

    def receive(
        self, *, wait_seconds: int, visibility_seconds: int | None = None
    ) -> list[QueueMessage]:
        """At most one message, from the most urgent tier that has one; `visibility_seconds`
        overrides the queue's timeout (the worker's heartbeat then extends it while the shard
        runs). The upper tiers get a short poll (no wait: SQS may then miss a message of a
        nearly empty queue, which the next poll finds; a shard of a lower tier may run first
        meanwhile); the last tier waits `wait_seconds`."""
        for position, url in enumerate(self._poll_order):
            wait = wait_seconds if position == len(self._poll_order) - 1 else 0
            found = self._receive(url, wait, visibility_seconds)
            if found:
                return found
        return []

    def _receive(
        self, url: str, wait_seconds: int, visibility_seconds: int | None
    ) -> list[QueueMessage]:
        kwargs: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": 1,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_seconds is not None:
            kwargs["VisibilityTimeout"] = visibility_seconds
        response = self._sqs.receive_message(**kwargs)
        return [
            QueueMessage(
                body=message["Body"],
                receipt_handle=message["ReceiptHandle"],
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                queue_url=url,
            )
            for message in response.get("Messages", [])
        ]

    def delete(self, message: QueueMessage) -> None:
        self._sqs.delete_message(
            QueueUrl=message.queue_url or self.url, ReceiptHandle=message.receipt_handle
        )

    def release(self, message: QueueMessage) -> None:
        """Make the message visible again at once, for another worker."""
        self.extend(message, 0)

    def extend(self, message: QueueMessage, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=message.queue_url or self.url,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=seconds,
        )


class IntakeJobs:
    """Sends work to the validate function through the intake queue (see `intake_jobs`)."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self.url = queue_url

    def send(self, job: BaseModel) -> None:
        if not self.url:
            raise RuntimeError("INTAKE_QUEUE_URL is not set: no queue for intake jobs")
        self._sqs.send_message(QueueUrl=self.url, MessageBody=job.model_dump_json())


class WebhookQueue:
    """Webhook deliveries for the webhook function, each one attempt (see `webhooks`)."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self.url = queue_url

    def send(self, delivery: BaseModel, delay_seconds: int) -> None:
        self._sqs.send_message(
            QueueUrl=self.url, MessageBody=delivery.model_dump_json(), DelaySeconds=delay_seconds
        )


_TOKEN_NOT_WAITING = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


class Tracker:
    """The batch tracker state machine: one execution per batch, named by the batch id."""

    def __init__(self, sfn: SFNClient, state_machine_arn: str) -> None:
        self._sfn = sfn
        self._arn = state_machine_arn

    def start(self, batch_id: str, *, poll: dict[str, int]) -> None:
        """Start tracking; starting the same batch twice is harmless (the execution is named
        by the batch id). `poll` holds the waits: {"first", "later", "latest"} seconds."""
        document = {"batch_id": batch_id, "pk": batch_pk(batch_id), "poll": poll, "polls": 0}
        try:
            self._sfn.start_execution(
                stateMachineArn=self._arn, name=batch_id, input=json.dumps(document)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise

    def report_success(self, task_token: str, output: dict[str, Any]) -> bool:
        """Resume the waiting execution; False if no execution waits on this token any more
        (it timed out, or a duplicated message already used the token: Step Functions then
        answers TaskTimedOut, TaskDoesNotExist or InvalidToken).

        Neither is a loss: finalize is idempotent and the tracker's retry asks again.
        """
        try:
            self._sfn.send_task_success(taskToken=task_token, output=json.dumps(output))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _TOKEN_NOT_WAITING:
                return False
            raise
        return True


class StatusEvents:
    """Batch status changes on an EventBridge bus, like OpenAI's batch webhooks and Bedrock's
    state-change events: `source` "openbatch", `detail-type` "Batch Status Change", and the
    Batch object as `detail`. Subscribe with a rule on that source (SQS, SNS, Lambda...)."""

    SOURCE = "openbatch"
    DETAIL_TYPE = "Batch Status Change"
    AT_RISK = "Batch At Risk"
    """A running batch that cannot finish by its deadline even with the whole fleet."""

    def __init__(self, events: EventBridgeClient, bus_name: str) -> None:
        self._events = events
        self._bus = bus_name

    def publish(self, batch: dict[str, Any], detail_type: str = DETAIL_TYPE) -> None:
        response = self._events.put_events(
            Entries=[
                {
                    "Source": self.SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(batch),
                    "EventBusName": self._bus,
                    "Resources": [str(batch["id"])],
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge refused a status event: {response['Entries']}")
