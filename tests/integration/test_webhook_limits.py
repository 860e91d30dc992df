"""Webhook limits that must hold in DynamoDB itself (moto): the 16 endpoints of a tenant under
creates that race, endpoints disabled after failing again and again (and shown so by the
API), a tenant's delivery time budget, and names that refuse control characters."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import pytest

from batch_core import webhooks, wiring
from batch_core.errors import InvalidRequestError
from batch_core.models import WebhookEndpoint
from batch_core.records import BatchRecord, WebhookRecord
from batch_core.webhook_endpoints import WebhookEndpointCreateParams, WebhookEndpoints
from batch_core.webhooks import (
    MAX_ENDPOINTS_PER_TENANT,
    WebhookDelivery,
    WebhookEvent,
    new_secret,
)
from batchctl.local import LocalLambdaContext, LocalStack
from batchctl.server import api_gateway_event
from handlers import api

KEY = "sk-webhook-limits-0123456789"
EVENT = WebhookEvent(id="evt_1", created_at=1, type="batch.completed", data={"id": "batch_1"})


def params(index: int) -> WebhookEndpointCreateParams:
    return WebhookEndpointCreateParams(
        url=f"https://hooks.example.com/{index}", event_types=["batch.completed"], name=f"n{index}"
    )


def count(hooks: WebhookEndpoints, tenant: str) -> int:
    return len(hooks.repository.list_webhooks(tenant, limit=100).items)


def test_the_endpoint_limit_holds_when_creates_race(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = bare_stack.stages.webhook_endpoints
    hooks.create("racer", params(0))
    racers = 20
    barrier = threading.Barrier(racers)
    real_list = hooks.repository.list_webhooks

    def listing(*args: Any, **kwargs: Any) -> Any:
        # Each create that reads the count reads it at the same moment, as concurrent API
        # calls can (a count read first cannot tell them apart).
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)
        return real_list(*args, **kwargs)

    monkeypatch.setattr(hooks.repository, "list_webhooks", listing)
    outcomes: list[str] = []

    def create(index: int) -> None:
        try:
            hooks.create("racer", params(index))
            outcomes.append("created")
        except InvalidRequestError as error:
            outcomes.append(str(error.code))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(1, racers + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.undo()
    assert sorted(outcomes) == ["created"] * 15 + ["too_many_endpoints"] * 5
    assert count(hooks, "racer") == MAX_ENDPOINTS_PER_TENANT


def test_a_deleted_endpoint_frees_its_place_and_old_endpoints_are_counted(
    bare_stack: LocalStack,
) -> None:
    hooks = bare_stack.stages.webhook_endpoints
    created = [hooks.create("full", params(i)) for i in range(MAX_ENDPOINTS_PER_TENANT)]
    with pytest.raises(InvalidRequestError):
        hooks.create("full", params(99))
    hooks.delete("full", created[0].id)
    hooks.create("full", params(100))
    with pytest.raises(InvalidRequestError):
        hooks.create("full", params(101))
    # A tenant whose endpoints were stored before the count was kept: counted from them.
    for i in range(MAX_ENDPOINTS_PER_TENANT):
        endpoint = WebhookEndpoint(
            id=f"we_old{i}", created_at=1, event_types=["batch.failed"], name="o", url="https://x"
        )
        bare_stack.stages.table.tenants.put_webhook(
            WebhookRecord(endpoint=endpoint, tenant="older", secret=new_secret())
        )
    with pytest.raises(InvalidRequestError):
        hooks.create("older", params(0))
    hooks.delete("older", "we_old3")
    hooks.create("older", params(1))
    assert count(hooks, "older") == MAX_ENDPOINTS_PER_TENANT


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    event = api_gateway_event(method, path, headers, data)
    response = api.handler(event, LocalLambdaContext(function_name="api", aws_request_id="r"))
    return int(response["statusCode"]), json.loads(response.get("body") or "null")


def test_an_endpoint_that_keeps_failing_is_disabled_shown_so_and_skipped(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    wiring.default_api_keys().register(KEY, "failing")
    hooks = wiring.default_stages().webhooks
    status, endpoint = call(
        "POST",
        "/v1/webhook_endpoints",
        {"url": "https://hooks.example.com/down", "event_types": ["batch.completed"], "name": "d"},
    )
    assert status == 200 and endpoint["status"] == "enabled", endpoint
    attempts: list[str] = []

    def down(url: str, body: bytes, headers: dict[str, str]) -> int:
        attempts.append(url)
        return 502

    monkeypatch.setattr(hooks, "poster", down)
    delivery = WebhookDelivery(endpoint_id=endpoint["id"], event=EVENT)
    for _ in range(webhooks.DISABLE_AFTER_FAILURES):
        assert not hooks.deliver(delivery)
    status, shown = call("GET", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert (status, shown["status"]) == (200, "disabled")
    assert call("GET", "/v1/webhook_endpoints")[1]["data"][0]["status"] == "disabled"
    assert not hooks.deliver(delivery)
    assert len(attempts) == webhooks.DISABLE_AFTER_FAILURES  # nothing sent once disabled
    now = int(time.time())
    ended = BatchRecord(
        id="batch_x", endpoint="/v1/chat/completions", input_file_id="file-x",
        completion_window="24h", status="completed", created_at=now, expires_at=now + 60,
        input_key="inbox/x.jsonl", tenant="failing",
    )  # fmt: skip
    assert hooks.batch_ended(ended) == 0  # nor queued


def test_a_success_resets_the_failures_kept_in_the_table(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = bare_stack.stages.webhooks
    created = bare_stack.stages.webhook_endpoints.create("flaky", params(0))
    answers = iter([500, 500, 200, 500])
    monkeypatch.setattr(hooks, "poster", lambda url, body, headers: next(answers))
    delivery = WebhookDelivery(endpoint_id=created.id, event=EVENT)
    for _ in range(4):
        hooks.deliver(delivery)
    record = hooks.repository.get_webhook(created.id)
    assert record is not None
    assert (record.consecutive_failures, record.endpoint.status) == (1, "enabled")


def test_a_tenants_delivery_time_is_reserved_within_its_budget(bare_stack: LocalStack) -> None:
    repository = bare_stack.stages.table
    budget, attempt = webhooks.TENANT_ATTEMPT_MS_PER_MINUTE, 10_000
    window = int(time.time() // 60)
    taken = 0
    while repository.tenants.reserve_webhook_time(
        "busy", window, attempt, budget=budget, expires_at=(window + 2) * 60
    ):
        taken += 1
    assert taken == budget // attempt
    assert repository.tenants.reserve_webhook_time(
        "calm", window, attempt, budget=budget, expires_at=(window + 2) * 60
    )  # another tenant's budget is its own
    for _ in range(2):  # two quick attempts (0.3 s each) give back what they did not use
        repository.tenants.release_webhook_time("busy", window, attempt - 300)
    assert repository.tenants.reserve_webhook_time(
        "busy", window, attempt, budget=budget, expires_at=(window + 2) * 60
    )
    assert not repository.tenants.reserve_webhook_time(
        "busy", window, attempt, budget=budget, expires_at=(window + 2) * 60
    )
    assert repository.tenants.reserve_webhook_time(
        "busy", window + 1, attempt, budget=budget, expires_at=(window + 3) * 60
    )  # the next minute starts afresh


@pytest.mark.parametrize("name", ["two\nlines", "nul\u0000", "bell\u0007"])
def test_the_api_refuses_a_name_with_control_characters(bare_stack: LocalStack, name: str) -> None:
    wiring.default_api_keys().register(KEY, "names")
    status, body = call(
        "POST",
        "/v1/webhook_endpoints",
        {"url": "https://hooks.example.com/n", "event_types": ["batch.completed"], "name": name},
    )
    assert status == 400, body
    assert body["error"]["param"] == "name" and body["error"]["type"] == "invalid_request_error"
