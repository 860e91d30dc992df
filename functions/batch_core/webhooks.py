"""Webhooks, as OpenAI has them: a tenant registers endpoints (`/v1/webhook_endpoints`, the
SDKs' `client.webhooks`), and each batch that ends is POSTed to every endpoint subscribed
to its event (`batch.completed`, `batch.failed`, `batch.expired`, `batch.cancelled`), and a
running batch that cannot make its deadline as `batch.at_risk` (this API's own event type).

Deliveries are signed as the Standard Webhooks spec says (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), so the SDKs'
`client.webhooks.unwrap(...)` verifies them. Each delivery is one message on the webhook
queue; a failed attempt is sent again with a growing delay, up to `webhook_max_attempts`.
Endpoints follow the media URLs' address rules: no private, loopback or link-local target,
checked when registered and again, on the resolved addresses, before every attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from batch_core.api_models import WebhookEndpointList
from batch_core.errors import InvalidRequestError, NotFoundError
from batch_core.ids import new_event_id, new_webhook_endpoint_id
from batch_core.media_urls import is_internal_host
from batch_core.models import WebhookEndpoint
from batch_core.records import BatchRecord, WebhookRecord
from batch_core.repository import BatchRepository
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
MAX_DELAY_SECONDS = 900
"""SQS delays a message at most 15 minutes: later attempts wait that long each."""


class WebhookEndpointCreateParams(BaseModel):
    """The body of POST /v1/webhook_endpoints (the SDKs' `webhooks.create`)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[
        str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#@]+([/?#]\S*)?$")
    ]
    """The HTTPS URL that receives deliveries (a deployment refuses http:// and internal
    addresses: 400 with `param` url)."""
    event_types: list[BatchEventType] = Field(min_length=1, json_schema_extra={"uniqueItems": True})
    """The events delivered to it: OpenAI's four batch events, and `batch.at_risk` (a running
    batch that cannot make its deadline, once, before it expires)."""
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """A human-readable name."""

    @field_validator("event_types")
    @classmethod
    def _each_once(cls, events: list[BatchEventType]) -> list[BatchEventType]:
        if len(set(events)) != len(events):
            raise ValueError("lists an event type twice")
        return events


class WebhookEndpointWithSecret(WebhookEndpoint):
    """The endpoint as created: the only time its signing secret is shown."""

    signing_secret: str
    """`whsec_<base64 key>`: verify deliveries with it."""


class DeletedWebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEvent(BaseModel):
    """The body of a delivery, OpenAI's `batch.*` webhook event."""

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
    """Sends one delivery; returns the HTTP status (raises OSError when nothing answered)."""

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int: ...


class DeliveryQueue(Protocol):
    def send(self, delivery: WebhookDelivery, delay_seconds: int) -> None: ...


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value of Standard Webhooks."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


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

    def resolved_refusal(self, url: str) -> str | None:
        """The addresses the host resolves to now, checked too (a public name may point at
        an internal address, or be changed to)."""
        if self.allow_internal:
            return None
        host = urlsplit(url).hostname or ""
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as error:
            return f"does not resolve ({error})"
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]  # no IPv6 zone: the address itself
            if is_internal_host(address):  # the rule registration applies to a literal
                return f"resolves to a non-public address ({address})"
        return None


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST, no redirects followed (a redirect could lead anywhere)."""

    class _NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=DELIVERY_TIMEOUT_SECONDS) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class WebhookService:
    """A tenant's endpoints, and the deliveries of its batch events."""

    def __init__(
        self,
        settings: Settings,
        repository: BatchRepository,
        queue: DeliveryQueue | None,
        poster: Poster = post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.queue = queue
        self.poster = poster
        self.rules = TargetRules(settings.webhook_allow_internal_targets)
        self._clock = clock

    # -- endpoints --------------------------------------------------------------------

    def create(self, tenant: str, params: WebhookEndpointCreateParams) -> WebhookEndpointWithSecret:
        refusal = self.rules.refusal(params.url)
        if refusal:
            raise InvalidRequestError(
                f"The webhook URL {refusal}.", param="url", code="invalid_url"
            )
        records = self.repository.list_webhooks(tenant, limit=MAX_ENDPOINTS_PER_TENANT).items
        if len(records) >= MAX_ENDPOINTS_PER_TENANT:
            raise InvalidRequestError(
                f"A tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete "
                "one first.",
                param="url",
                code="too_many_endpoints",
            )
        secret = new_secret()
        now = int(self._clock())
        endpoint = WebhookEndpoint(
            id=new_webhook_endpoint_id(),
            created_at=now,
            updated_at=now,
            event_types=list(params.event_types),
            name=params.name,
            url=params.url,
            signing_secret_hint=f"whsec_...{secret[-4:]}",
        )
        self.repository.put_webhook(WebhookRecord(endpoint=endpoint, tenant=tenant, secret=secret))
        return WebhookEndpointWithSecret(**endpoint.model_dump(), signing_secret=secret)

    def get(self, tenant: str, endpoint_id: str) -> WebhookRecord:
        record = self.repository.get_webhook(endpoint_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(
                f"No such webhook endpoint: {endpoint_id}", param="webhook_endpoint_id"
            )
        return record

    def list(self, tenant: str, *, after: str | None, limit: int) -> WebhookEndpointList:
        cursor = None
        if after is not None:
            cursor = self.repository.listing_position(tenant, "webhook", after)
            if cursor is None:
                raise NotFoundError(f"No such webhook endpoint: {after}", param="after")
        page = self.repository.list_webhooks(tenant, limit=limit, after=cursor)
        return WebhookEndpointList.of([record.endpoint for record in page.items], page.has_more)

    def delete(self, tenant: str, endpoint_id: str) -> DeletedWebhookEndpoint:
        self.get(tenant, endpoint_id)
        self.repository.delete_webhook(endpoint_id)
        return DeletedWebhookEndpoint(id=endpoint_id)

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
            if event_type in endpoint.endpoint.event_types:
                delivery = WebhookDelivery(endpoint_id=endpoint.endpoint.id, event=event)
                self.queue.send(delivery, delay_seconds=0)
                queued += 1
        return queued

    def deliver(self, delivery: WebhookDelivery) -> bool:
        """One attempt. On failure the next attempt is queued with its delay, until the last;
        returns whether the receiver took it (a 2xx)."""
        record = self.repository.get_webhook(delivery.endpoint_id)
        if record is None:  # deleted meanwhile: nothing to deliver to
            return False
        url = record.endpoint.url
        refusal = self.rules.resolved_refusal(url)
        status: int | None = None
        if refusal is None:
            body = delivery.event.model_dump_json().encode()
            timestamp = int(self._clock())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "openbatch-webhooks",
                "webhook-id": delivery.event.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(record.secret, delivery.event.id, timestamp, body),
            }
            try:
                status = self.poster(url, body, headers)
            except OSError as error:
                refusal = f"unreachable ({error})"
        if status is not None and 200 <= status < 300:
            return True
        reason = refusal or f"answered {status}"
        if delivery.attempt >= self.settings.webhook_max_attempts or self.queue is None:
            logger.error(
                "webhook delivery given up",
                extra={
                    "endpoint_id": record.endpoint.id,
                    "event_id": delivery.event.id,
                    "attempts": delivery.attempt,
                    "reason": reason,
                },
            )
            return False
        delay = retry_delay(delivery.attempt, self.settings.webhook_retry_base_seconds)
        logger.warning(
            "webhook delivery failed; retrying",
            extra={
                "endpoint_id": record.endpoint.id,
                "event_id": delivery.event.id,
                "attempt": delivery.attempt,
                "reason": reason,
                "delay_seconds": delay,
            },
        )
        self.queue.send(delivery.model_copy(update={"attempt": delivery.attempt + 1}), delay)
        return False
