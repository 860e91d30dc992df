"""Batch items: create, read, move between statuses, list, sweep the overdue, claim outboxes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from batch_core.batch_params import MAX_WINDOW_SECONDS
from batch_core.lifecycle import check_move
from batch_core.models import TERMINAL_STATUSES, BatchError, BatchStatus
from batch_core.records import (
    BatchRecord,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

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
    ACTIVE_BY_EXPIRY,
    BY_TENANT,
    FILES_BY_EXPIRY,
    META,
    batch_pk,
    file_pk,
    listing_keys,
    outbox_pk,
    webhook_pk,
)

logger = logging.getLogger(__name__)


class BatchTable:
    """Batch items and the listings and sweeps over them."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def _item(self, pk: str, sk: str = META, *, consistent: bool = False) -> dict[str, Any] | None:
        """One item's plain values; None when there is none."""
        response = self._db.get_item(
            TableName=self._table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=consistent
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def _delete(self, pk: str, sk: str = META) -> bool:
        """Delete one item; False if it was not there."""
        response = self._db.delete_item(
            TableName=self._table, Key=to_item({"pk": pk, "sk": sk}), ReturnValues="ALL_OLD"
        )
        return bool(response.get("Attributes"))

    def _update_if(
        self,
        pk: str,
        sk: str = META,
        *,
        update: str,
        condition: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
    ) -> bool:
        """Update one item if `condition` holds; False when DynamoDB refused it."""
        response = unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=to_item({"pk": pk, "sk": sk}),
            UpdateExpression=update,
            ConditionExpression=condition,
            **({"ExpressionAttributeNames": dict(names)} if names else {}),
            ExpressionAttributeValues=to_item(dict(values)),
        )
        return response is not None

    def create_batch(self, record: BatchRecord) -> bool:
        """Store a new batch; False when a batch with this id already exists."""
        listing = listing_keys(record.tenant, "batch", record.id)
        item = record_item(record, pk=batch_pk(record.id), sk=META, **listing)
        response = unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        return response is not None

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        values = self._item(batch_pk(batch_id), consistent=True)
        return record_from(BatchRecord, values) if values else None

    def transition(
        self,
        batch_id: str,
        *,
        to_status: BatchStatus,
        from_statuses: Iterable[BatchStatus],
        fields: Mapping[str, Any] | None = None,
        errors: list[BatchError] | None = None,
    ) -> bool:
        """Move a batch to `to_status` if it is in one of `from_statuses`; False otherwise.
        Only moves the lifecycle lists are written (`lifecycle.check_move`).

        A token written with the move tells a retried call (its first attempt applied, the
        answer lost) that the move was its own, so the caller still sees True."""
        from_statuses = list(from_statuses)
        check_move(to_status, from_statuses)
        token = uuid.uuid4().hex
        values: dict[str, Any] = {"status": to_status, **(fields or {}), "moved_by": token}
        if to_status in TERMINAL_STATUSES:
            values["active"] = None  # leaves the index of batches that can expire
        if errors is not None:
            values["errors"] = [e.model_dump() for e in errors]
        names = {f"#f{i}": name for i, name in enumerate(values)}
        placeholders = {f":v{i}": v for i, v in enumerate(values.values()) if v is not None}
        sets = ", ".join(f"#f{i} = :v{i}" for i, v in enumerate(values.values()) if v is not None)
        removes = ", ".join(f"#f{i}" for i, v in enumerate(values.values()) if v is None)
        expression = f"SET {sets}" + (f" REMOVE {removes}" if removes else "")
        allowed = {f":s{i}": status for i, status in enumerate(from_statuses)}
        condition = f"#status IN ({', '.join(allowed)})"
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": batch_pk(batch_id), "sk": META}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={**names, "#status": "status"},
                ExpressionAttributeValues=to_item({**placeholders, **allowed}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if is_condition_failure(error):
                current: Any = error.response.get("Item") or {}
                return bool(current.get("moved_by", {}).get("S") == token)
            raise
        return True

    def listing_position(self, tenant: str, kind: str, object_id: str) -> str | None:
        """Where a tenant's batch or file sits in its listing (a page cursor); None if the
        object does not exist or is another tenant's."""
        pk = {"batch": batch_pk, "file": file_pk, "webhook": webhook_pk}[kind](object_id)
        response = self._db.get_item(
            TableName=self._table,
            Key=to_item({"pk": pk, "sk": META}),
            ProjectionExpression="tenant_kind, created_sort",
        )
        values = from_item(response.get("Item") or {})
        if values.get("tenant_kind") != f"{tenant}#{kind}":
            return None
        position: str = values["created_sort"]
        return position

    def list_batches(self, tenant: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        """A tenant's batches, newest first, past the listing position `after`."""
        page = self._page(tenant, "batch", after, limit, ascending=False)
        return page.map(lambda values: record_from(BatchRecord, values))

    def mark_at_risk(self, batch_id: str, at: int) -> bool:
        """Note that a running batch cannot make its deadline; False if it was noted before."""
        return self._update_if(
            batch_pk(batch_id),
            update="SET at_risk_at = :at",
            condition="attribute_exists(pk) AND attribute_not_exists(at_risk_at)",
            values={":at": at},
        )

    def raise_tier(self, batch_id: str, tier: str, from_tier: str) -> bool:
        """Move a batch's shards to `tier` if they are still in `from_tier`; False when
        another sweep moved them first."""
        return self._update_if(
            batch_pk(batch_id),
            update="SET tier = :tier",
            condition="attribute_exists(pk) AND "
            "(tier = :from OR (attribute_not_exists(tier) AND :from = :normal))",
            values={":tier": tier, ":from": from_tier, ":normal": "normal"},
        )

    def set_metadata(self, batch_id: str, metadata: dict[str, str]) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": META}),
            UpdateExpression="SET metadata = :metadata",
            ExpressionAttributeValues=to_item({":metadata": metadata}),
        )

    def _items_under(self, pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        """Every item of partition `pk` whose sort key starts with `sk_prefix`, read
        consistently, page after page."""
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": pk, ":prefix": sk_prefix}),
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                yield from_item(item)

    def _page(
        self,
        tenant: str,
        kind: str,
        cursor: str | None,
        limit: int,
        *,
        ascending: bool,
        filters: Mapping[str, str] | None = None,
    ) -> Page[dict[str, Any]]:
        """Up to `limit` items of a tenant's `kind` from the ByTenant index, past `cursor`,
        with each attribute path of `filters` (`file.purpose`) equal to its value."""
        condition = "tenant_kind = :partition"
        values: dict[str, Any] = {":partition": f"{tenant}#{kind}"}
        if cursor is not None:
            condition += f" AND created_sort {'>' if ascending else '<'} :cursor"
            values[":cursor"] = cursor
        names: dict[str, str] = {}
        tests: list[str] = []
        for i, (path, value) in enumerate((filters or {}).items()):  # `file.purpose`: a path
            parts = {f"#k{i}_{j}": part for j, part in enumerate(path.split("."))}
            names |= parts
            tests.append(f"{'.'.join(parts)} = :k{i}")
            values[f":k{i}"] = value
        filter_expression = " AND ".join(tests)
        items: list[dict[str, Any]] = []
        start_key: Any = None
        while True:
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": BY_TENANT,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": to_item(values),
                "ScanIndexForward": ascending,
                "Limit": limit + 1 - len(items),
            }
            if names:
                request["ExpressionAttributeNames"] = names
                request["FilterExpression"] = filter_expression
            if start_key:
                request["ExclusiveStartKey"] = start_key
            response = self._db.query(**request)
            items += [from_item(item) for item in response["Items"]]
            start_key = response.get("LastEvaluatedKey")
            if len(items) > limit or not start_key:
                return Page(items=items[:limit], has_more=len(items) > limit)

    def active_batches(self, now: int) -> list[BatchRecord]:
        """Every batch not yet terminal: the expiry index holds only those, and none ends
        later than the longest completion window from `now` (a day's margin)."""
        batches = []
        for batch_id in self.overdue_batch_ids(now + MAX_WINDOW_SECONDS + 86400):
            try:  # one item that cannot be read never hides every other batch
                batch = self.get_batch(batch_id)
            except (ValueError, KeyError, TypeError):  # pydantic's ValidationError too
                logger.exception("batch %s cannot be read", batch_id)
                continue
            if batch is not None:
                batches.append(batch)
        return batches

    def overdue_batch_ids(self, now: int) -> list[str]:
        """Batches not yet terminal whose completion window ended before `now` (an index
        query: only active batches are in the index)."""
        ids: list[str] = []
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            IndexName=ACTIVE_BY_EXPIRY,
            KeyConditionExpression="#active = :one AND expires_at < :now",
            ExpressionAttributeNames={"#active": "active"},
            ExpressionAttributeValues=to_item({":one": "1", ":now": now}),
        )
        for page in pages:
            ids.extend(str(from_item(item)["id"]) for item in page["Items"])
        return ids

    def expired_file_ids(self, now: int, limit: int = 1000) -> list[str]:
        """Up to `limit` files whose `expires_at` is past, oldest first (an index query)."""
        return [str(v["id"]) for v in self._past_expiry(FILES_BY_EXPIRY, now + 1, limit)]

    def _past_expiry(self, partition: str, before: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items of the expiry index's `partition` with `expires_at` before
        `before`, oldest first (keys and `id`)."""
        response = self._db.query(
            TableName=self._table,
            IndexName=ACTIVE_BY_EXPIRY,
            KeyConditionExpression="#active = :partition AND expires_at < :before",
            ExpressionAttributeNames={"#active": "active"},
            ExpressionAttributeValues=to_item({":partition": partition, ":before": before}),
            Limit=limit,
        )
        return [from_item(item) for item in response["Items"]]

    def claim_outbox(self, name: str, batch_id: str) -> bool:
        """Take outbox/<name>/ for `batch_id`; False when another batch holds it (claiming
        again for the same batch, a redelivered event, succeeds)."""
        response = unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=to_item({"pk": outbox_pk(name), "sk": META, "batch_id": batch_id}),
            ConditionExpression="attribute_not_exists(pk) OR batch_id = :me",
            ExpressionAttributeValues=to_item({":me": batch_id}),
        )
        return response is not None

    def mark_shards_queued(self, batch_id: str) -> None:
        """The intake sent its shard messages (a redelivered intake event sends none)."""
        self._db.update_item(
            TableName=self._table,
            Key=to_item({"pk": batch_pk(batch_id), "sk": META}),
            UpdateExpression="SET shards_queued = :yes",
            ExpressionAttributeValues=to_item({":yes": True}),
        )

    def count_released(self, batch_id: str, index: int) -> bool:
        """Count shard `index` as let into its queue; False if another writer counted it
        first, or the batch is no longer running."""
        return self._update_if(
            batch_pk(batch_id),
            update="SET shards_released = :next",
            condition="shards_released = :index AND #status = :running",
            names={"#status": "status"},
            values={":next": index + 1, ":index": index, ":running": "in_progress"},
        )
