"""One way for tests to read what a queue holds (moto's SQS or a real one)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def drain(
    sqs: SQSClient,
    queue_url: str,
    *,
    delete: bool = False,
    at_least: int = 0,
    timeout: float = 10,
    attributes: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Every message visible on the queue, each once, received ten at a time until an answer
    brings nothing new. A message read and not deleted stays hidden for the queue's
    visibility timeout (what a consumer that has not finished sees); `delete` deletes each as
    it is read. `at_least` polls up to `timeout` seconds for that many (an event on its way),
    then answers what came: the caller asserts. `attributes` are system attributes to fetch
    (MessageGroupId, or All)."""
    options: dict[str, Any] = {"MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}
    if attributes:
        options["MessageSystemAttributeNames"] = list(attributes)
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, **options).get("Messages", [])
        # A queue without a visibility timeout hands the same message back: stop at it.
        fresh = [dict(m) for m in messages if m["MessageId"] not in seen]
        seen.update(str(m["MessageId"]) for m in fresh)
        found += fresh
        if delete:
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if fresh:
            continue
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
