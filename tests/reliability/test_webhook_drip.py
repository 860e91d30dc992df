"""Webhooks against a tenant whose receivers drip: its 16 endpoints answer one byte every
0.2 s, several of its batches end at once, and the webhook function's few executions (the
template's MaximumConcurrency, scaled down) serve every tenant. Each attempt ends at its
deadline, the tenant's time budget sends the rest of its flood to the next minute, and
another tenant's delivery to a healthy receiver goes through meanwhile, in about the time
the budget allows the dripping tenant, whatever the size of its flood."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batch_core import webhooks, wiring
from batch_core.records import BatchRecord
from batch_core.webhook_endpoints import WebhookEndpointCreateParams
from batch_core.webhooks import MAX_ENDPOINTS_PER_TENANT, HttpPoster
from batchctl.local import LocalLambdaContext, LocalStack
from batchctl.local.events import sqs_event
from handlers import webhooks as webhook_handler
from tests.conftest import MODEL
from tests.receivers import HttpReceiver
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability

DEADLINE = 1.0  # the attempt's deadline here (10 s deployed)
BUDGET_MS = 3_000  # the tenant's time a minute here: 3 attempts at the deadline (12 deployed)
EXECUTIONS = 2  # the function's concurrent executions here (10 deployed)


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(None, served_models=[MODEL], route_events=False) as local:
        yield local


def ended(batch_id: str, tenant: str) -> BatchRecord:
    now = int(time.time())
    return BatchRecord(
        id=batch_id, endpoint="/v1/chat/completions", input_file_id="file-x",
        completion_window="24h", status="failed", created_at=now, expires_at=now + 60,
        input_key="inbox/x.jsonl", tenant=tenant,
    )  # fmt: skip


class Executions:
    """What the webhook function's concurrent executions do: each takes a message off the
    webhook queue and runs the real handler on it, until stopped."""

    def __init__(self, stack: LocalStack, count: int) -> None:
        self.stack, self.stop = stack, threading.Event()
        self.url = stack.physical_id("WebhookQueue")
        assert stack.resolver is not None
        self.arn = stack.resolver.attributes[("WebhookQueue", "Arn")]
        self.threads = [threading.Thread(target=self._run) for _ in range(count)]

    def __enter__(self) -> Executions:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        sqs = self.stack.session.client("sqs")
        context = LocalLambdaContext(function_name="webhooks", aws_request_id="r")
        while not self.stop.is_set():
            received = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1)
            messages = received.get("Messages", [])
            if not messages:
                time.sleep(0.05)
                continue
            webhook_handler.handler(sqs_event(messages, self.arn), context)  # type: ignore[arg-type]
            sqs.delete_message(QueueUrl=self.url, ReceiptHandle=messages[0]["ReceiptHandle"])


class Instrumented:
    """The stack's webhook service at this test's deadline and budget, timing each attempt
    and counting the deliveries put off to the next minute."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hooks = wiring.default_stages().webhooks
        self.durations: list[float] = []
        self.deferred = 0
        self._lock = threading.Lock()
        self._post = HttpPoster(self.hooks.rules, DEADLINE)
        self._wait: Callable[..., bool] = self.hooks._wait_for_budget
        monkeypatch.setattr(webhooks, "TENANT_ATTEMPT_MS_PER_MINUTE", BUDGET_MS)
        monkeypatch.setattr(self.hooks, "attempt_seconds", DEADLINE)
        monkeypatch.setattr(self.hooks, "poster", self._timed)
        monkeypatch.setattr(self.hooks, "_wait_for_budget", self._counted)

    def _timed(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        started = time.monotonic()
        try:
            return self._post(url, body, headers)
        finally:
            with self._lock:
                self.durations.append(time.monotonic() - started)

    def _counted(self, *args: Any) -> bool:
        with self._lock:
            self.deferred += 1
        return self._wait(*args)


def test_dripping_receivers_hold_an_attempt_to_its_deadline_and_their_tenant_to_its_budget(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, http_receiver: HttpReceiver
) -> None:
    service = Instrumented(monkeypatch)
    hooks = service.hooks
    endpoints = wiring.default_stages().webhook_endpoints
    flood = scale(3, 10)  # batches of the dripping tenant that end at once
    event = "batch.failed"
    http_receiver.status = 204  # the healthy tenant's receiver, at once
    healthy = http_receiver.url("/in")
    with HttpReceiver(drip=0.2) as dripper:
        for i in range(MAX_ENDPOINTS_PER_TENANT):
            url = dripper.url(f"/{i}")
            endpoints.create("dripping", WebhookEndpointCreateParams(
                url=url, event_types=[event], name=f"drip {i}"))  # fmt: skip
        endpoints.create("healthy", WebhookEndpointCreateParams(
            url=healthy, event_types=[event], name="healthy"))  # fmt: skip
        queued = sum(hooks.batch_ended(ended(f"batch_drip{i}", "dripping")) for i in range(flood))
        hooks.batch_ended(ended("batch_healthy", "healthy"))  # behind the whole flood
        # What the budget lets the dripping tenant hold, twice (a minute may turn meanwhile),
        # spread over the executions; each message's bookkeeping (100 ms, generous on moto);
        # a second of slack. Without the budget the flood alone would hold it `unbudgeted`.
        in_budget = BUDGET_MS / 1000 / DEADLINE
        bound = 2 * in_budget * DEADLINE / EXECUTIONS + queued * 0.1 / EXECUTIONS + 1.0
        unbudgeted = queued * DEADLINE / EXECUTIONS
        started = time.monotonic()
        with Executions(stack, EXECUTIONS):
            while not http_receiver.requests and time.monotonic() < started + bound + 10:
                time.sleep(0.05)
        arrived = [request.at for request in http_receiver.requests]
        waited = (arrived[0] if arrived else time.monotonic()) - started
        finished = dripper.finished

    drip_attempts = len(service.durations) - len(arrived)
    longest = max(service.durations)
    record("webhooks", f"dripping receiver: longest attempt (deadline {DEADLINE} s)",
           f"{longest:.2f} s", longest < DEADLINE + 0.3)  # fmt: skip
    record("webhooks", "dripping receivers' answers read to the end", finished, finished == 0)
    record("webhooks", "flooding tenant: deliveries queued / attempted / put off a minute",
           f"{queued} / {drip_attempts} / {service.deferred}",
           drip_attempts <= 2 * in_budget)  # fmt: skip
    record("webhooks", f"other tenant's delivery behind the flood (bound {bound:.1f} s, "
           f"{unbudgeted:.0f} s unbudgeted)", f"{waited:.1f} s",
           bool(arrived) and waited < bound)  # fmt: skip
    assert longest < DEADLINE + 0.3, service.durations
    assert finished == 0
    assert arrived, "the healthy tenant's delivery never arrived"
    assert waited < bound < unbudgeted, (waited, bound, drip_attempts, service.deferred)
    assert drip_attempts <= 2 * in_budget
    assert service.deferred >= queued - drip_attempts  # the rest waits, never attempted
