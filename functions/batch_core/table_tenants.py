"""Per-tenant items: webhook endpoints, the request-rate window, API keys, the tenant's load."""

from __future__ import annotations

from typing import Any

from batch_core.records import (
    ApiKeyRecord,
    WebhookRecord,
)
from batch_core.table_batches import BatchTable
from batch_core.table_codec import (
    Page,
    record_from,
    record_item,
    to_item,
    unless_refused,
)
from batch_core.table_keys import (
    META,
    SLOTS_BY_EXPIRY,
    TENANT_LOAD,
    api_key_pk,
    listing_keys,
    slot_sk,
    tenant_pk,
    webhook_pk,
)


class TenantTable(BatchTable):
    """Webhook endpoints, request slots and API keys."""

    def put_webhook(self, record: WebhookRecord) -> None:
        listing = listing_keys(record.tenant, "webhook", record.endpoint.id)
        item = record_item(record, pk=webhook_pk(record.endpoint.id), sk=META, **listing)
        self._db.put_item(TableName=self._table, Item=item)

    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None:
        values = self._item(webhook_pk(endpoint_id))
        return record_from(WebhookRecord, values) if values else None

    def list_webhooks(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> Page[WebhookRecord]:
        """A tenant's endpoints, newest first, past the listing position `after`."""
        page = self._page(tenant, "webhook", after, limit, ascending=False)
        return page.map(lambda values: record_from(WebhookRecord, values))

    def delete_webhook(self, endpoint_id: str) -> None:
        self._delete(webhook_pk(endpoint_id))

    def take_request_slot(self, tenant: str, window: int, limit: int, expires_at: int) -> bool:
        """Count one request of `tenant` in the time window `window`; False when `limit`
        were already counted there. One conditional write; the item expires by TTL."""
        return self._update_if(
            f"RATE#{tenant}",
            f"{window:012d}",
            update="ADD requests :one SET #ttl = :ttl",
            condition="attribute_not_exists(requests) OR requests < :limit",
            names={"#ttl": "ttl"},
            values={":one": 1, ":limit": limit, ":ttl": expires_at},
        )

    def put_api_key(self, record: ApiKeyRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=record_item(record, pk=api_key_pk(record.key_hash), sk=META),
        )

    def delete_api_key(self, key_hash: str) -> bool:
        return self._delete(api_key_pk(key_hash))

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        values = self._item(api_key_pk(key_hash))
        return record_from(ApiKeyRecord, values) if values else None

    # -- a tenant's load: its active batches and the requests they hold --------------------

    def tenant_load(self, tenant: str) -> tuple[int, int]:
        """(active batches, requests they hold) of `tenant`."""
        values = self._item(tenant_pk(tenant), TENANT_LOAD, consistent=True) or {}
        return int(values.get("active_batches", 0)), int(values.get("queued_requests", 0))

    def reserve_batch_slot(
        self, tenant: str, batch_id: str, *, expires_at: int, max_batches: int, max_requests: int
    ) -> bool:
        """Count one more active batch for `tenant` if its limits allow (0: no limit); True
        when the batch holds its slot, also when it held it already (a retried create). The
        slot item and the counter change in one transaction, so neither is counted twice."""
        if self._item(tenant_pk(tenant), slot_sk(batch_id), consistent=True) is not None:
            return True
        limits: list[str] = []
        values: dict[str, int] = {":one": 1}
        if max_batches:
            limits.append("(attribute_not_exists(active_batches) OR active_batches < :batches)")
            values[":batches"] = max_batches
        if max_requests:
            limits.append("(attribute_not_exists(queued_requests) OR queued_requests < :reqs)")
            values[":reqs"] = max_requests
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

    def count_slot_requests(self, tenant: str, batch_id: str, requests: int) -> None:
        """The batch's requests are known (validation ended): its tenant's load holds them
        until it ends. Once only: a retried intake changes nothing."""
        unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": tenant_pk(tenant), "sk": slot_sk(batch_id)}),
                        "UpdateExpression": "SET requests = :n",
                        "ConditionExpression": "attribute_exists(pk) AND requests = :zero",
                        "ExpressionAttributeValues": to_item({":n": requests, ":zero": 0}),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": tenant_pk(tenant), "sk": TENANT_LOAD}),
                        "UpdateExpression": "ADD queued_requests :n",
                        "ExpressionAttributeValues": to_item({":n": requests}),
                    }
                },
            ],
        )

    def release_batch_slot(self, tenant: str, batch_id: str) -> None:
        """The batch ended: its slot and its requests leave the tenant's load, once."""
        slot = self._item(tenant_pk(tenant), slot_sk(batch_id), consistent=True)
        if slot is None:
            return
        requests = int(slot.get("requests", 0))
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
                        "queued_requests :minus_requests",
                        "ExpressionAttributeValues": to_item(
                            {":minus_one": -1, ":minus_requests": -requests}
                        ),
                    }
                },
            ],
        )

    def slots_past_expiry(self, now: int, limit: int = 1000) -> list[tuple[str, str]]:
        """(tenant, batch id) of slots whose batch's window ended before `now`."""
        found = self._past_expiry(SLOTS_BY_EXPIRY, now, limit)
        return [(str(v["pk"]).removeprefix("TENANT#"), str(v["id"])) for v in found]
