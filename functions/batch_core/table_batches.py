"""Batch items: create, read, move between statuses, list, sweep the overdue, claim outboxes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from batch_core.batch_params import MAX_WINDOW_SECONDS
from batch_core.lifecycle import check_move
from batch_core.models import TERMINAL_STATUSES, BatchError, BatchStatus
from batch_core.records import (
    BatchRecord,
)

if TYPE_CHECKING:
    pass

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
    ACTIVE_BY_EXPIRY,
    FILES_BY_EXPIRY,
    META,
    batch_pk,
    listing_keys,
    outbox_pk,
)

logger = logging.getLogger(__name__)


class BatchTable:
    """Batch items and the listings and sweeps over them."""

    def __init__(self, access: TableAccess) -> None:
        self._access = access
        self._db = access.db
        self._table = access.name

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
        values = self._access.item(batch_pk(batch_id), consistent=True)
        return record_from(BatchRecord, values) if values else None

    def transition(
        self,
        batch_id: str,
        *,
        to_status: BatchStatus,
        from_statuses: Iterable[BatchStatus],
        fields: Mapping[str, Any] | None = None,
        errors: list[BatchError] | None = None,
    ) -> BatchRecord | None:
        """Move a batch to `to_status` if it is in one of `from_statuses`: the batch as the
        move left it, or None when it was not in one of them. Only moves the lifecycle lists
        are written (`lifecycle.check_move`).

        A token written with the move tells a retried call (its first attempt applied, the
        answer lost) that the move was its own, so the caller still gets the batch."""
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
            response = self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": batch_pk(batch_id), "sk": META}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={**names, "#status": "status"},
                ExpressionAttributeValues=to_item({**placeholders, **allowed}),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if is_condition_failure(error):
                current: Any = error.response.get("Item") or {}
                if current.get("moved_by", {}).get("S") == token:
                    return record_from(BatchRecord, from_item(current))
                return None
            raise
        return record_from(BatchRecord, from_item(response["Attributes"]))

    def list_batches(self, tenant: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        """A tenant's batches, newest first, past the listing position `after`."""
        page = self._access.page(tenant, "batch", after, limit, ascending=False)
        return page.map(lambda values: record_from(BatchRecord, values))

    def mark_at_risk(self, batch_id: str, at: int) -> BatchRecord | None:
        """Note that a running batch cannot make its deadline: the batch as noted, or None
        if it was noted before."""
        marked = self._access.update_returning(
            batch_pk(batch_id),
            update="SET at_risk_at = :at",
            condition="attribute_exists(pk) AND attribute_not_exists(at_risk_at)",
            values={":at": at},
            returning="ALL_NEW",
        )
        return None if marked is None else record_from(BatchRecord, marked)

    def raise_tier(self, batch_id: str, tier: str, from_tier: str) -> bool:
        """Move a batch's shards to `tier` if they are still in `from_tier`; False when
        another sweep moved them first."""
        return self._access.update_if(
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
        return [str(v["id"]) for v in self._access.past_expiry(FILES_BY_EXPIRY, now + 1, limit)]

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
        return self._access.update_if(
            batch_pk(batch_id),
            update="SET shards_released = :next",
            condition="shards_released = :index AND #status = :running",
            names={"#status": "status"},
            values={":next": index + 1, ":index": index, ":running": "in_progress"},
        )
