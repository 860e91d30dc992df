"""Per-tenant items: webhook endpoints, the request bucket, API keys, the tenant's load, its own
limits, and its running batches that hold shards back."""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from batch_core.records import (
    ApiKeyRecord,
    WebhookRecord,
)
from batch_core.table_access import TableAccess
from batch_core.table_codec import (
    Page,
    from_item,
    is_condition_failure,
    record_from,
    record_item,
    to_item,
    unless_refused,
)
from batch_core.table_keys import (
    META,
    SLOTS_BY_EXPIRY,
    TENANT_LOAD,
    TENANTS,
    api_key_pk,
    held_pk,
    held_sk,
    limits_sk,
    listing_keys,
    rate_pk,
    slot_sk,
    tenant_pk,
    webhook_pk,
)
from batch_core.tenant_limits import TenantLimits

_WEBHOOK_COUNT = "WEBHOOKS"
"""The sort key, under the tenant, of how many webhook endpoints it has."""
_WEBHOOK_TIME = "WEBHOOKTIME#"
"""The sort key prefix, under the tenant, of its delivery time spent in one minute."""


class TenantTable:
    """Webhook endpoints, request slots and API keys."""

    def __init__(self, access: TableAccess) -> None:
        self._access = access
        self._db = access.db
        self._table = access.name

    def put_webhook(self, record: WebhookRecord) -> None:
        """Store an endpoint as it is, uncounted (`add_webhook` counts a new one)."""
        listing = listing_keys(record.tenant, "webhook", record.endpoint.id)
        item = record_item(record, pk=webhook_pk(record.endpoint.id), sk=META, **listing)
        self._db.put_item(TableName=self._table, Item=item)

    def replace_webhook(self, record: WebhookRecord, *, revision: int, failures: int) -> bool:
        """Write `record`'s fields over its endpoint's if that is still as it was read: at
        `revision`, with `failures` failed attempts in a row (an update, a rotation or an
        attempt counted since refuses it); False then, or when it was deleted. One update:
        the listing keys stay, so the endpoint keeps its place (`put_webhook` moves it)."""
        names = {"#revision": "revision", "#failures": "consecutive_failures"}
        names["#document"] = "document"  # the earliest encoding, whose JSON would win on read
        values: dict[str, Any] = {":read_revision": revision, ":read_failures": failures}
        sets: list[str] = []
        removes = ["#document"]
        for i, (name, value) in enumerate(record.model_dump().items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                sets.append(f"#f{i} = :f{i}")
                values[f":f{i}"] = value
        update = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        return self._access.update_if(
            webhook_pk(record.endpoint.id),
            update=update,
            condition="attribute_exists(pk)"
            " AND (attribute_not_exists(#revision) OR #revision = :read_revision)"
            " AND (attribute_not_exists(#failures) OR #failures = :read_failures)",
            names=names,
            values=values,
        )

    def add_webhook(self, record: WebhookRecord, *, limit: int) -> bool:
        """Store a new endpoint if its tenant has fewer than `limit`; False when it has them.
        The endpoint and its tenant's count change in one transaction, so endpoints created
        at the same moment cannot pass the limit (a count read first could not tell)."""
        count_key = {"pk": tenant_pk(record.tenant), "sk": _WEBHOOK_COUNT}
        if self._access.item(**count_key, consistent=True) is None:
            # Endpoints stored before the count was kept are counted once, from the listing.
            existing = self.list_webhooks(record.tenant, limit=1000).items
            unless_refused(
                self._db.put_item,
                TableName=self._table,
                Item=to_item({**count_key, "endpoints": len(existing)}),
                ConditionExpression="attribute_not_exists(pk)",
            )
        listing = listing_keys(record.tenant, "webhook", record.endpoint.id)
        item = record_item(record, pk=webhook_pk(record.endpoint.id), sk=META, **listing)
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item(count_key),
                        "UpdateExpression": "ADD endpoints :one",
                        "ConditionExpression": "endpoints < :limit",
                        "ExpressionAttributeValues": to_item({":one": 1, ":limit": limit}),
                    }
                },
            ],
        )
        return response is not None

    def listing_position(self, tenant: str, kind: str, object_id: str) -> str | None:
        """A webhook endpoint's place in its tenant's listing (`TableAccess.listing_position`)."""
        return self._access.listing_position(tenant, kind, object_id)

    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None:
        values = self._access.item(webhook_pk(endpoint_id))
        return record_from(WebhookRecord, values) if values else None

    def list_webhooks(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> Page[WebhookRecord]:
        """A tenant's endpoints, newest first, past the listing position `after`."""
        page = self._access.page(tenant, "webhook", after, limit, ascending=False)
        return page.map(lambda values: record_from(WebhookRecord, values))

    def delete_webhook(self, record: WebhookRecord) -> None:
        """Delete an endpoint, and count it out of its tenant's endpoints, once."""
        endpoint_key = {"pk": webhook_pk(record.endpoint.id), "sk": META}
        count_key = {"pk": tenant_pk(record.tenant), "sk": _WEBHOOK_COUNT}
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": to_item(endpoint_key),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item(count_key),
                        "UpdateExpression": "ADD endpoints :minus_one",
                        "ConditionExpression": "endpoints > :zero",
                        "ExpressionAttributeValues": to_item({":minus_one": -1, ":zero": 0}),
                    }
                },
            ],
        )
        if response is None:  # gone already, or no count kept yet: the item alone
            self._access.delete(webhook_pk(record.endpoint.id))

    def count_webhook_failure(self, endpoint_id: str, *, disable_after: int, at: int) -> bool:
        """One more failed attempt in a row; at `disable_after` the endpoint is disabled.
        True when this call disabled it."""
        counted = self._access.update_returning(
            webhook_pk(endpoint_id),
            update="ADD consecutive_failures :one",
            condition="attribute_exists(pk)",
            values={":one": 1},
            returning="UPDATED_NEW",
        )
        if counted is None:  # deleted meanwhile
            return False
        failures = int(counted.get("consecutive_failures", 0))
        if failures < disable_after:
            return False
        return self._access.update_if(
            webhook_pk(endpoint_id),
            update="SET #endpoint.#status = :disabled, #endpoint.updated_at = :at",
            condition="attribute_exists(pk) AND "
            "(attribute_not_exists(#endpoint.#status) OR #endpoint.#status <> :disabled)",
            names={"#endpoint": "endpoint", "#status": "status"},
            values={":disabled": "disabled", ":at": at},
        )

    def clear_webhook_failures(self, endpoint_id: str) -> None:
        """A delivery went through: the failures in a row start again from none."""
        self._access.update_if(
            webhook_pk(endpoint_id),
            update="SET consecutive_failures = :zero",
            condition="attribute_exists(pk)",
            values={":zero": 0},
        )

    def reserve_webhook_time(
        self, tenant: str, window: int, milliseconds: int, *, budget: int, expires_at: int
    ) -> bool:
        """Reserve `milliseconds` of `tenant`'s delivery time in the minute `window`; False
        when that would pass `budget`. One conditional write; the item expires by TTL."""
        return self._access.update_if(
            tenant_pk(tenant),
            f"{_WEBHOOK_TIME}{window:012d}",
            update="ADD spent_ms :ms SET #ttl = :ttl",
            condition="attribute_not_exists(spent_ms) OR spent_ms <= :room",
            names={"#ttl": "ttl"},
            values={":ms": milliseconds, ":room": budget - milliseconds, ":ttl": expires_at},
        )

    def release_webhook_time(self, tenant: str, window: int, milliseconds: int) -> None:
        """Give back what an attempt reserved and did not use."""
        self._db.update_item(
            TableName=self._table,
            Key=to_item({"pk": tenant_pk(tenant), "sk": f"{_WEBHOOK_TIME}{window:012d}"}),
            UpdateExpression="ADD spent_ms :ms",
            ExpressionAttributeValues=to_item({":ms": -milliseconds}),
        )

    def take_tokens(self, tenant: str, *, cost_us: int, burst_us: int, now_us: int) -> int:
        """Take `cost_us` from `tenant`'s request bucket (GCRA: one item holding `tat`, the
        time at which the bucket is full again; it holds `burst_us` and refills at one
        microsecond a microsecond). Returns 0 when taken, else the microseconds until it
        could be. One conditional write when the bucket is full, two when it is in use."""
        ttl = (now_us + burst_us) // 1_000_000 + 60
        limit = now_us + burst_us - cost_us  # the latest `tat` a request may still find
        fill = (  # the bucket is full (`tat` has passed): it starts from now
            "SET tat = :next, #ttl = :ttl",
            "attribute_not_exists(tat) OR tat < :now",
            {":next": now_us + cost_us, ":now": now_us, ":ttl": ttl},
        )
        draw = (  # the bucket is in use and holds the cost
            "SET tat = tat + :cost, #ttl = :ttl",
            "tat BETWEEN :now AND :limit",
            {":cost": cost_us, ":now": now_us, ":limit": limit, ":ttl": ttl},
        )
        write, tat = fill, 0
        for _ in range(3):  # another request of the tenant may move `tat` in between
            old = self._update_unless(tenant, *write)
            if old is None:
                return 0
            tat = int(old.get("tat", 0))
            if tat > limit:
                return tat - limit
            write = fill if tat < now_us else draw
        return max(tat - limit, 1)

    def _update_unless(
        self, tenant: str, update: str, condition: str, values: dict[str, int]
    ) -> dict[str, Any] | None:
        """None when the bucket's update applied; the item as it was when its condition
        refused it."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": rate_pk(tenant), "sk": META}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues=to_item(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if is_condition_failure(error):
                item: Any = error.response.get("Item") or {}
                return from_item(item)
            raise
        return None

    def book_urgent(self, tenant: str, model: str, *, seconds: int, now: int, ahead: int) -> bool:
        """Book `seconds` on `tenant`'s urgent clock for `model` (when the urgent work booked
        so far is done at the tenant's share of the fleet) if the clock is at most `ahead`
        seconds past `now`; False when it is further. A clock behind `now` restarts from it
        (idle time earns no credit). The write is conditional on the clock read, so two
        batches booked at once are both counted."""
        # Sort keys hold 1,024 bytes at most: a long model name (any is accepted while no
        # model is configured) is hashed.
        name = model if len(model.encode()) <= 200 else hashlib.sha256(model.encode()).hexdigest()
        key = tenant_pk(tenant), f"URGENT#{name}"
        for _ in range(5):  # another booking between the read and the write: read again
            until = (self._access.item(*key, consistent=True) or {}).get("urgent_until")
            if until is not None and int(until) > now + ahead:
                return False
            booked = self._access.update_if(
                *key,
                update="SET urgent_until = :until",
                condition=(
                    "attribute_not_exists(urgent_until)" if until is None else "urgent_until = :old"
                ),
                values={
                    ":until": max(int(until or now), now) + seconds,
                    **({":old": until} if until is not None else {}),
                },
            )
            if booked:
                return True
        return False

    def put_api_key(self, record: ApiKeyRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=record_item(record, pk=api_key_pk(record.key_hash), sk=META),
        )

    def delete_api_key(self, key_hash: str) -> bool:
        return self._access.delete(api_key_pk(key_hash))

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        values = self._access.item(api_key_pk(key_hash))
        return record_from(ApiKeyRecord, values) if values else None

    # -- a tenant's own limits (`tenant_limits`) --------------------------------------------

    def get_limits(self, tenant: str) -> TenantLimits | None:
        values = self._access.item(TENANTS, limits_sk(tenant))
        return record_from(TenantLimits, values) if values else None

    def put_limits(self, limits: TenantLimits) -> None:
        item = to_item(
            {"pk": TENANTS, "sk": limits_sk(limits.tenant), **limits.model_dump(exclude_none=True)}
        )
        self._db.put_item(TableName=self._table, Item=item)

    def delete_limits(self, tenant: str) -> bool:
        return self._access.delete(TENANTS, limits_sk(tenant))

    def list_limits(self) -> list[TenantLimits]:
        return [record_from(TenantLimits, v) for v in self._access.items_under(TENANTS, "LIMITS#")]

    # -- a tenant's load: its active batches and the requests and tokens they hold ---------

    def tenant_load(self, tenant: str) -> tuple[int, int]:
        """(active batches, requests they hold) of `tenant`."""
        values = self._access.item(tenant_pk(tenant), TENANT_LOAD, consistent=True) or {}
        return int(values.get("active_batches", 0)), int(values.get("queued_requests", 0))

    def queued_tokens(self, tenant: str) -> int:
        """The estimated tokens `tenant`'s counted batches hold."""
        values = self._access.item(tenant_pk(tenant), TENANT_LOAD, consistent=True) or {}
        return int(values.get("queued_tokens", 0))

    def reserve_batch_slot(
        self,
        tenant: str,
        batch_id: str,
        *,
        expires_at: int,
        max_batches: int,
        max_requests: int,
        max_tokens: int = 0,
    ) -> bool:
        """Count one more active batch for `tenant` if its limits allow (0: no limit); True
        when the batch holds its slot, also when it held it already (a retried create). The
        slot item and the counter change in one transaction, so neither is counted twice."""
        if self._access.item(tenant_pk(tenant), slot_sk(batch_id), consistent=True) is not None:
            return True
        limits: list[str] = []
        values: dict[str, int] = {":one": 1}
        if max_batches:
            limits.append("(attribute_not_exists(active_batches) OR active_batches < :batches)")
            values[":batches"] = max_batches
        if max_requests:
            limits.append("(attribute_not_exists(queued_requests) OR queued_requests < :reqs)")
            values[":reqs"] = max_requests
        if max_tokens:
            limits.append("(attribute_not_exists(queued_tokens) OR queued_tokens < :tokens)")
            values[":tokens"] = max_tokens
        count: dict[str, Any] = {
            "TableName": self._table,
            "Key": to_item({"pk": tenant_pk(tenant), "sk": TENANT_LOAD}),
            "UpdateExpression": "ADD active_batches :one",
            "ExpressionAttributeValues": to_item(values),
        }
        if limits:
            count["ConditionExpression"] = " AND ".join(limits)
        slot = {
            # In the expiry index: a slot left behind by a crash is found once its batch's
            # window has passed, and released if the batch has ended.
            "pk": tenant_pk(tenant),
            "sk": slot_sk(batch_id),
            "id": batch_id,
            "active": SLOTS_BY_EXPIRY,
            "expires_at": expires_at,
            "requests": 0,
            "tokens": 0,
        }
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": to_item(slot),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Update": count},
            ],
        )
        return response is not None

    def count_slot_requests(
        self,
        tenant: str,
        batch_id: str,
        requests: int,
        *,
        tokens: int = 0,
        max_requests: int = 0,
        max_tokens: int = 0,
    ) -> bool:
        """The batch's requests and estimated tokens are known (validation ended): its
        tenant's load holds them until it ends, if `max_requests` and `max_tokens` (0: no
        limit) leave room for all of them. The slot and the tenant's counts change in one
        transaction, so two batches counted at once cannot both take the last room. True
        when they are counted, also when they were already (a retried intake) or the batch
        holds no slot (created before limits were on); False when a limit leaves no room."""
        values: dict[str, int] = {":n": requests, ":t": tokens}
        fits: list[str] = []
        # A tenant's first counted batch finds no counter yet: it must fit too.
        if max_requests:
            fits.append(
                "((attribute_not_exists(queued_requests) AND :n <= :max_n)"
                " OR queued_requests <= :room_n)"
            )
            values.update({":max_n": max_requests, ":room_n": max_requests - requests})
        if max_tokens:
            fits.append(
                "((attribute_not_exists(queued_tokens) AND :t <= :max_t)"
                " OR queued_tokens <= :room_t)"
            )
            values.update({":max_t": max_tokens, ":room_t": max_tokens - tokens})
        load: dict[str, Any] = {
            "TableName": self._table,
            "Key": to_item({"pk": tenant_pk(tenant), "sk": TENANT_LOAD}),
            "UpdateExpression": "ADD queued_requests :n, queued_tokens :t",
            "ExpressionAttributeValues": to_item(values),
        }
        if fits:
            load["ConditionExpression"] = " AND ".join(fits)
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": tenant_pk(tenant), "sk": slot_sk(batch_id)}),
                        "UpdateExpression": "SET requests = :n, tokens = :t",
                        "ConditionExpression": "attribute_exists(pk) AND requests = :zero",
                        "ExpressionAttributeValues": to_item(
                            {":n": requests, ":t": tokens, ":zero": 0}
                        ),
                    }
                },
                {"Update": load},
            ],
        )
        if response is not None:
            return True
        slot = self._access.item(tenant_pk(tenant), slot_sk(batch_id), consistent=True)
        return slot is None or (
            int(slot.get("requests", 0)) == requests and int(slot.get("tokens", 0)) == tokens
        )

    def release_batch_slot(self, tenant: str, batch_id: str) -> None:
        """The batch ended: its slot, its requests and its tokens leave the tenant's load,
        once (the slot's delete is conditional on what it held: a second release finds none)."""
        slot = self._access.item(tenant_pk(tenant), slot_sk(batch_id), consistent=True)
        if slot is None:
            return
        requests, tokens = int(slot.get("requests", 0)), int(slot.get("tokens", 0))
        unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": to_item({"pk": tenant_pk(tenant), "sk": slot_sk(batch_id)}),
                        "ConditionExpression": "requests = :n",
                        "ExpressionAttributeValues": to_item({":n": requests}),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": tenant_pk(tenant), "sk": TENANT_LOAD}),
                        "UpdateExpression": "ADD active_batches :minus_one, "
                        "queued_requests :minus_requests, queued_tokens :minus_tokens",
                        "ExpressionAttributeValues": to_item(
                            {
                                ":minus_one": -1,
                                ":minus_requests": -requests,
                                ":minus_tokens": -tokens,
                            }
                        ),
                    }
                },
            ],
        )

    def slots_past_expiry(self, now: int, limit: int = 1000) -> list[tuple[str, str]]:
        """(tenant, batch id) of slots whose batch's window ended before `now`."""
        found = self._access.past_expiry(SLOTS_BY_EXPIRY, now, limit)
        return [(str(v["pk"]).removeprefix("TENANT#"), str(v["id"])) for v in found]

    # -- a tenant's running batches that hold shards back (`Turns`: priority) --------------

    def hold_shards(self, tenant: str, batch_id: str, priority: int) -> None:
        """`batch_id` runs with shards held back: the tenant's settling shards may give it
        their turn (by its priority)."""
        item = {"pk": held_pk(tenant), "sk": held_sk(batch_id), "id": batch_id}
        self._db.put_item(TableName=self._table, Item=to_item({**item, "priority": priority}))

    def held_batches(self, tenant: str) -> list[tuple[str, int]]:
        """(batch id, priority) of the tenant's batches holding shards back."""
        found = self._access.items_under(held_pk(tenant), "HELD#")
        return [(str(v["id"]), int(v.get("priority", 0))) for v in found]

    def release_held(self, tenant: str, batch_id: str) -> None:
        """Its shards are all let in (or it ended): nothing is held any more."""
        self._access.delete(held_pk(tenant), held_sk(batch_id))
