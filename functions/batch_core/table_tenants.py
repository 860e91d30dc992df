"""Per-tenant items: webhook endpoints, the request-rate window, API keys."""

from __future__ import annotations

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
from batch_core.table_keys import META, api_key_pk, listing_keys, webhook_pk


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
        response = unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=to_item({"pk": f"RATE#{tenant}", "sk": f"{window:012d}"}),
            UpdateExpression="ADD requests :one SET #ttl = :ttl",
            ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues=to_item({":one": 1, ":limit": limit, ":ttl": expires_at}),
        )
        return response is not None

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
