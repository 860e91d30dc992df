"""Webhook endpoint management over a bare moto world (the `webhook_endpoints` stage): a
partial update under create's rules, `updated_at` moved only by a change, a disabled endpoint
enabled again, the listing place kept, a rotation that stops the old secret or keeps it a day,
writes that never undo each other, a test delivery billed like any attempt, and another
tenant's endpoint as unknown as one never made."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from batch_core import webhooks
from batch_core.errors import ConflictError, InvalidRequestError, NotFoundError, RateLimitError
from batch_core.records import WebhookRecord
from batch_core.webhook_endpoints import (
    EVENT_TYPES,
    KEEP_OLD_SECRET_SECONDS,
    TEST_BATCH_ID,
    WebhookEndpointCreateParams,
    WebhookEndpointUpdateParams,
    WebhookRotateSecretParams,
    WebhookTestParams,
)
from batch_core.webhooks import EVENT_OF_STATUS, WebhookEvent, signatures
from tests.stage_world import StageWorld

VERIFIER = openai.OpenAI(api_key="unused").webhooks


def create(world: StageWorld, tenant: str = "acme", name: str = "hook") -> str:
    params = WebhookEndpointCreateParams.model_validate(
        {"name": name, "url": "https://hooks.example.com/a", "event_types": ["batch.completed"]}
    )
    return world.stages.webhook_endpoints.create(tenant, params).id


def update(**fields: Any) -> WebhookEndpointUpdateParams:
    return WebhookEndpointUpdateParams.model_validate(fields)


def stored(world: StageWorld, endpoint_id: str) -> WebhookRecord:
    record = world.table.tenants.get_webhook(endpoint_id)
    assert record is not None
    return record


def test_an_update_changes_only_the_fields_sent_and_moves_updated_at(world: StageWorld) -> None:
    endpoint_id = create(world)
    created = stored(world, endpoint_id).endpoint
    world.clock.advance(30)

    updated = world.stages.webhook_endpoints.update("acme", endpoint_id, update(name="renamed"))

    assert (updated.name, updated.url, updated.event_types) == (
        "renamed",
        created.url,
        created.event_types,
    )
    assert updated.updated_at == created.created_at + 30
    assert stored(world, endpoint_id).endpoint == updated
    assert stored(world, endpoint_id).revision == 1


def test_an_unchanged_update_writes_nothing_and_keeps_updated_at(world: StageWorld) -> None:
    endpoint_id = create(world)
    before = stored(world, endpoint_id)
    world.clock.advance(30)
    same = update(name="hook", event_types=["batch.completed"], url="https://hooks.example.com/a")

    assert world.stages.webhook_endpoints.update("acme", endpoint_id, same) == before.endpoint
    assert world.stages.webhook_endpoints.update("acme", endpoint_id, update()) == before.endpoint
    assert stored(world, endpoint_id) == before  # the same revision: nothing written


def test_update_refuses_what_create_refuses(world: StageWorld) -> None:
    endpoint_id = create(world)
    hooks = world.stages.webhook_endpoints
    for url in ("https://10.0.0.7/in", "https://169.254.169.254/x", "http://hooks.example.com/"):
        with pytest.raises(InvalidRequestError) as excinfo:
            hooks.update("acme", endpoint_id, update(url=url))
        assert (excinfo.value.param, excinfo.value.code) == ("url", "invalid_url")
    for fields in (
        {"name": "x" * 257},
        {"name": ""},
        {"name": "two\nlines"},
        {"event_types": []},
        {"event_types": ["batch.completed", "batch.completed"]},
        {"event_types": ["video.completed"]},
        {"url": "https://hooks.example.com/" + "x" * 2048},
        {"status": "enabled"},  # not a parameter of the SDK's update
    ):
        with pytest.raises(ValueError):  # pydantic's: the API's 400 (tests/integration)
            update(**fields)
    assert stored(world, endpoint_id).revision == 0


def test_an_update_enables_a_disabled_endpoint_again_and_a_new_url_forgets_failures(
    world: StageWorld,
) -> None:
    tenants = world.table.tenants
    endpoint_id = create(world)
    for _ in range(webhooks.DISABLE_AFTER_FAILURES):
        tenants.count_webhook_failure(
            endpoint_id, disable_after=webhooks.DISABLE_AFTER_FAILURES, at=1
        )
    assert stored(world, endpoint_id).endpoint.status == "disabled"

    shown = world.stages.webhook_endpoints.update("acme", endpoint_id, update())

    assert shown.status == "enabled"
    assert (stored(world, endpoint_id).consecutive_failures, shown.updated_at) == (0, world.clock())
    for _ in range(3):
        tenants.count_webhook_failure(endpoint_id, disable_after=20, at=1)
    world.stages.webhook_endpoints.update("acme", endpoint_id, update(name="kept failures"))
    assert stored(world, endpoint_id).consecutive_failures == 3
    new_url = update(url="https://hooks.example.com/new")
    world.stages.webhook_endpoints.update("acme", endpoint_id, new_url)
    assert stored(world, endpoint_id).consecutive_failures == 0


def test_an_updated_endpoint_keeps_its_place_in_the_listing(world: StageWorld) -> None:
    hooks = world.stages.webhook_endpoints
    first, second, third = (create(world, name=f"n{i}") for i in range(3))
    hooks.update("acme", first, update(name="changed"))
    hooks.rotate_secret("acme", first, WebhookRotateSecretParams())

    listed = hooks.list("acme", after=None, limit=10)
    assert [e.id for e in listed.data] == [third, second, first]
    assert [e.id for e in hooks.list("acme", after=second, limit=10).data] == [first]


def test_another_tenants_endpoint_is_unknown_to_every_route(world: StageWorld) -> None:
    endpoint_id = create(world, tenant="acme")
    hooks = world.stages.webhook_endpoints
    calls = [
        lambda: hooks.update("other", endpoint_id, update(name="taken")),
        lambda: hooks.rotate_secret("other", endpoint_id, WebhookRotateSecretParams()),
        lambda: hooks.test("other", endpoint_id, WebhookTestParams(event_type="batch.failed")),
        lambda: hooks.update("acme", "we_nope", update(name="x")),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as excinfo:
            call()
        assert excinfo.value.param == "webhook_endpoint_id"
    assert stored(world, endpoint_id).revision == 0 and stored(world, endpoint_id).tenant == "acme"


def signed(record: WebhookRecord, timestamp: int) -> tuple[bytes, dict[str, str]]:
    body = b'{"id":"evt_1","object":"event","type":"batch.completed"}'
    signature = signatures(record, "evt_1", timestamp, body)
    return body, {"webhook-id": "evt_1", "webhook-timestamp": str(timestamp),
                  "webhook-signature": signature}  # fmt: skip


def verifies(record: WebhookRecord, secret: str, timestamp: int) -> bool:
    body, headers = signed(record, timestamp)
    try:
        VERIFIER.verify_signature(body, headers, secret=secret, tolerance=10**10)
    except openai.InvalidWebhookSignatureError:
        return False
    return True


def test_a_rotation_stops_the_old_secret_at_once_by_default(world: StageWorld) -> None:
    endpoint_id = create(world)
    old = stored(world, endpoint_id).secret
    world.clock.advance(5)

    rotated = world.stages.webhook_endpoints.rotate_secret(
        "acme", endpoint_id, WebhookRotateSecretParams()
    )

    record = stored(world, endpoint_id)
    assert rotated.signing_secret == record.secret != old
    assert rotated.signing_secret_hint == record.endpoint.signing_secret_hint
    assert rotated.signing_secret_hint
    assert rotated.signing_secret.endswith(rotated.signing_secret_hint[-4:])
    assert rotated.updated_at == int(world.clock())
    assert record.previous_secret is None
    now = int(world.clock())
    assert verifies(record, rotated.signing_secret, now)
    assert not verifies(record, old, now)
    shown = world.stages.webhook_endpoints.get("acme", endpoint_id).endpoint.model_dump()
    assert rotated.signing_secret not in json.dumps(shown)  # shown once, never again


def test_a_rotation_may_keep_the_old_secret_signing_for_a_day(world: StageWorld) -> None:
    endpoint_id = create(world)
    old = stored(world, endpoint_id).secret
    keep = WebhookRotateSecretParams(keep_old_secret_active_for_24_hours=True)

    rotated = world.stages.webhook_endpoints.rotate_secret("acme", endpoint_id, keep)

    record = stored(world, endpoint_id)
    now = int(world.clock())
    assert (record.previous_secret, record.previous_secret_until) == (
        old,
        now + KEEP_OLD_SECRET_SECONDS,
    )
    assert verifies(record, old, now) and verifies(record, rotated.signing_secret, now)
    day_later = now + KEEP_OLD_SECRET_SECONDS
    assert not verifies(record, old, day_later)
    assert verifies(record, rotated.signing_secret, day_later)
    # A second rotation keeps only the secret it replaced.
    again = world.stages.webhook_endpoints.rotate_secret("acme", endpoint_id, keep)
    record = stored(world, endpoint_id)
    assert verifies(record, rotated.signing_secret, now) and verifies(
        record, again.signing_secret, now
    )
    assert not verifies(record, old, now)


def test_a_write_over_a_changed_endpoint_is_refused_and_read_again(world: StageWorld) -> None:
    tenants = world.table.tenants
    endpoint_id = create(world)
    read = stored(world, endpoint_id)
    renamed = read.model_copy(
        update={"endpoint": read.endpoint.model_copy(update={"name": "a"}), "revision": 1}
    )
    assert tenants.replace_webhook(renamed, revision=0, failures=0)
    assert not tenants.replace_webhook(renamed, revision=0, failures=0)  # stale revision
    tenants.count_webhook_failure(endpoint_id, disable_after=20, at=1)
    assert not tenants.replace_webhook(renamed, revision=1, failures=0)  # a failure counted

    # The stage reads again after a refusal: a failure counted between its read and its
    # write is kept, not overwritten.
    hooks = world.stages.webhook_endpoints
    real = tenants.get_webhook
    raced = []

    def get_then_fail(endpoint: str) -> WebhookRecord | None:
        record = real(endpoint)
        if not raced:
            raced.append(True)
            tenants.count_webhook_failure(endpoint, disable_after=20, at=1)
        return record

    tenants.get_webhook = get_then_fail  # type: ignore[method-assign]
    try:
        hooks.update("acme", endpoint_id, update(name="b"))
    finally:
        del tenants.get_webhook
    record = stored(world, endpoint_id)
    assert (record.endpoint.name, record.consecutive_failures, record.revision) == ("b", 2, 2)


def test_an_endpoint_that_keeps_changing_is_a_409(world: StageWorld) -> None:
    endpoint_id = create(world)
    tenants = world.table.tenants
    real = tenants.get_webhook

    def always_behind(endpoint: str) -> WebhookRecord | None:
        record = real(endpoint)
        tenants.count_webhook_failure(endpoint, disable_after=100, at=1)
        return record

    tenants.get_webhook = always_behind  # type: ignore[method-assign]
    try:
        with pytest.raises(ConflictError):
            world.stages.webhook_endpoints.rotate_secret(
                "acme", endpoint_id, WebhookRotateSecretParams()
            )
    finally:
        del tenants.get_webhook
    assert stored(world, endpoint_id).revision == 0


class Poster:
    def __init__(self, status: int | Exception) -> None:
        self.status = status
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.sent.append((url, body, headers))
        if isinstance(self.status, Exception):
            raise self.status
        return self.status


def test_a_test_sends_a_signed_sample_and_reports_what_the_receiver_answered(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = create(world)
    hooks = world.stages.webhook_endpoints
    poster = Poster(503)
    monkeypatch.setattr(hooks.deliveries, "poster", poster)

    result = hooks.test("acme", endpoint_id, WebhookTestParams(event_type="batch.expired"))

    assert result.model_dump() == {
        "object": "webhook_endpoint.test",
        "webhook_endpoint_id": endpoint_id,
        "event_type": "batch.expired",
        "status_code": 503,
        "success": True,
    }
    ((url, body, headers),) = poster.sent
    assert url == "https://hooks.example.com/a"
    secret = stored(world, endpoint_id).secret
    event = VERIFIER.unwrap(body, headers, secret=secret)
    assert (event.type, event.data.id) == ("batch.expired", TEST_BATCH_ID)
    hooks.test("acme", endpoint_id, WebhookTestParams(event_type="batch.expired"))
    assert poster.sent[1][2]["webhook-id"] != headers["webhook-id"]  # each test its own event
    record = stored(world, endpoint_id)  # a 503 to a test is not a failed delivery
    assert (record.consecutive_failures, record.revision) == (0, 0)
    assert world.drain_bodies("webhooks") == []  # sent now, not queued


def test_a_test_nothing_answers_is_a_409_saying_why(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = create(world)
    hooks = world.stages.webhook_endpoints
    monkeypatch.setattr(hooks.deliveries, "poster", Poster(TimeoutError("deadline passed")))

    with pytest.raises(ConflictError) as excinfo:
        hooks.test("acme", endpoint_id, WebhookTestParams(event_type="batch.completed"))

    assert excinfo.value.code == "webhook_endpoint_unreachable"
    assert "deadline passed" in str(excinfo.value)


def test_a_test_is_billed_to_the_tenants_delivery_time(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = create(world)
    hooks = world.stages.webhook_endpoints
    poster = Poster(200)
    monkeypatch.setattr(hooks.deliveries, "poster", poster)
    monkeypatch.setattr(hooks.deliveries, "_clock", world.clock)  # a minute that stands still
    budget = webhooks.TENANT_ATTEMPT_MS_PER_MINUTE
    window = int(world.clock() // webhooks.BUDGET_WINDOW_SECONDS)
    # The tenant's deliveries have used all but less than one attempt's deadline.
    spent = budget - webhooks.DELIVERY_TIMEOUT_SECONDS * 1000 + 1
    assert world.table.tenants.reserve_webhook_time(
        "acme", window, spent, budget=budget, expires_at=(window + 2) * 60
    )

    with pytest.raises(RateLimitError) as excinfo:
        hooks.test("acme", endpoint_id, WebhookTestParams(event_type="batch.completed"))

    assert poster.sent == []
    assert excinfo.value.retry_after_ms == 1000 * webhooks.seconds_to_next_window(world.clock())
    world.clock.advance(webhooks.BUDGET_WINDOW_SECONDS)  # the next minute has room
    result = hooks.test("acme", endpoint_id, WebhookTestParams(event_type="batch.completed"))
    assert result.status_code == 200


def test_the_event_type_list_is_every_event_this_api_sends() -> None:
    from batch_core.webhook_endpoints import WebhookEndpoints

    listed = WebhookEndpoints.event_types()
    assert listed.object == "list"
    assert set(listed.data) == {*EVENT_OF_STATUS.values(), "batch.at_risk"}
    assert listed.data == list(EVENT_TYPES)
    WebhookEvent(id="evt_1", created_at=1, type=EVENT_TYPES[-1], data={})  # each a sendable type
