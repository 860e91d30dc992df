"""Webhook endpoints as a tenant manages them, the routes of OpenAI's API that the SDKs'
`client.webhooks` calls: register, list, retrieve, update, rotate the signing secret, send a
test, delete; and `/v1/webhook_event_types`, the event types this API sends. Deliveries
themselves are `webhooks.py`.

- Update is partial (only the fields sent change) and checks what create checks: the URL's
  rules (https, no internal address), known event types, the name's bounds. `updated_at`
  moves only when something changed, as OpenAI documents ("tests and unchanged updates do not
  advance it"). An update enables again an endpoint that deliveries disabled (the SDK's
  update has no status field; updating is how a user says "fixed"), and a new URL starts its
  failures in a row from none.
- Rotation shows the new secret once. The old one stops signing at once, unless the call
  asks `keep_old_secret_active_for_24_hours`, as OpenAI's parameter has it: then deliveries
  carry a signature by each secret for 24 hours (only the secret just replaced is kept).
- A test sends one signed sample event of the type asked (`data.id` is `TEST_BATCH_ID`, no
  batch) now, within one attempt's deadline and billed to the tenant's delivery time like
  any attempt; it neither counts as a failure nor clears failures, and works on a disabled
  endpoint (to check it before enabling it again). Whatever the receiver answers is the
  result (`status_code`); no answer at all is a 409 saying why: the request was valid, the
  endpoint as it stands cannot take it (the SDKs try a 409 again, each try billed alike).

Update and rotation read the endpoint and write it back only if nothing changed it since
(`replace_webhook`'s revision), a few times over, so two at once never undo each other.
"""

from __future__ import annotations

import secrets
import time
import unicodedata
from collections.abc import Callable
from typing import Annotated, Literal, Protocol, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from batch_core.api_models import WebhookEndpointList
from batch_core.errors import ConflictError, InvalidRequestError, NotFoundError, RateLimitError
from batch_core.ids import new_event_id, new_webhook_endpoint_id
from batch_core.models import WebhookEndpoint
from batch_core.records import WebhookRecord
from batch_core.repository import Page
from batch_core.webhooks import (
    MAX_ENDPOINTS_PER_TENANT,
    BatchEventType,
    WebhookEvent,
    WebhookService,
    new_secret,
    seconds_to_next_window,
)

EVENT_TYPES: tuple[BatchEventType, ...] = get_args(BatchEventType)
"""Every event type this API sends, in the order `/v1/webhook_event_types` lists them."""
KEEP_OLD_SECRET_SECONDS = 24 * 60 * 60
TEST_BATCH_ID = "batch_webhook_test"
"""`data.id` of a test delivery: no batch has it (ids are `batch_` and hex)."""
WRITE_ATTEMPTS = 3
"""Reads and conditional writes of one update or rotation before a 409 (which the SDKs
retry): each refusal means another change landed in between."""


def _printable(name: str) -> str:
    if any(unicodedata.category(c) in {"Cc", "Zl", "Zp"} for c in name):
        raise ValueError("must not contain control characters or line breaks")
    return name


def _each_once(events: list[BatchEventType]) -> list[BatchEventType]:
    if len(set(events)) != len(events):
        raise ValueError("lists an event type twice")
    return events


EndpointUrl = Annotated[
    str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#@]+([/?#]\S*)?$")
]
EndpointEvents = Annotated[
    list[BatchEventType],
    Field(min_length=1, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_each_once),
]
EndpointName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    # What `_printable` checks, said in the document too (its own words in the error).
    Field(json_schema_extra={"pattern": "^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]+$"}),
    AfterValidator(_printable),
]


class WebhookEndpointCreateParams(BaseModel):
    """The body of POST /v1/webhook_endpoints (the SDKs' `webhooks.create`)."""

    model_config = ConfigDict(extra="forbid")

    url: EndpointUrl
    """The HTTPS URL that receives deliveries (a deployment refuses http:// and internal
    addresses: 400 with `param` url)."""
    event_types: EndpointEvents
    """The events delivered to it: OpenAI's four batch events, and `batch.at_risk` (a running
    batch that cannot make its deadline, once, before it expires)."""
    name: EndpointName
    """A human-readable name (no control characters or line separators: it is shown in
    listings, terminals and logs)."""


class WebhookEndpointUpdateParams(BaseModel):
    """The body of POST /v1/webhook_endpoints/{id} (the SDKs' `webhooks.update`): the fields
    sent change, under create's rules; a field left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid")

    url: EndpointUrl | None = None
    event_types: EndpointEvents | None = None
    """The complete new set (it replaces the old one)."""
    name: EndpointName | None = None


class WebhookRotateSecretParams(BaseModel):
    """The body of POST /v1/webhook_endpoints/{id}/rotate_secret."""

    model_config = ConfigDict(extra="forbid")

    keep_old_secret_active_for_24_hours: StrictBool = False
    """Sign deliveries with the old secret too for 24 hours; by default it stops at once."""


class WebhookTestParams(BaseModel):
    """The body of POST /v1/webhook_endpoints/{id}/test."""

    model_config = ConfigDict(extra="forbid")

    event_type: BatchEventType
    """The type of the sample event sent (one this API sends, subscribed to or not)."""


class WebhookEndpointWithSecret(WebhookEndpoint):
    """The endpoint as created or rotated: the only times its signing secret is shown."""

    signing_secret: str
    """`whsec_<base64 key>`: verify deliveries with it."""


class DeletedWebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEndpointTestResult(BaseModel):
    """What the receiver answered a test delivery."""

    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    webhook_endpoint_id: str
    event_type: str
    status_code: int
    """The receiver's HTTP status (a 5xx is an answer too: it is reported, not raised)."""
    success: Literal[True] = True
    """Always true, as OpenAI has it: the delivery was answered."""


class WebhookEventTypeList(BaseModel):
    """GET /v1/webhook_event_types: the event types an endpoint can subscribe to."""

    object: Literal["list"] = "list"
    data: list[str]


class EndpointStore(Protocol):
    """The endpoint items (`table_tenants`)."""

    def add_webhook(self, record: WebhookRecord, *, limit: int) -> bool: ...
    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None: ...
    def list_webhooks(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> Page[WebhookRecord]: ...
    def listing_position(self, tenant: str, kind: str, object_id: str) -> str | None: ...
    def delete_webhook(self, record: WebhookRecord) -> None: ...
    def replace_webhook(self, record: WebhookRecord, *, revision: int, failures: int) -> bool: ...


def _hint(secret: str) -> str:
    return f"whsec_...{secret[-4:]}"


class WebhookEndpoints:
    """A tenant's webhook endpoints; `deliveries` sends the tests, under its target rules."""

    def __init__(
        self,
        repository: EndpointStore,
        deliveries: WebhookService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.deliveries = deliveries
        self._clock = clock

    def create(self, tenant: str, params: WebhookEndpointCreateParams) -> WebhookEndpointWithSecret:
        self._check_url(params.url)
        secret = new_secret()
        now = int(self._clock())
        endpoint = WebhookEndpoint(
            id=new_webhook_endpoint_id(),
            created_at=now,
            updated_at=now,
            event_types=list(params.event_types),
            name=params.name,
            url=params.url,
            signing_secret_hint=_hint(secret),
        )
        # The endpoint and its tenant's count in one conditional write: creates at the same
        # moment cannot all pass a count read before any of them was written.
        record = WebhookRecord(endpoint=endpoint, tenant=tenant, secret=secret)
        if not self.repository.add_webhook(record, limit=MAX_ENDPOINTS_PER_TENANT):
            raise InvalidRequestError(
                f"A tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete "
                "one first.",
                param="url",
                code="too_many_endpoints",
            )
        return WebhookEndpointWithSecret(**endpoint.model_dump(), signing_secret=secret)

    def get(self, tenant: str, endpoint_id: str) -> WebhookRecord:
        """The tenant's endpoint; another tenant's is as unknown as one never made (404)."""
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
        self.repository.delete_webhook(self.get(tenant, endpoint_id))
        return DeletedWebhookEndpoint(id=endpoint_id)

    def update(
        self, tenant: str, endpoint_id: str, params: WebhookEndpointUpdateParams
    ) -> WebhookEndpoint:
        if params.url is not None:
            self._check_url(params.url)

        def changed(record: WebhookRecord) -> WebhookRecord | None:
            endpoint = record.endpoint
            changes: dict[str, object] = {}
            if params.url is not None and params.url != endpoint.url:
                changes["url"] = params.url
            if params.name is not None and params.name != endpoint.name:
                changes["name"] = params.name
            if params.event_types is not None and set(params.event_types) != set(
                endpoint.event_types
            ):
                changes["event_types"] = list(params.event_types)
            disabled = endpoint.status == "disabled"
            if not changes and not disabled:
                return None  # nothing to write: `updated_at` stays, as OpenAI has it
            changes |= {"status": "enabled", "updated_at": int(self._clock())}
            # Failures of the old URL, or the ones that disabled it, are not the new state's.
            fresh = disabled or "url" in changes
            return record.model_copy(
                update={
                    "endpoint": endpoint.model_copy(update=changes),
                    "consecutive_failures": 0 if fresh else record.consecutive_failures,
                }
            )

        return self._change(tenant, endpoint_id, changed).endpoint

    def rotate_secret(
        self, tenant: str, endpoint_id: str, params: WebhookRotateSecretParams
    ) -> WebhookEndpointWithSecret:
        secret = new_secret()

        def rotated(record: WebhookRecord) -> WebhookRecord:
            now = int(self._clock())
            keep = params.keep_old_secret_active_for_24_hours
            endpoint = record.endpoint.model_copy(
                update={"signing_secret_hint": _hint(secret), "updated_at": now}
            )
            return record.model_copy(
                update={
                    "endpoint": endpoint,
                    "secret": secret,
                    "previous_secret": record.secret if keep else None,
                    "previous_secret_until": now + KEEP_OLD_SECRET_SECONDS if keep else None,
                }
            )

        endpoint = self._change(tenant, endpoint_id, rotated).endpoint
        return WebhookEndpointWithSecret(**endpoint.model_dump(), signing_secret=secret)

    def test(
        self, tenant: str, endpoint_id: str, params: WebhookTestParams
    ) -> WebhookEndpointTestResult:
        record = self.get(tenant, endpoint_id)
        now = self._clock()
        event = WebhookEvent(
            # A new id each time: receivers deduplicate on it, and each test is its own.
            id=new_event_id(f"test/{endpoint_id}/{secrets.token_hex(16)}"),
            created_at=int(now),
            type=params.event_type,
            data={"id": TEST_BATCH_ID},
        )
        outcome = self.deliveries.attempt(record, event)
        if outcome is None:
            wait = seconds_to_next_window(now)
            raise RateLimitError(
                "This tenant's webhook deliveries have used their time for this minute; "
                f"send the test again in {wait} s.",
                retry_after_ms=wait * 1000,
            )
        status, reason = outcome
        if status is None:
            raise ConflictError(
                f"The test delivery to the endpoint's URL got no answer: {reason}.",
                param="url",
                code="webhook_endpoint_unreachable",
                retry=False,  # each attempt spends the tenant's delivery budget
            )
        return WebhookEndpointTestResult(
            webhook_endpoint_id=endpoint_id, event_type=params.event_type, status_code=status
        )

    @staticmethod
    def event_types() -> WebhookEventTypeList:
        return WebhookEventTypeList(data=list(EVENT_TYPES))

    def _check_url(self, url: str) -> None:
        refusal = self.deliveries.rules.refusal(url)
        if refusal:
            raise InvalidRequestError(
                f"The webhook URL {refusal}.", param="url", code="invalid_url"
            )

    def _change(
        self,
        tenant: str,
        endpoint_id: str,
        change: Callable[[WebhookRecord], WebhookRecord | None],
    ) -> WebhookRecord:
        """`change` applied to the endpoint as read and written back at the next revision,
        if nothing else wrote it meanwhile (read again and tried again if something did);
        the endpoint as read when `change` has nothing to write."""
        for _ in range(WRITE_ATTEMPTS):
            record = self.get(tenant, endpoint_id)  # a 404 when deleted meanwhile
            new = change(record)
            if new is None:
                return record
            new = new.model_copy(update={"revision": record.revision + 1})
            if self.repository.replace_webhook(
                new, revision=record.revision, failures=record.consecutive_failures
            ):
                return new
        raise ConflictError(
            f"The webhook endpoint {endpoint_id} kept changing while this request wrote it; "
            "try again.",
            param="webhook_endpoint_id",
            code="concurrent_update",
        )
