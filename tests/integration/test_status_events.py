"""Status changes reach EventBridge with the Batch object, as OpenAI's webhooks and Bedrock's
state-change events do; a subscriber here is a rule on the bus with an SQS target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai.types import Batch as OpenAIBatch

from batchctl.local import LocalStack
from tests.conftest import EXAMPLES, chat_request, write_jsonl
from tests.queues import drain


def subscribe(stack: LocalStack) -> str:
    """A rule for our events on the default bus, delivering to a fresh queue; its URL."""
    sqs = stack.session.client("sqs")
    url = sqs.create_queue(QueueName="status-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = stack.session.client("events")
    events.put_rule(Name="batch-status", EventPattern=json.dumps({"source": ["openbatch"]}))
    events.put_targets(Rule="batch-status", Targets=[{"Id": "queue", "Arn": arn}])
    return url


def received(stack: LocalStack, url: str, at_least: int = 0) -> list[dict[str, Any]]:
    """Every event on the queue; waits (up to 10 s) for `at_least`: a batch's outbox file is
    written just before its status is announced, so a reader of the outbox can be early."""
    messages = drain(stack.session.client("sqs"), url, delete=True, at_least=at_least)
    return [json.loads(message["Body"]) for message in messages]


def test_in_progress_and_completed_are_announced_with_the_batch(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    url = subscribe(fake_stack)
    batch = fake_stack.wait_for_outbox(fake_stack.drop(EXAMPLES / "chat.jsonl"), timeout=120)
    bad = fake_stack.wait_for_outbox(
        fake_stack.drop(write_jsonl(tmp_path / "bad.jsonl", ["{", chat_request("a")])),
        timeout=60,
    )
    events = received(fake_stack, url, at_least=3)
    assert all(e["source"] == "openbatch" for e in events)
    assert all(e["detail-type"] == "Batch Status Change" for e in events)
    seen = [(e["detail"]["id"], e["detail"]["status"]) for e in events]
    assert sorted(seen) == sorted(
        [(batch.id, "in_progress"), (batch.id, "completed"), (bad.id, "failed")]
    )
    for event in events:
        OpenAIBatch.model_validate(event["detail"])  # the Batch object, as the API returns it
        assert event["resources"] == [event["detail"]["id"]]
    completed = next(e["detail"] for e in events if e["detail"]["status"] == "completed")
    assert completed["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
