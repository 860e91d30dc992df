"""Standard Webhooks signing and delivery retries, checked against the openai SDK's own
verifier and with a fake receiver and queue (no AWS)."""

from __future__ import annotations

import socket
import time
from typing import Any

import openai
import pytest

from batch_core.models import WebhookEndpoint
from batch_core.records import WebhookRecord
from batch_core.settings import Settings
from batch_core.webhooks import (
    RefusedTargetError,
    TargetRules,
    WebhookDelivery,
    WebhookEvent,
    WebhookService,
    new_secret,
    retry_delay,
    sign,
)
from tests.unit.test_webhook_delivery import Store


def test_a_signature_verifies_with_the_sdk_and_fails_when_anything_changes() -> None:
    secret, body, now = (
        new_secret(),
        b'{"id": "evt_1", "type": "batch.completed"}',
        int(time.time()),
    )
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now)}
    verifier = openai.OpenAI(api_key="unused").webhooks
    verifier.verify_signature(
        body, {**headers, "webhook-signature": sign(secret, "evt_1", now, body)}, secret=secret
    )
    for tampered in (
        sign(secret, "evt_2", now, body),
        sign(secret, "evt_1", now + 1, body),
        sign(secret, "evt_1", now, body + b" "),
        sign(new_secret(), "evt_1", now, body),
    ):
        with pytest.raises(openai.InvalidWebhookSignatureError):
            verifier.verify_signature(
                body, {**headers, "webhook-signature": tampered}, secret=secret
            )


def test_retry_waits_double_up_to_sqs_longest_delay() -> None:
    assert [retry_delay(n, 30) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


class _Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[WebhookDelivery, int]] = []

    def send(self, delivery: WebhookDelivery, delay_seconds: int) -> None:
        self.sent.append((delivery, delay_seconds))


def _service(answer: Any, max_attempts: int = 3) -> tuple[WebhookService, _Queue]:
    settings = Settings(
        bucket_name="b",
        table_name="t",
        shard_queue_url="q",
        webhook_max_attempts=max_attempts,
        webhook_retry_base_seconds=30,
        webhook_allow_internal_targets=True,
    )
    endpoint = WebhookEndpoint(
        id="we_1", created_at=1, event_types=["batch.completed"], name="n", url="http://x/h"
    )
    repository = Store({"we_1": WebhookRecord(endpoint=endpoint, tenant="t", secret=new_secret())})
    queue = _Queue()
    service = WebhookService(settings, repository, queue, poster=answer)  # type: ignore[arg-type]
    return service, queue


EVENT = WebhookEvent(id="evt_1", created_at=1, type="batch.completed", data={"id": "batch_1"})


def test_a_refused_attempt_is_queued_again_later_until_the_last() -> None:
    service, queue = _service(lambda url, body, headers: 503)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    ((again, delay),) = queue.sent
    assert (again.attempt, delay, again.event) == (2, 30, EVENT)
    assert not service.deliver(again)
    assert (queue.sent[-1][0].attempt, queue.sent[-1][1]) == (3, 60)
    assert not service.deliver(queue.sent[-1][0])  # the third of three: given up
    assert len(queue.sent) == 2


def test_an_unreachable_receiver_is_retried_and_a_2xx_is_the_end() -> None:
    def unreachable(url: str, body: bytes, headers: dict[str, str]) -> int:
        raise ConnectionRefusedError("refused")

    service, queue = _service(unreachable)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    assert len(queue.sent) == 1
    service, queue = _service(lambda url, body, headers: 204)
    assert service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    assert queue.sent == []


def test_a_deleted_endpoint_gets_nothing() -> None:
    service, queue = _service(lambda url, body, headers: 200)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_gone", event=EVENT))
    assert queue.sent == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/in", True),
        ("https://127.0.0.1/in", False),
        ("https://[fd00::1]/in", False),
        ("https://192.168.1.10/in", False),
        ("https://0x7f.1/in", False),
        ("http://hooks.example.com/in", False),
        ("https:///no-host", False),
        ("https://[::1/unclosed", False),
        ("https://[::ffff:127.0.0.1]/mapped", False),
    ],
)
def test_target_rules(url: str, allowed: bool) -> None:
    assert (TargetRules().refusal(url) is None) is allowed


def test_a_public_name_that_resolves_inside_is_refused_before_sending() -> None:
    with pytest.raises(RefusedTargetError):
        TargetRules().checked_addresses(socket.getaddrinfo("localhost", 443))
    with pytest.raises(RefusedTargetError):
        TargetRules().checked_addresses([])  # no address at all


def test_batch_at_risk_reaches_an_sdk_receiver_as_the_readme_says() -> None:
    # The SDKs know no `batch.at_risk`: `unwrap` verifies it, then types it as the first
    # class of its union (another event's). What a receiver gets, and what the README tells
    # it to do about it (dispatch on `event.type`), are held together here.
    from openai.types.webhooks import (
        BatchCancelledWebhookEvent,
        BatchCompletedWebhookEvent,
        BatchExpiredWebhookEvent,
        BatchFailedWebhookEvent,
    )

    from batchctl.template import PROJECT_ROOT

    secret, now = new_secret(), int(time.time())
    event = WebhookEvent(id="evt_r", created_at=now, type="batch.at_risk", data={"id": "batch_1"})
    body = event.model_dump_json().encode()
    headers = {
        "webhook-id": event.id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, event.id, now, body),
    }
    got = openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=secret)
    assert (got.type, got.to_dict()["data"], got.id) == (
        "batch.at_risk",
        {"id": "batch_1"},
        "evt_r",
    )
    batch_classes = (
        BatchCancelledWebhookEvent,
        BatchCompletedWebhookEvent,
        BatchExpiredWebhookEvent,
        BatchFailedWebhookEvent,
    )
    assert not isinstance(got, batch_classes)
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("\nWebhooks, as OpenAI has them") :]
    section = " ".join(section[: section.index("\n\n")].split())
    assert "`batch.at_risk`" in section and "dispatch on `event.type`" in section
    assert type(got).__name__ in section  # the class the SDK really gives it today
