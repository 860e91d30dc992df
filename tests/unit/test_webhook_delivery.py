"""One webhook delivery attempt against hostile receivers and resolvers (no AWS): a receiver
that drips its answer is cut at the attempt's deadline, the connection goes to the address
that was checked (no DNS rebinding), TLS still checks the name, failing endpoints are
disabled, and a tenant's attempts are held to its time budget."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from batch_core import webhooks
from batch_core.models import WebhookEndpoint
from batch_core.records import WebhookRecord
from batch_core.settings import Settings
from batch_core.webhook_endpoints import WebhookEndpointCreateParams
from batch_core.webhooks import (
    WebhookDelivery,
    WebhookEvent,
    WebhookService,
    new_secret,
)
from tests.receivers import HttpReceiver, Received

PUBLIC = "93.184.216.34"  # a public address: the rule lets it through
EVENT = WebhookEvent(id="evt_1", created_at=1, type="batch.completed", data={"id": "batch_1"})


@dataclass
class Store:
    """The webhook items a WebhookService reads and writes, in memory."""

    records: dict[str, WebhookRecord] = field(default_factory=dict)
    spent: dict[tuple[str, int], int] = field(default_factory=dict)

    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None:
        return self.records.get(endpoint_id)

    def reserve_webhook_time(
        self, tenant: str, window: int, milliseconds: int, *, budget: int, expires_at: int
    ) -> bool:
        spent = self.spent.get((tenant, window), 0)
        if spent + milliseconds > budget:
            return False
        self.spent[(tenant, window)] = spent + milliseconds
        return True

    def release_webhook_time(self, tenant: str, window: int, milliseconds: int) -> None:
        self.spent[(tenant, window)] -= milliseconds

    def count_webhook_failure(self, endpoint_id: str, *, disable_after: int, at: int) -> bool:
        record = self.records[endpoint_id]
        failures = record.consecutive_failures + 1
        disable = failures >= disable_after and record.endpoint.status != "disabled"
        endpoint = record.endpoint
        if disable:
            endpoint = endpoint.model_copy(update={"status": "disabled", "updated_at": at})
        self.records[endpoint_id] = record.model_copy(
            update={"consecutive_failures": failures, "endpoint": endpoint}
        )
        return disable

    def clear_webhook_failures(self, endpoint_id: str) -> None:
        record = self.records[endpoint_id]
        self.records[endpoint_id] = record.model_copy(update={"consecutive_failures": 0})


class Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[WebhookDelivery, int]] = []

    def send(self, delivery: WebhookDelivery, delay_seconds: int) -> None:
        self.sent.append((delivery, delay_seconds))


def settings(*, allow_internal: bool) -> Settings:
    return Settings(
        bucket_name="b",
        table_name="t",
        shard_queue_url="q",
        webhook_max_attempts=8,
        webhook_retry_base_seconds=30,
        webhook_allow_internal_targets=allow_internal,
    )


def make_service(
    store: Store, queue: Queue, *, allow_internal: bool, **options: Any
) -> WebhookService:
    """A WebhookService over the in-memory store (it has the webhook items deliveries use)."""
    return WebhookService(settings(allow_internal=allow_internal), store, queue, **options)  # type: ignore[arg-type]


def endpoint_record(url: str, endpoint_id: str = "we_1", tenant: str = "t") -> WebhookRecord:
    endpoint = WebhookEndpoint(
        id=endpoint_id, created_at=1, event_types=["batch.completed"], name="n", url=url
    )
    return WebhookRecord(endpoint=endpoint, tenant=tenant, secret=new_secret())


def test_a_receiver_that_drips_its_answer_is_cut_at_the_attempts_deadline(
    monkeypatch: pytest.MonkeyPatch, http_receiver: HttpReceiver
) -> None:
    # Finding 1: the timeout was urllib's per read, so 0.2 s a byte held the attempt for as
    # long as the receiver liked. Now the whole attempt has one deadline.
    monkeypatch.setattr(webhooks, "DELIVERY_TIMEOUT_SECONDS", 1)
    http_receiver.drip = 0.2  # the whole answer takes about 12 s
    store, queue = Store(), Queue()
    store.records["we_1"] = endpoint_record(http_receiver.url("/in"))
    service = make_service(store, queue, allow_internal=True)
    started = time.monotonic()
    delivered = service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    elapsed = time.monotonic() - started
    assert not delivered
    assert elapsed < 2.0, elapsed  # the deadline (1 s), not the drip (about 12 s)
    assert http_receiver.connections == 1 and http_receiver.finished == 0
    ((again, delay),) = queue.sent  # a failed attempt like any other: retried later
    assert (again.attempt, delay) == (2, 30)


def test_the_connection_goes_to_the_checked_address_not_a_second_answer(
    monkeypatch: pytest.MonkeyPatch, http_receiver: HttpReceiver
) -> None:
    # Finding 10: the name was resolved to check it, and again by urllib to connect; a
    # resolver that answers public, then internal, had the POST land inside.
    port = http_receiver.port
    answers = iter([PUBLIC, "127.0.0.1", "127.0.0.1", "127.0.0.1"])

    def rebinding(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        address = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    connected: list[tuple[str, int]] = []
    real_connect = socket.create_connection

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        if address[0] == PUBLIC:  # no network here: the public host refuses at once
            raise ConnectionRefusedError(f"{PUBLIC} refused")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(socket, "create_connection", connect)
    store, queue = Store(), Queue()
    store.records["we_1"] = endpoint_record(f"https://hooks.example.com:{port}/in")
    service = make_service(store, queue, allow_internal=False)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    assert http_receiver.connections == 0  # nothing reached the internal address
    assert connected == [(PUBLIC, port)]
    assert len(queue.sent) == 1


def test_every_resolved_address_is_checked_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def mixed(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 443)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443)),
        ]

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        raise AssertionError(f"connected to {address}")

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    monkeypatch.setattr(socket, "create_connection", connect)
    store, queue = Store(), Queue()
    store.records["we_1"] = endpoint_record("https://hooks.example.com/in")
    service = make_service(store, queue, allow_internal=False)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    assert len(queue.sent) == 1


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def tls_receiver(cert: Path, key: Path) -> Iterator[tuple[int, list[str], list[Received]]]:
    """An HttpReceiver over TLS answering 204; yields its port, the SNI names it was asked
    for and the requests it read."""
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(str(name))

    context.sni_callback = sni
    with HttpReceiver(204, tls=context) as receiver:
        yield receiver.port, names, receiver.requests


def test_tls_checks_the_certificate_and_sni_of_the_name_at_the_pinned_address(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path, "hooks.example.com")
    trust = ssl.create_default_context(cafile=str(cert))

    def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    with tls_receiver(cert, key) as (port, names, requests):
        poster = webhooks.HttpPoster(
            webhooks.TargetRules(allow_internal=True), resolve=resolve, tls=trust
        )
        status = poster(f"https://hooks.example.com:{port}/in?x=1", b"{}", {"a": "b"})
    assert status == 204
    assert names == ["hooks.example.com"]
    assert requests[0].line == "POST /in?x=1 HTTP/1.1"
    assert requests[0].headers["host"] == f"hooks.example.com:{port}"

    other, other_key = _certificate(tmp_path, "other.example.com")
    with (
        tls_receiver(other, other_key) as (port, names, requests),
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        poster(f"https://hooks.example.com:{port}/in", b"{}", {})
    assert requests == []


def test_a_slow_resolver_counts_against_the_deadline() -> None:
    release = threading.Event()

    def stuck(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        release.wait(10)
        return []

    poster = webhooks.HttpPoster(webhooks.TargetRules(), deadline_seconds=0.5, resolve=stuck)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        poster("https://hooks.example.com/in", b"{}", {})
    release.set()
    assert time.monotonic() - started < 1.5


def test_an_endpoint_failing_again_and_again_is_disabled_and_skipped() -> None:
    calls: list[str] = []

    def refusing(url: str, body: bytes, headers: dict[str, str]) -> int:
        calls.append(url)
        return 503

    store, queue = Store(), Queue()
    store.records["we_1"] = endpoint_record("http://x/h")
    service = make_service(store, queue, allow_internal=True, poster=refusing)
    for _ in range(webhooks.DISABLE_AFTER_FAILURES):
        service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    assert store.records["we_1"].endpoint.status == "disabled"
    assert len(calls) == webhooks.DISABLE_AFTER_FAILURES
    queued = len(queue.sent)
    assert not service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT, attempt=2))
    assert len(calls) == webhooks.DISABLE_AFTER_FAILURES and len(queue.sent) == queued


def test_a_success_clears_the_failures_so_an_occasional_outage_never_disables() -> None:
    answers = iter([503] * (webhooks.DISABLE_AFTER_FAILURES - 1) + [200] + [503] * 3)
    store, queue = Store(), Queue()
    store.records["we_1"] = endpoint_record("http://x/h")
    service = make_service(store, queue, allow_internal=True, poster=lambda u, b, h: next(answers))
    for _ in range(webhooks.DISABLE_AFTER_FAILURES + 3):
        service.deliver(WebhookDelivery(endpoint_id="we_1", event=EVENT))
    record = store.records["we_1"]
    assert (record.endpoint.status, record.consecutive_failures) == ("enabled", 3)


def test_a_tenant_past_its_time_budget_waits_and_another_tenant_does_not() -> None:
    posted: list[str] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        posted.append(url)
        return 500

    now = 1_000_000 * 60 + 15.0  # 15 s into a minute
    store, queue = Store(), Queue()
    service = make_service(store, queue, allow_internal=True, poster=post, clock=lambda: now)
    # The greedy tenant's minute is used up: its attempts held their whole deadline, as
    # attempts on dripping receivers do.
    store.spent[("greedy", 1_000_000)] = webhooks.TENANT_ATTEMPT_MS_PER_MINUTE
    store.records["we_g"] = endpoint_record("http://greedy/h", "we_g", "greedy")
    store.records["we_o"] = endpoint_record("http://other/h", "we_o", "other")
    assert not service.deliver(WebhookDelivery(endpoint_id="we_g", event=EVENT, attempt=3))
    assert posted == []  # not attempted: put back for the next minute
    ((deferred, delay),) = queue.sent
    assert (deferred.attempt, delay) == (3, 46)  # the same attempt, after this minute
    assert store.records["we_g"].consecutive_failures == 0  # waiting is not failing
    service.deliver(WebhookDelivery(endpoint_id="we_o", event=EVENT))
    assert posted == ["http://other/h"]  # the other tenant is not held
    assert store.spent[("other", 1_000_000)] == 0  # a quick attempt gives its time back


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "nul\x00", "del\x7f", "c1\x85", "\u2028"])
def test_webhook_names_refuse_control_characters(name: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        WebhookEndpointCreateParams(
            url="https://hooks.example.com/in", event_types=["batch.completed"], name=name
        )
    assert excinfo.value.errors()[0]["loc"] == ("name",)


def test_a_plain_name_is_still_fine() -> None:
    params = WebhookEndpointCreateParams(
        url="https://hooks.example.com/in",
        event_types=["batch.completed"],
        name="Ops: 24h ✓ (équipe)",
    )
    assert params.name == "Ops: 24h ✓ (équipe)"


def test_the_endpoint_object_is_the_sdks_plus_its_status_extension() -> None:
    from openai.types.webhooks import WebhookEndpoint as SdkWebhookEndpoint

    from batch_core.models import WEBHOOK_ENDPOINT_EXTENSIONS

    ours = set(WebhookEndpoint.model_fields)
    assert ours - WEBHOOK_ENDPOINT_EXTENSIONS == set(SdkWebhookEndpoint.model_fields)
    shown = WebhookEndpoint(id="we_1", created_at=1, event_types=[], name="n", url="https://x")
    assert SdkWebhookEndpoint.model_validate(shown.model_dump()).model_extra == {
        "status": "enabled"
    }
