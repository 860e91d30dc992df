"""Webhooks end to end: endpoints registered through the official SDK (`client.webhooks`),
a batch run on the local stack, and signed deliveries to a receiver on this machine that
checks each one with the SDK's own Standard Webhooks verification (`webhooks.unwrap`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch
from openai.types.webhooks import (
    BatchCompletedWebhookEvent,
    DeletedWebhookEndpoint,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

from batch_core import wiring
from batch_core.webhooks import TargetRules
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api
from tests.receivers import HttpReceiver

KEY = "sk-test-hooks-0123456789"
OTHER_KEY = "sk-test-hooks-other-0123456789"


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "hooks", OTHER_KEY: "hooks-other"}) as running:
        yield running


@pytest.fixture
def client(local_api: tuple[LocalStack, ApiServer]) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)


def register(client: openai.OpenAI, url: str, events: list[Any], name: str) -> Any:
    raw = client.webhooks.with_raw_response.create(url=url, event_types=events, name=name)
    return WebhookEndpointWithSecret.model_validate(raw.http_response.json())


def run_batch(client: openai.OpenAI) -> Batch:
    data = b"".join(json.dumps(chat_request(f"w{i}")).encode() + b"\n" for i in range(3))
    file_id = client.files.create(file=("hooks.jsonl", data), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return batch


def test_a_completed_batch_is_delivered_signed_and_a_refused_delivery_retried(
    client: openai.OpenAI, http_receiver: HttpReceiver
) -> None:
    base = http_receiver.url()
    http_receiver.answer("/flaky", 500, 200)  # refuses its first delivery
    ok = register(client, f"{base}/ok", ["batch.completed", "batch.failed"], "ok")
    flaky = register(client, f"{base}/flaky", ["batch.completed"], "flaky")
    register(client, f"{base}/cancelled-only", ["batch.cancelled"], "cancelled only")
    assert ok.signing_secret.startswith("whsec_") and ok.signing_secret != flaky.signing_secret

    batch = run_batch(client)
    assert batch.status == "completed"

    (delivered,) = http_receiver.wait_for("/ok", 1)
    event = client.webhooks.unwrap(delivered.body, delivered.headers, secret=ok.signing_secret)
    assert isinstance(event, BatchCompletedWebhookEvent)
    assert (event.type, event.data.id, event.object) == ("batch.completed", batch.id, "event")
    with pytest.raises(openai.InvalidWebhookSignatureError):  # another endpoint's secret
        client.webhooks.unwrap(delivered.body, delivered.headers, secret=flaky.signing_secret)

    refused, retried = http_receiver.wait_for("/flaky", 2)  # a 500 first, then delivered again
    assert refused.headers["webhook-id"] == retried.headers["webhook-id"] == event.id
    assert refused.body == retried.body
    retried_event = client.webhooks.unwrap(
        retried.body, retried.headers, secret=flaky.signing_secret
    )
    assert retried_event.id == event.id
    time.sleep(2.5)  # a delivered event is not sent again, and no other event was subscribed
    assert len(http_receiver.to("/ok")) == 1 and len(http_receiver.to("/flaky")) == 2
    assert http_receiver.to("/cancelled-only") == []


def test_endpoints_list_retrieve_delete_without_their_secret(
    client: openai.OpenAI, local_api: tuple[LocalStack, ApiServer]
) -> None:
    created = register(client, "https://hooks.example.com/in", ["batch.failed"], "listed")
    listed = client.webhooks.with_raw_response.list()
    page = listed.http_response.json()
    assert all("signing_secret" not in item for item in page["data"])
    found = [WebhookEndpoint.model_validate(item) for item in page["data"]]
    assert created.id in [e.id for e in found]
    mine = next(e for e in found if e.id == created.id)
    assert mine.signing_secret_hint and created.signing_secret.endswith(
        mine.signing_secret_hint[-4:]
    )
    assert client.webhooks.retrieve(created.id).url == "https://hooks.example.com/in"

    other = openai.OpenAI(base_url=local_api[1].base_url, api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.webhooks.retrieve(created.id)
    assert created.id not in [e.id for e in other.webhooks.list()]
    with pytest.raises(openai.NotFoundError):
        other.webhooks.delete(created.id)

    raw = client.webhooks.with_raw_response.delete(created.id)
    assert DeletedWebhookEndpoint.model_validate(raw.http_response.json()).deleted
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(created.id)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://2130706433/hook",
        "https://metadata.google.internal/hook",
        "http://hooks.example.com/plain-http",
        "ftp://hooks.example.com/x",
    ],
)
def test_internal_and_non_https_targets_are_refused_when_deployed(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(
        wiring.default_stages().webhooks, "rules", TargetRules(allow_internal=False)
    )
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.create(url=url, event_types=["batch.completed"], name="x")
    assert excinfo.value.body["param"] == "url"  # type: ignore[index]


def test_event_types_this_api_never_sends_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.webhooks.create(
            url="https://hooks.example.com/x", event_types=["video.completed"], name="x"
        )
    assert str(excinfo.value.body["param"]).startswith("event_types")  # type: ignore[index]


def test_batchctl_adds_lists_and_removes_an_endpoint(
    local_api: tuple[LocalStack, ApiServer], capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    connection = ["--base-url", local_api[1].base_url, "--api-key", KEY]
    url = "https://hooks.example.com/cli"
    assert main(["webhooks", "add", url, "--events", "batch.failed", *connection]) == 0
    added = capsys.readouterr().out
    endpoint_id = added.split()[0]
    assert endpoint_id.startswith("we_") and "signing secret (shown once): whsec_" in added
    assert main(["webhooks", "list", *connection]) == 0
    listed = capsys.readouterr().out
    assert f"{endpoint_id}  {url}  batch.failed" in listed and "whsec_..." in listed
    assert "signing secret" not in listed
    assert main(["webhooks", "remove", endpoint_id, *connection]) == 0
    assert capsys.readouterr().out == f"deleted {endpoint_id}\n"
    assert main(["webhooks", "list", *connection]) == 0
    assert endpoint_id not in capsys.readouterr().out
    assert main(["webhooks", "add", "ftp://x", *connection]) == 2
    assert "param: url" in capsys.readouterr().err


def test_a_batch_that_cannot_make_its_deadline_is_announced_at_risk_once(
    client: openai.OpenAI,
    local_api: tuple[LocalStack, ApiServer],
    http_receiver: HttpReceiver,
) -> None:
    from tests.conftest import store_batch

    risk = register(client, http_receiver.url("/at-risk"), ["batch.at_risk"], "deadlines")
    stack = local_api[0]
    fleet = stack.stages.settings.fleet_tokens_per_second
    # Ten minutes left and an hour of work for the whole fleet (this key's tenant).
    store_batch(stack, "batch_late_hook", "in_progress", tenant="hooks", request_total=10,
                expires_at=int(time.time()) + 600, estimated_tokens=3600 * fleet)  # fmt: skip
    assert stack.stages.turns.flag_at_risk() == ["batch_late_hook"]
    assert stack.stages.turns.flag_at_risk() == []  # once
    (delivered,) = http_receiver.wait_for("/at-risk", 1)
    event = client.webhooks.unwrap(
        delivered.body, delivered.headers, secret=risk.signing_secret
    )  # signed
    document = json.loads(delivered.body)
    assert (document["type"], document["data"]) == ("batch.at_risk", {"id": "batch_late_hook"})
    assert event.id == document["id"]
    time.sleep(1.5)
    assert len(http_receiver.to("/at-risk")) == 1
    assert client.batches.retrieve("batch_late_hook").model_extra["at_risk_at"]  # type: ignore[index]
