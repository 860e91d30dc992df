"""Webhook deliveries, as OpenAI has them: a tenant registers endpoints (`webhook_endpoints.py`:
`/v1/webhook_endpoints`, the SDKs' `client.webhooks`), and each batch that ends is POSTed to
every endpoint subscribed to its event (`batch.completed`, `batch.failed`, `batch.expired`,
`batch.cancelled`), and a running batch that cannot make its deadline as `batch.at_risk`
(this API's own event type).

Deliveries are signed as the Standard Webhooks spec says (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), so the SDKs'
`client.webhooks.unwrap(...)` verifies them; for a day after a rotation that kept the old
secret, a delivery carries one signature by each (the spec's space-separated list: either
secret verifies). Each delivery is one message on the webhook queue; a failed attempt is sent
again with a growing delay, up to `webhook_max_attempts`.
Endpoints follow the media URLs' address rules: no private, loopback or link-local target,
checked when registered and again before every attempt, on the addresses the name resolves
to then; the attempt connects to one of those very addresses (no second lookup a rebinding
resolver could answer differently), with TLS still checking the name.

A receiver costs the shared webhook function no more than its tenant's share: one attempt has
one deadline for all of it (`DELIVERY_TIMEOUT_SECONDS`, however slowly the receiver answers),
each tenant's attempts reserve that time from a budget per minute (past it, they wait for the
next minute instead of taking other tenants' turns), and an endpoint that fails
`DISABLE_AFTER_FAILURES` attempts in a row is disabled (`status: "disabled"`, skipped, until
an update enables it again).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from batch_core.ids import new_event_id
from batch_core.media_urls import is_internal_host
from batch_core.records import BatchRecord, WebhookRecord
from batch_core.repository import Page
from batch_core.settings import Settings

logger = Logger(child=True)

BatchEventType = Literal[
    "batch.completed", "batch.failed", "batch.expired", "batch.cancelled", "batch.at_risk"
]
EVENT_OF_STATUS: dict[str, BatchEventType] = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
MAX_ENDPOINTS_PER_TENANT = 16
"""A tenant's fan-out is bounded: one batch ending costs at most this many deliveries."""
DELIVERY_TIMEOUT_SECONDS = 10
"""All of one attempt: resolving, connecting, TLS, sending, and reading the answer's status
line, at whatever pace the receiver keeps (a timeout per read let a receiver that drips a
byte at a time hold an attempt as long as it liked). The function's timeout leaves room for
a batch of attempts that all take it (template.yaml)."""
MAX_ANSWER_HEAD_BYTES = 16 * 1024
"""Informational (1xx) answers before the final status line, at most this much."""
DISABLE_AFTER_FAILURES = 20
"""Failed attempts in a row (over all events) after which an endpoint is disabled: about two
and a half events given up, hours of failures. A 2xx resets the count."""
TENANT_ATTEMPT_MS_PER_MINUTE = 120_000
"""Each attempt reserves its whole deadline from its tenant's budget for the minute and gives
back what it did not use: a tenant's receivers can hold about two of the function's slots
at a time, whatever they do; a healthy receiver answers quickly and costs almost nothing."""
BUDGET_WINDOW_SECONDS = 60
MAX_DELAY_SECONDS = 900
"""SQS delays a message at most 15 minutes: later attempts wait that long each."""


class WebhookEvent(BaseModel):
    """The body of a delivery, OpenAI's `batch.*` webhook event. The SDKs have no class for
    `batch.at_risk`: `client.webhooks.unwrap` verifies it and returns it typed as another
    event's class (the first of its union), with `type` still `batch.at_risk` and `data.id`
    the batch; receivers dispatch on `event.type` (README, Webhooks)."""

    id: str
    """`evt_...`, the same on every attempt (receivers deduplicate on it)."""
    object: Literal["event"] = "event"
    created_at: int
    type: BatchEventType
    data: dict[str, str]
    """`{"id": "batch_..."}`"""


class WebhookDelivery(BaseModel):
    """One message on the webhook queue: an event for one endpoint, and the attempt."""

    endpoint_id: str
    event: WebhookEvent
    attempt: int = 1


class Poster(Protocol):
    """Sends one delivery; returns the HTTP status (raises OSError when nothing answered, the
    target was refused, or the deadline passed)."""

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int: ...


class DeliveryQueue(Protocol):
    def send(self, delivery: WebhookDelivery, delay_seconds: int) -> None: ...


class WebhookStore(Protocol):
    """The webhook items deliveries use (`table_tenants`): endpoints, their failures,
    tenants' budgets."""

    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None: ...
    def list_webhooks(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> Page[WebhookRecord]: ...
    def count_webhook_failure(self, endpoint_id: str, *, disable_after: int, at: int) -> bool: ...
    def clear_webhook_failures(self, endpoint_id: str) -> None: ...
    def reserve_webhook_time(
        self, tenant: str, window: int, milliseconds: int, *, budget: int, expires_at: int
    ) -> bool: ...
    def release_webhook_time(self, tenant: str, window: int, milliseconds: int) -> None: ...


class RefusedTargetError(OSError):
    """The attempt did not go out: the target is not allowed, or did not resolve."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value of Standard Webhooks."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signatures(record: WebhookRecord, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` of a delivery to `record`: by its secret, and by the secret a
    rotation replaced while that one is kept (`previous_secret_until`, compared with the
    delivery's own timestamp), so a receiver still holding the old one verifies too."""
    values = [sign(record.secret, message_id, timestamp, body)]
    kept_until = record.previous_secret_until or 0
    if record.previous_secret and timestamp < kept_until:
        values.append(sign(record.previous_secret, message_id, timestamp, body))
    return " ".join(values)


def seconds_to_next_window(now: float) -> int:
    """How long until the next minute of tenants' delivery budgets begins (at least 1)."""
    return BUDGET_WINDOW_SECONDS - int(now % BUDGET_WINDOW_SECONDS) + 1


def retry_delay(attempt: int, base_seconds: int) -> int:
    """The wait after failed attempt `attempt` (1, 2...): doubling, at most 15 minutes."""
    return int(min(MAX_DELAY_SECONDS, base_seconds * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class TargetRules:
    """Where deliveries may go. `allow_internal` only for local development (a receiver on
    this machine); deployed, private, loopback and link-local targets are never reached."""

    allow_internal: bool = False

    def refusal(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return "is not a valid URL"
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            return "must be an https:// URL with a host"
        if self.allow_internal:
            return None
        if parts.scheme != "https":
            return "must be an https:// URL"
        if is_internal_host(parts.hostname):
            return "must not point at a private, loopback or link-local address"
        return None

    def checked_addresses(self, infos: Sequence[tuple[Any, ...]]) -> list[str]:
        """The addresses of a lookup (`getaddrinfo`'s answers), each checked as registration
        checks a literal (a public name may point at an internal address, or be changed to);
        the attempt connects to one of these, never to a second lookup's answer."""
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise RefusedTargetError("does not resolve")
        for address in addresses if not self.allow_internal else ():
            if is_internal_host(address.split("%", 1)[0]):  # the address, not its zone
                raise RefusedTargetError(f"resolves to a non-public address ({address})")
        return addresses


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?\r\n")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_BREAK = re.compile(r"[\r\n]")
T = TypeVar("T")


def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    return list(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _left(deadline: float) -> float:
    """Seconds to the deadline; TimeoutError once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return remaining


def _before(deadline: float, call: Callable[[], T]) -> T:
    """`call()`, or TimeoutError at the deadline: a name lookup takes no timeout of its own
    (the receiver's owner runs its name servers), so it runs in a thread left behind."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the caller
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True, name="webhook-resolve")
    thread.start()
    thread.join(_left(deadline))
    if failure:
        raise failure[0]
    if not outcome:
        raise TimeoutError("resolving the host took longer than the attempt's deadline")
    return outcome[0]


@dataclass(frozen=True)
class HttpPoster:
    """One POST within one deadline, to an address checked by `rules`, no redirects followed
    (a 3xx is an answer like any other non-2xx). HTTP/1.1 by hand rather than urllib: urllib
    resolves the name again and has only a per-read timeout; here each read waits at most
    for what is left of the deadline."""

    rules: TargetRules
    deadline_seconds: float = DELIVERY_TIMEOUT_SECONDS
    resolve: Callable[[str, int], Sequence[tuple[Any, ...]]] = _resolve
    connect: Callable[[tuple[str, int], float], socket.socket] = _connect
    tls: ssl.SSLContext | None = None

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        deadline = time.monotonic() + self.deadline_seconds
        refusal = self.rules.refusal(url)
        if refusal:
            raise RefusedTargetError(f"the URL {refusal}")
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as error:  # a port out of range
            raise RefusedTargetError(str(error)) from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close"]
        if _UNSAFE.search(target + parts.netloc) or any(_BREAK.search(line) for line in lines):
            raise RefusedTargetError("the URL or a header holds a character HTTP does not allow")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        addresses = self.rules.checked_addresses(
            _before(deadline, lambda: self.resolve(host, port))
        )
        connection = self._open(addresses, port, deadline)
        try:
            if parts.scheme == "https":
                connection.settimeout(_left(deadline))  # the handshake as a whole, in CPython
                tls = self.tls or _default_tls()
                connection = tls.wrap_socket(connection, server_hostname=host)
            return self._exchange(connection, request, deadline)
        finally:
            connection.close()

    def _open(self, addresses: list[str], port: int, deadline: float) -> socket.socket:
        """A connection to the first of the checked addresses that takes one."""
        failure: OSError = RefusedTargetError("no address to connect to")
        for address in addresses:
            try:
                return self.connect((address, port), _left(deadline))
            except TimeoutError:
                raise
            except OSError as error:
                failure = error
        raise failure

    @staticmethod
    def _exchange(connection: socket.socket, request: bytes, deadline: float) -> int:
        """Send the request and read up to the final status line, each step within what is
        left of the deadline; the rest of the answer is never read."""
        view = memoryview(request)
        while view:
            connection.settimeout(_left(deadline))
            view = view[connection.send(view) :]
        answer = b""
        while True:
            if match := _STATUS_LINE.match(answer):
                status = int(match.group(1))
                if status >= 200:
                    return status
                end = answer.find(b"\r\n\r\n")  # 1xx: informational, its head skipped
                if end >= 0:
                    answer = answer[end + 4 :]
                    continue
            elif b"\r\n" in answer:  # a first line that is no status line
                raise OSError("the receiver did not answer HTTP/1.x")
            if len(answer) > MAX_ANSWER_HEAD_BYTES:
                raise OSError("the receiver's answer has no end of its head")
            connection.settimeout(_left(deadline))
            chunk = connection.recv(4096)
            if not chunk:
                raise OSError("the receiver closed the connection without a status")
            answer += chunk


class WebhookService:
    """The deliveries of tenants' batch events (and of a test, `webhook_endpoints.py`)."""

    def __init__(
        self,
        settings: Settings,
        repository: WebhookStore,
        queue: DeliveryQueue | None,
        poster: Poster | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.queue = queue
        self.rules = TargetRules(settings.webhook_allow_internal_targets)
        self.attempt_seconds = DELIVERY_TIMEOUT_SECONDS
        self.poster: Poster = poster or HttpPoster(self.rules, self.attempt_seconds)
        self._clock = clock

    # -- deliveries -------------------------------------------------------------------

    def batch_ended(self, record: BatchRecord) -> int:
        """Queue the ended batch's event for every endpoint of its tenant subscribed to it;
        returns how many were queued."""
        event_type = EVENT_OF_STATUS.get(record.status)
        return 0 if event_type is None else self._announce(record, event_type)

    def batch_at_risk(self, record: BatchRecord) -> int:
        """Queue `batch.at_risk` for the batch's subscribed endpoints (`Ending.flag_at_risk`
        marks a batch once, so it is sent once)."""
        return self._announce(record, "batch.at_risk")

    def _announce(self, record: BatchRecord, event_type: BatchEventType) -> int:
        if self.queue is None:
            return 0
        records = self.repository.list_webhooks(record.tenant, limit=MAX_ENDPOINTS_PER_TENANT).items
        event = WebhookEvent(
            # One id per batch and event: a status announced twice is one event to receivers.
            id=new_event_id(f"{record.id}/{event_type}"),
            created_at=int(self._clock()),
            type=event_type,
            data={"id": record.id},
        )
        queued = 0
        for endpoint in records:
            subscribed = event_type in endpoint.endpoint.event_types
            if subscribed and endpoint.endpoint.status != "disabled":
                delivery = WebhookDelivery(endpoint_id=endpoint.endpoint.id, event=event)
                self.queue.send(delivery, delay_seconds=0)
                queued += 1
        return queued

    def deliver(self, delivery: WebhookDelivery) -> bool:
        """One attempt, if its tenant's budget has room (else the same attempt waits for the
        next minute). On failure the next attempt is queued with its delay, until the last or
        until the endpoint is disabled; returns whether the receiver took it (a 2xx)."""
        record = self.repository.get_webhook(delivery.endpoint_id)
        if record is None:  # deleted meanwhile: nothing to deliver to
            return False
        if record.endpoint.status == "disabled":
            logger.info(
                "webhook endpoint disabled; delivery dropped",
                extra={"endpoint_id": record.endpoint.id, "event_id": delivery.event.id},
            )
            return False
        outcome = self.attempt(record, delivery.event)
        if outcome is None:
            return self._wait_for_budget(delivery, record, self._clock())
        status, refusal = outcome
        if status is not None and 200 <= status < 300:
            if record.consecutive_failures:
                self._best_effort(self.repository.clear_webhook_failures, record.endpoint.id)
            return True
        return self._failed(delivery, record, refusal or f"answered {status}")

    def attempt(self, record: WebhookRecord, event: WebhookEvent) -> tuple[int | None, str] | None:
        """One attempt to send `event` to `record` now, its whole deadline reserved from the
        tenant's budget for this minute and what it did not use given back: (the receiver's
        status, "") or (None, why nothing answered); None, and nothing sent, when the
        tenant's minute has no room for it."""
        now = self._clock()
        window = int(now // BUDGET_WINDOW_SECONDS)
        reserved = int(self.attempt_seconds * 1000)
        if not self.repository.reserve_webhook_time(
            record.tenant,
            window,
            reserved,
            budget=TENANT_ATTEMPT_MS_PER_MINUTE,
            expires_at=(window + 2) * BUDGET_WINDOW_SECONDS,
        ):
            return None
        outcome = self._attempt(record, event)
        self._release(record, window, reserved, spent=self._clock() - now)
        return outcome

    def _attempt(self, record: WebhookRecord, event: WebhookEvent) -> tuple[int | None, str]:
        """(the receiver's status, "") or (None, why nothing answered)."""
        body = event.model_dump_json().encode()
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "openbatch-webhooks",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures(record, event.id, timestamp, body),
        }
        try:
            return self.poster(record.endpoint.url, body, headers), ""
        except RefusedTargetError as error:
            return None, f"refused ({error})"
        except OSError as error:  # TimeoutError included: the deadline passed
            return None, f"unreachable ({error})"
        except ValueError as error:  # e.g. UnicodeError: a host IDNA cannot encode
            return None, f"not a usable host ({error})"

    def _wait_for_budget(
        self, delivery: WebhookDelivery, record: WebhookRecord, now: float
    ) -> bool:
        """The tenant's minute is spent: the same attempt again at the next minute (waiting
        is not failing: no attempt counted, nothing against the endpoint)."""
        if self.queue is None:
            return False
        delay = seconds_to_next_window(now)
        logger.info(
            "webhook tenant over its delivery budget; deferred",
            extra={"endpoint_id": record.endpoint.id, "tenant": record.tenant, "delay": delay},
        )
        self.queue.send(delivery, delay)
        return False

    def _release(self, record: WebhookRecord, window: int, reserved: int, spent: float) -> None:
        unused = reserved - min(reserved, max(0, int(spent * 1000)))
        if unused:
            self._best_effort(self.repository.release_webhook_time, record.tenant, window, unused)

    def _failed(self, delivery: WebhookDelivery, record: WebhookRecord, reason: str) -> bool:
        facts = {"endpoint_id": record.endpoint.id, "event_id": delivery.event.id}
        disabled = self._best_effort(
            self.repository.count_webhook_failure,
            record.endpoint.id,
            disable_after=DISABLE_AFTER_FAILURES,
            at=int(self._clock()),
        )
        if disabled:
            logger.warning(
                "webhook endpoint disabled after failing again and again",
                extra={**facts, "failures": DISABLE_AFTER_FAILURES, "reason": reason},
            )
            return False
        if delivery.attempt >= self.settings.webhook_max_attempts or self.queue is None:
            logger.error(
                "webhook delivery given up",
                extra={**facts, "attempts": delivery.attempt, "reason": reason},
            )
            return False
        delay = retry_delay(delivery.attempt, self.settings.webhook_retry_base_seconds)
        logger.warning(
            "webhook delivery failed; retrying",
            extra={**facts, "attempt": delivery.attempt, "reason": reason, "delay_seconds": delay},
        )
        self.queue.send(delivery.model_copy(update={"attempt": delivery.attempt + 1}), delay)
        return False

    @staticmethod
    def _best_effort(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """A bookkeeping write after the attempt: its failure is logged, and never makes the
        message fail (it would be delivered again)."""
        try:
            return call(*args, **kwargs)
        except Exception:
            logger.exception("webhook bookkeeping failed", extra={"call": call.__name__})
            return None
