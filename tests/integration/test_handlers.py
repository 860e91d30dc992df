"""The Lambda handlers, invoked in-process with the event files `sam local invoke` would use."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_core import s3keys
from batch_core.ids import new_batch_id
from batch_core.messaging import ShardTask
from batchctl.local import LocalLambdaContext, LocalStack
from gpu_worker.engines.fake import FakeEngine
from handlers import dead_intake, dead_shard, finalize, validate
from handlers.s3_notification import dropped_objects
from tests.conftest import MODEL, chat_request, load_event, store_batch
from tests.queues import drain
from tests.receivers import HttpReceiver

CONTEXT = LocalLambdaContext(function_name="test", aws_request_id="req-1")
DECODED_KEY = "inbox/team prompts(2).jsonl"  # the event file carries it URL-encoded


def queued(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    return drain(stack.session.client("sqs"), stack.physical_id(queue))


def put_input(stack: LocalStack, count: int) -> None:
    body = "".join(json.dumps(chat_request(f"r{i}")) + "\n" for i in range(count))
    stack.session.client("s3").put_object(Bucket=stack.bucket, Key=DECODED_KEY, Body=body.encode())
    queued(stack, "IntakeQueue")  # drop moto's own notification: the test delivers the event file


def test_test_event_is_ignored(bare_stack: LocalStack) -> None:
    result = validate.handler(load_event("intake_s3_test_event.json"), CONTEXT)
    assert result == {"batchItemFailures": []}
    assert bare_stack.stages.store.list_keys("batches/") == []


def test_object_created_event_plans_shards_once_even_when_delivered_twice(
    bare_stack: LocalStack,
) -> None:
    put_input(bare_stack, 10)
    event = load_event("intake_s3_object_created.json")
    assert validate.handler(event, CONTEXT) == {"batchItemFailures": []}
    assert validate.handler(copy.deepcopy(event), CONTEXT) == {"batchItemFailures": []}

    messages = queued(bare_stack, "ShardQueue")
    tasks = sorted(
        (ShardTask.model_validate_json(m["Body"]) for m in messages), key=lambda t: t.shard_index
    )
    assert [t.shard_index for t in tasks] == [0, 1, 2]  # 10 requests, 4 per shard, queued once
    batch = bare_stack.stages.batches.get_batch(tasks[0].batch_id)
    assert batch is not None
    assert batch.status == "in_progress"
    # Intake reads its own copy of the announced upload (the input File's object), not the key.
    assert batch.input_key == s3keys.file_key(batch.input_file_id)
    store = bare_stack.stages.store
    assert store.read(batch.input_key) == store.read(DECODED_KEY)
    assert batch.outbox_name == "team prompts(2)"
    assert (batch.request_total, batch.shards_total, batch.shards_pending) == (10, 3, 3)
    sfn = bare_stack.session.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=bare_stack.physical_id("BatchTracker"))[
        "executions"
    ]
    assert [e["name"] for e in executions] == [batch.id]


def test_an_event_for_an_object_that_is_gone_creates_no_batch(bare_stack: LocalStack) -> None:
    event = load_event("intake_s3_object_created.json")  # the object was never uploaded
    assert validate.handler(event, CONTEXT) == {"batchItemFailures": []}
    assert bare_stack.stages.store.list_keys("files/") == []
    assert queued(bare_stack, "ShardQueue") == []


def test_a_failing_record_is_reported_for_retry_not_raised(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_input(bare_stack, 2)
    event = load_event("intake_s3_object_created.json")

    def throttled(*args: object, **kwargs: object) -> None:
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "HeadObject")

    monkeypatch.setattr(bare_stack.stages.store, "head", throttled)
    try:
        validate.handler(event, CONTEXT)
    except Exception as error:  # every record failed: Powertools raises so Lambda retries them all
        assert "All records failed" in str(error)
    else:
        raise AssertionError("a missing object must fail the record")


def test_finalize_event_completes_the_batch_and_resumes_the_tracker(bare_stack: LocalStack) -> None:
    put_input(bare_stack, 6)
    validate.handler(load_event("intake_s3_object_created.json"), CONTEXT)
    engine = FakeEngine(MODEL)
    for message in queued(bare_stack, "ShardQueue"):
        outcome = bare_stack.stages.runner.process_shard(
            ShardTask.model_validate_json(message["Body"]), engine
        )
        assert outcome.outcome == "done"

    finalize_messages: list[dict[str, Any]] = []
    for _ in range(100):  # the tracker polls every second, then sends the finalize request
        finalize_messages = queued(bare_stack, "FinalizeQueue")
        if finalize_messages:
            break
        time.sleep(0.1)
    (message,) = finalize_messages
    event = load_event("finalize_request.json")
    event["Records"][0]["body"] = message["Body"]
    assert finalize.handler(event, CONTEXT) == {"batchItemFailures": []}

    request = json.loads(message["Body"])
    batch = bare_stack.stages.batches.get_batch(request["batch_id"])
    assert batch is not None and batch.status == "completed"
    assert (batch.request_completed, batch.request_failed) == (6, 0)
    sfn = bare_stack.session.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=bare_stack.physical_id("BatchTracker"))[
        "executions"
    ]
    for _ in range(100):
        status = sfn.describe_execution(executionArn=execution["executionArn"])["status"]
        if status != "RUNNING":
            break
        time.sleep(0.1)
    assert status == "SUCCEEDED"


def test_api_events_answer_in_openai_shapes(bare_stack: LocalStack) -> None:
    """The API handler on the event files `sam local invoke ApiFunction -e ...` would use."""
    from batch_core import wiring
    from handlers import api

    listing = load_event("api_list_batches.json")
    unauthorized = api.handler(listing, CONTEXT)
    assert unauthorized["statusCode"] == 401
    assert json.loads(unauthorized["body"])["error"]["code"] == "invalid_api_key"

    wiring.default_api_keys().register("sk-event-file-key-0001", "events")
    answered = api.handler(copy.deepcopy(listing), CONTEXT)
    assert answered["statusCode"] == 200
    page = json.loads(answered["body"])
    assert (page["object"], page["data"], page["has_more"]) == ("list", [], False)

    missing_file = api.handler(load_event("api_create_batch.json"), CONTEXT)
    assert missing_file["statusCode"] == 404
    error = json.loads(missing_file["body"])["error"]
    assert (error["param"], error["type"]) == ("input_file_id", "invalid_request_error")


def test_aws_throttling_becomes_429_and_other_aws_errors_500(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from batch_core import wiring
    from handlers import api

    wiring.default_api_keys().register("sk-event-file-key-0001", "events")
    repository = wiring.default_stages().table.batches
    for code, status in (("ProvisionedThroughputExceededException", 429), ("AccessDenied", 500)):

        def refuse(*args: Any, _code: str = code, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": _code, "Message": "no"}}, "Query")

        monkeypatch.setattr(repository, "list_batches", refuse)
        answer = api.handler(load_event("api_list_batches.json"), CONTEXT)
        assert answer["statusCode"] == status
        assert set(json.loads(answer["body"])["error"]) == {"message", "type", "param", "code"}
        headers = {k.lower(): v for k, v in (answer.get("multiValueHeaders") or {}).items()}
        headers |= {k.lower(): [v] for k, v in (answer.get("headers") or {}).items()}
        # AWS backs off in seconds: the SDKs wait one before they ask again.
        assert headers.get("retry-after-ms") == (["1000"] if status == 429 else None)


def test_the_webhook_handler_delivers_the_event_file_signed(
    bare_stack: LocalStack, http_receiver: HttpReceiver
) -> None:
    import openai

    from batch_core.webhook_endpoints import WebhookEndpointCreateParams
    from batch_core.wiring import default_stages
    from handlers import webhooks

    http_receiver.status = 204
    endpoint = default_stages().webhook_endpoints.create(
        "default",
        WebhookEndpointCreateParams(
            url=http_receiver.url("/hook"),
            event_types=["batch.completed"],
            name="handler test",
        ),
    )
    event = load_event("webhook_delivery.json")
    body = json.loads(event["Records"][0]["body"])
    event["Records"][0]["body"] = json.dumps({**body, "endpoint_id": endpoint.id})

    assert webhooks.handler(event, CONTEXT) == {"batchItemFailures": []}
    (received,) = http_receiver.requests
    verified = openai.OpenAI(api_key="unused").webhooks.unwrap(
        received.body, received.headers, secret=endpoint.signing_secret
    )
    assert (verified.id, verified.type) == (body["event"]["id"], "batch.completed")
    assert queued(bare_stack, "WebhookQueue") == []  # delivered: nothing queued again


def test_the_dead_shard_event_ends_a_shard_no_worker_could_run(bare_stack: LocalStack) -> None:
    put_input(bare_stack, 6)
    validate.handler(load_event("intake_s3_object_created.json"), CONTEXT)
    first = min(
        (ShardTask.model_validate_json(m["Body"]) for m in queued(bare_stack, "ShardQueue")),
        key=lambda task: task.shard_index,
    )
    event = load_event("dead_shard_message.json")
    event["Records"][0]["body"] = first.model_dump_json()
    assert dead_shard.handler(event, CONTEXT) == {"batchItemFailures": []}
    shard = bare_stack.stages.table.shards.get_shard(first.batch_id, first.shard_index)
    assert shard is not None and shard.status == "done"
    batch = bare_stack.stages.batches.get_batch(first.batch_id)
    # Its 4 requests (4 per shard here), each now a shard_failed line; the rest still to run.
    assert batch is not None and (batch.request_failed, batch.shards_pending) == (4, 1)


def test_the_dead_intake_event_fails_a_batch_stuck_validating(bare_stack: LocalStack) -> None:
    put_input(bare_stack, 3)
    event = load_event("dead_intake_message.json")
    (dropped,) = dropped_objects(event["Records"][0]["body"])
    stages = bare_stack.stages
    # What an intake that crashed on every attempt leaves: the batch recorded, validating.
    batch_id = new_batch_id(stages.intake._drop_seed(dropped))
    store_batch(bare_stack, batch_id, "validating")
    assert dead_intake.handler(event, CONTEXT) == {"batchItemFailures": []}
    batch = stages.batches.get_batch(batch_id)
    assert batch is not None and batch.status == "failed"
    assert batch.errors is not None and batch.errors[0].code == "intake_failed"
    # An event for an object that never became a batch names nothing to end.
    event["Records"][0]["body"] = event["Records"][0]["body"].replace("prompts", "other")
    assert dead_intake.handler(event, CONTEXT) == {"batchItemFailures": []}
