"""Webhook endpoint management through the official Python SDK's own methods against the local
server (`client.webhooks.update`, `rotate_secret`, `test`, `event_types.list`): each answer
parsed by the SDK's own response type, test deliveries that reach a receiver on this machine
signed and verified with `client.webhooks.unwrap`, an update that changes what a finished
batch delivers, and bad input as OpenAI's 4xx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    BatchCompletedWebhookEvent,
    BatchFailedWebhookEvent,
    WebhookEndpoint,
    WebhookEndpointTestResult,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
)

from batch_core import webhooks, wiring
from batch_core.webhooks import TargetRules
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, serve_api
from tests.integration.test_webhooks import run_batch
from tests.receivers import HttpReceiver

KEY = "sk-test-hook-admin-0123456789"
OTHER_KEY = "sk-test-hook-admin-other-0123456789"


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "hook-admin", OTHER_KEY: "hook-admin-other"}) as running:
        yield running


@pytest.fixture
def client(local_api: tuple[LocalStack, ApiServer]) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)
    yield client
    for endpoint in client.webhooks.list():  # a tenant has at most 16: each test's go
        client.webhooks.delete(endpoint.id)


def strictly(model: type[Any], raw: Any) -> Any:
    """The SDK's type validated from the answer's JSON (the SDK itself only constructs)."""
    return model.model_validate(raw.http_response.json())


def register(client: openai.OpenAI, url: str, events: list[Any]) -> WebhookEndpointWithSecret:
    raw = client.webhooks.with_raw_response.create(url=url, event_types=events, name="admin")
    endpoint: WebhookEndpointWithSecret = strictly(WebhookEndpointWithSecret, raw)
    return endpoint


def test_a_test_delivery_arrives_signed_with_the_rotated_secret_only(
    client: openai.OpenAI, http_receiver: HttpReceiver
) -> None:
    created = register(client, http_receiver.url("/t"), ["batch.completed"])
    raw = client.webhooks.with_raw_response.rotate_secret(created.id)
    rotated: WebhookEndpointWithSecret = strictly(WebhookEndpointWithSecret, raw)
    assert rotated.id == created.id and rotated.signing_secret != created.signing_secret
    assert rotated.signing_secret_hint and rotated.signing_secret.endswith(
        rotated.signing_secret_hint[-4:]
    )
    assert client.webhooks.retrieve(created.id).signing_secret_hint == rotated.signing_secret_hint

    # A type the endpoint is not subscribed to is still sent: it is a sample.
    raw = client.webhooks.with_raw_response.test(created.id, event_type="batch.failed")
    result: WebhookEndpointTestResult = strictly(WebhookEndpointTestResult, raw)
    assert (result.object, result.success, result.status_code) == (
        "webhook_endpoint.test",
        True,
        200,
    )
    assert (result.webhook_endpoint_id, result.event_type) == (created.id, "batch.failed")

    (delivered,) = http_receiver.wait_for("/t", 1)
    event = client.webhooks.unwrap(delivered.body, delivered.headers, secret=rotated.signing_secret)
    assert isinstance(event, BatchFailedWebhookEvent) and event.type == "batch.failed"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(
            delivered.body, delivered.headers, secret=created.signing_secret
        )


def test_a_rotation_that_keeps_the_old_secret_signs_with_both(
    client: openai.OpenAI, http_receiver: HttpReceiver
) -> None:
    created = register(client, http_receiver.url("/both"), ["batch.completed"])
    rotated = client.webhooks.rotate_secret(created.id, keep_old_secret_active_for_24_hours=True)
    client.webhooks.test(created.id, event_type="batch.completed")
    (delivered,) = http_receiver.wait_for("/both", 1)
    for secret in (rotated.signing_secret, created.signing_secret):
        event = client.webhooks.unwrap(delivered.body, delivered.headers, secret=secret)
        assert isinstance(event, BatchCompletedWebhookEvent)
    again = client.webhooks.rotate_secret(created.id)  # the default: the old stops at once
    client.webhooks.test(created.id, event_type="batch.completed")
    _, second = http_receiver.wait_for("/both", 2)
    client.webhooks.verify_signature(second.body, second.headers, secret=again.signing_secret)
    for old in (rotated.signing_secret, created.signing_secret):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(second.body, second.headers, secret=old)


def test_the_receivers_answer_is_the_result_and_no_answer_is_a_409(
    client: openai.OpenAI, http_receiver: HttpReceiver
) -> None:
    http_receiver.answer("/down", 500)
    created = register(client, http_receiver.url("/down"), ["batch.completed"])
    result = client.webhooks.test(created.id, event_type="batch.completed")
    assert (result.status_code, result.success) == (500, True)
    assert client.webhooks.retrieve(created.id).model_extra == {"status": "enabled"}

    closed = HttpReceiver()
    nobody = closed.url("/gone")
    closed.close()  # nothing listens on its port any more
    client.webhooks.update(created.id, url=nobody)
    with pytest.raises(openai.ConflictError) as excinfo:
        client.webhooks.test(created.id, event_type="batch.completed")
    assert excinfo.value.code == "webhook_endpoint_unreachable"
    assert excinfo.value.param == "url" and "got no answer" in excinfo.value.message
    # The SDKs would retry a 409: the answer tells them not to (each try spends the budget).
    assert excinfo.value.response.headers["x-should-retry"] == "false"


def test_an_update_changes_what_a_finished_batch_delivers(
    client: openai.OpenAI, http_receiver: HttpReceiver
) -> None:
    created = register(client, http_receiver.url("/before"), ["batch.failed"])
    raw = client.webhooks.with_raw_response.update(
        created.id, url=http_receiver.url("/after"), event_types=["batch.completed"]
    )
    updated: WebhookEndpoint = strictly(WebhookEndpoint, raw)
    assert (updated.url, updated.event_types, updated.name) == (
        http_receiver.url("/after"),
        ["batch.completed"],
        "admin",  # not sent: kept
    )
    assert updated.updated_at is not None and updated.updated_at >= created.created_at
    assert client.webhooks.retrieve(created.id).model_dump() == updated.model_dump()

    batch = run_batch(client)

    assert batch.status == "completed"
    (delivered,) = http_receiver.wait_for("/after", 1)
    event = client.webhooks.unwrap(delivered.body, delivered.headers, secret=created.signing_secret)
    assert (event.type, event.data.id) == ("batch.completed", batch.id)
    assert http_receiver.to("/before") == []
    # The same values again change nothing, `updated_at` included.
    same = client.webhooks.update(created.id, event_types=["batch.completed"], name="admin")
    assert same.model_dump() == updated.model_dump()


def test_an_update_enables_an_endpoint_deliveries_disabled(
    client: openai.OpenAI, local_api: tuple[LocalStack, ApiServer]
) -> None:
    created = register(client, "https://hooks.example.com/was-down", ["batch.completed"])
    tenants = local_api[0].stages.table.tenants
    for _ in range(webhooks.DISABLE_AFTER_FAILURES):
        tenants.count_webhook_failure(
            created.id, disable_after=webhooks.DISABLE_AFTER_FAILURES, at=1
        )
    assert client.webhooks.retrieve(created.id).model_extra == {"status": "disabled"}

    enabled = client.webhooks.update(created.id, url="https://hooks.example.com/fixed")

    assert enabled.model_extra == {"status": "enabled"}
    assert client.webhooks.retrieve(created.id).model_extra == {"status": "enabled"}


def test_the_event_type_list_parses_and_every_type_in_it_can_be_subscribed(
    client: openai.OpenAI,
) -> None:
    raw = client.webhooks.event_types.with_raw_response.list()
    listed: WebhookEventTypeList = strictly(WebhookEventTypeList, raw)
    assert listed.object == "list"
    assert set(listed.data) == {
        "batch.completed", "batch.failed", "batch.expired", "batch.cancelled", "batch.at_risk"
    }  # fmt: skip
    created = register(client, "https://hooks.example.com/all", listed.data)
    assert client.webhooks.retrieve(created.id).event_types == listed.data


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"event_types": ["video.completed"]}, "event_types"),
        ({"event_types": []}, "event_types"),
        ({"name": "n" * 257}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com/" + "x" * 2048}, "url"),
    ],
)
def test_an_update_refuses_what_create_refuses(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    created = register(client, "https://hooks.example.com/kept", ["batch.completed"])
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.update(created.id, **fields)
    body = excinfo.value.body
    assert isinstance(body, dict) and str(body["param"]).startswith(param), body
    assert body["type"] == "invalid_request_error" and body["message"]
    kept = client.webhooks.retrieve(created.id)
    assert (kept.url, kept.name, kept.updated_at) == (created.url, "admin", created.updated_at)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://10.0.0.1/",
    ],
)
def test_an_update_to_an_internal_url_is_refused_when_deployed(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    created = register(client, "https://hooks.example.com/public", ["batch.completed"])
    rules = TargetRules(allow_internal=False)
    monkeypatch.setattr(wiring.default_stages().webhooks, "rules", rules)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.update(created.id, url=url)
    assert (excinfo.value.param, excinfo.value.code) == ("url", "invalid_url")
    assert client.webhooks.retrieve(created.id).url == "https://hooks.example.com/public"


def test_a_test_of_an_event_type_this_api_never_sends_is_refused(client: openai.OpenAI) -> None:
    created = register(client, "https://hooks.example.com/types", ["batch.completed"])
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.test(created.id, event_type="response.completed")
    assert excinfo.value.param == "event_type"


def test_unknown_and_other_tenants_endpoints_are_404_on_every_new_route(
    client: openai.OpenAI, local_api: tuple[LocalStack, ApiServer]
) -> None:
    mine = register(client, "https://hooks.example.com/mine", ["batch.completed"])
    other = openai.OpenAI(base_url=local_api[1].base_url, api_key=OTHER_KEY, max_retries=0)
    for caller, endpoint_id in ((other, mine.id), (client, "we_0000nope")):
        calls = [
            lambda c=caller, e=endpoint_id: c.webhooks.update(e, name="taken"),
            lambda c=caller, e=endpoint_id: c.webhooks.rotate_secret(e),
            lambda c=caller, e=endpoint_id: c.webhooks.test(e, event_type="batch.completed"),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError) as excinfo:
                call()
            assert excinfo.value.param == "webhook_endpoint_id"
            assert excinfo.value.type == "invalid_request_error"
    kept = client.webhooks.retrieve(mine.id)
    assert (kept.name, kept.signing_secret_hint) == ("admin", mine.signing_secret_hint)


def test_a_test_past_the_tenants_delivery_time_is_a_429_with_retry_after(
    client: openai.OpenAI, http_receiver: HttpReceiver, local_api: tuple[LocalStack, ApiServer]
) -> None:
    created = register(client, http_receiver.url("/budget"), ["batch.completed"])
    budget = webhooks.TENANT_ATTEMPT_MS_PER_MINUTE
    window = int(time.time() // webhooks.BUDGET_WINDOW_SECONDS)
    tenants = local_api[0].stages.table.tenants
    for spent in (window, window + 1):  # this minute's and the next's time all but spent
        while tenants.reserve_webhook_time(
            "hook-admin", spent, 1000, budget=budget, expires_at=(spent + 2) * 60
        ):
            pass
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.webhooks.test(created.id, event_type="batch.completed")
    headers = excinfo.value.response.headers
    assert 1000 <= int(headers["retry-after-ms"]) <= 61_000
    assert int(headers["retry-after"]) == -(-int(headers["retry-after-ms"]) // 1000)
    assert http_receiver.to("/budget") == []  # nothing sent


@pytest.mark.parametrize("keep", ["true", 1, None, {"x": 1}])
def test_a_rotation_refuses_a_keep_flag_that_is_not_a_boolean(
    client: openai.OpenAI, keep: Any
) -> None:
    created = register(client, "https://hooks.example.com/flag", ["batch.completed"])
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.rotate_secret(
            created.id, extra_body={"keep_old_secret_active_for_24_hours": keep}
        )
    assert excinfo.value.param == "keep_old_secret_active_for_24_hours"
    assert client.webhooks.retrieve(created.id).signing_secret_hint == created.signing_secret_hint
