"""DynamoDB access: the only module that talks to the table.

Every write that a retry could repeat is conditional, so a redelivered SQS message or a
duplicated S3 event never changes anything twice.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from batch_core.models import TERMINAL_STATUSES, BatchError, FileObject
from batch_core.records import (
    ApiKeyRecord,
    BatchRecord,
    FileRecord,
    ShardRecord,
    Upload,
    UploadPart,
    UploadPartRecord,
    UploadRecord,
    WebhookRecord,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

META = "META"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def batch_pk(batch_id: str) -> str:
    return f"BATCH#{batch_id}"


def shard_sk(index: int) -> str:
    return f"SHARD#{index:05d}"


def file_pk(file_id: str) -> str:
    return f"FILE#{file_id}"


def webhook_pk(endpoint_id: str) -> str:
    return f"WEBHOOK#{endpoint_id}"


def upload_pk(upload_id: str) -> str:
    return f"UPLOAD#{upload_id}"


def outbox_pk(name: str) -> str:
    return f"OUTBOX#{name}"


def api_key_pk(key_hash: str) -> str:
    return f"APIKEY#{key_hash}"


def listing_keys(tenant: str, kind: str, object_id: str) -> dict[str, str]:
    """The ByTenant index's keys: one partition per tenant and kind, sorted by creation time
    in nanoseconds (`created_at` has whole seconds only; ids are not time-ordered)."""
    return {
        "tenant_kind": f"{tenant}#{kind}",
        "created_sort": f"{time.time_ns():020d}#{object_id}",
    }


@dataclass(frozen=True)
class Page:
    """One page of a listing: the items' raw values, and whether more follow."""

    items: list[dict[str, Any]]
    has_more: bool


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_condition_failure(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


def _unless_refused(call: Callable[..., Any], **request: Any) -> Any | None:
    """`call(**request)`'s response, or None when the write's condition refused it (a
    duplicate, a moved status, a taken lease): the one place a conditional write's "no" is
    told from a failure."""
    try:
        return call(**request)
    except ClientError as error:
        if _is_condition_failure(error):
            return None
        raise


ACTIVE_BY_EXPIRY = "ActiveByExpiry"
BY_TENANT = "ByTenant"
FILES_BY_EXPIRY = "file"
"""The expiry index's partition of File items (batches not yet ended are under "1")."""


class BatchRepository:
    """Batches, their shards and files in the single table."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    # -- batches -----------------------------------------------------------------------

    def create_batch(self, record: BatchRecord) -> bool:
        """Store a new batch; False when a batch with this id already exists."""
        values = record.model_dump(exclude={"errors"})
        listing = listing_keys(record.tenant, "batch", record.id)
        item = _to_item({"pk": batch_pk(record.id), "sk": META, **values, **listing})
        response = _unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        return response is not None

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        response = self._db.get_item(
            TableName=self._table,
            Key=_to_item({"pk": batch_pk(batch_id), "sk": META}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        return self._batch_from(_from_item(item))

    @staticmethod
    def _batch_from(values: dict[str, Any]) -> BatchRecord:
        errors = values.pop("errors_json", None)
        if errors:
            values["errors"] = [BatchError.model_validate(e) for e in json.loads(errors)]
        return BatchRecord.model_validate(values)

    def transition(
        self,
        batch_id: str,
        *,
        to_status: str,
        from_statuses: Iterable[str],
        fields: Mapping[str, Any] | None = None,
        errors: list[BatchError] | None = None,
    ) -> bool:
        """Move a batch to `to_status` if it is in one of `from_statuses`; False otherwise.

        A token written with the move tells a retried call (its first attempt applied, the
        answer lost) that the move was its own, so the caller still sees True."""
        token = uuid.uuid4().hex
        values: dict[str, Any] = {"status": to_status, **(fields or {}), "moved_by": token}
        if to_status in TERMINAL_STATUSES:
            values["active"] = None  # leaves the index of batches that can expire
        if errors is not None:
            values["errors_json"] = json.dumps([e.model_dump() for e in errors])
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
                Key=_to_item({"pk": batch_pk(batch_id), "sk": META}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={**names, "#status": "status"},
                ExpressionAttributeValues=_to_item({**placeholders, **allowed}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _is_condition_failure(error):
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
            Key=_to_item({"pk": pk, "sk": META}),
            ProjectionExpression="tenant_kind, created_sort",
        )
        values = _from_item(response.get("Item") or {})
        if values.get("tenant_kind") != f"{tenant}#{kind}":
            return None
        position: str = values["created_sort"]
        return position

    def list_batches(
        self, tenant: str, *, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        """A tenant's batches, newest first, past the listing position `after`."""
        page = self._page(tenant, "batch", after, limit, ascending=False)
        return [self._batch_from(values) for values in page.items], page.has_more

    def set_metadata(self, batch_id: str, metadata: dict[str, str]) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=_to_item({"pk": batch_pk(batch_id), "sk": META}),
            UpdateExpression="SET metadata = :metadata",
            ExpressionAttributeValues=_to_item({":metadata": metadata}),
        )

    def _page(
        self,
        tenant: str,
        kind: str,
        cursor: str | None,
        limit: int,
        *,
        ascending: bool,
        filters: Mapping[str, str] | None = None,
    ) -> Page:
        """Up to `limit` items of a tenant's `kind` from the ByTenant index, past `cursor`."""
        condition = "tenant_kind = :partition"
        values: dict[str, Any] = {":partition": f"{tenant}#{kind}"}
        if cursor is not None:
            condition += f" AND created_sort {'>' if ascending else '<'} :cursor"
            values[":cursor"] = cursor
        names = {f"#k{i}": name for i, name in enumerate(filters or {})}
        filter_expression = " AND ".join(f"#k{i} = :k{i}" for i in range(len(names)))
        values.update({f":k{i}": value for i, value in enumerate((filters or {}).values())})
        items: list[dict[str, Any]] = []
        start_key: Any = None
        while True:
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": BY_TENANT,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": _to_item(values),
                "ScanIndexForward": ascending,
                "Limit": limit + 1 - len(items),
            }
            if names:
                request["ExpressionAttributeNames"] = names
                request["FilterExpression"] = filter_expression
            if start_key:
                request["ExclusiveStartKey"] = start_key
            response = self._db.query(**request)
            items += [_from_item(item) for item in response["Items"]]
            start_key = response.get("LastEvaluatedKey")
            if len(items) > limit or not start_key:
                return Page(items=items[:limit], has_more=len(items) > limit)

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
            ExpressionAttributeValues=_to_item({":one": "1", ":now": now}),
        )
        for page in pages:
            ids.extend(str(_from_item(item)["id"]) for item in page["Items"])
        return ids

    def expired_file_ids(self, now: int, limit: int = 1000) -> list[str]:
        """Up to `limit` files whose `expires_at` is past, oldest first (an index query)."""
        response = self._db.query(
            TableName=self._table,
            IndexName=ACTIVE_BY_EXPIRY,
            KeyConditionExpression="#active = :files AND expires_at <= :now",
            ExpressionAttributeNames={"#active": "active"},
            ExpressionAttributeValues=_to_item({":files": FILES_BY_EXPIRY, ":now": now}),
            Limit=limit,
        )
        return [str(_from_item(item)["id"]) for item in response["Items"]]

    def claim_outbox(self, name: str, batch_id: str) -> bool:
        """Take outbox/<name>/ for `batch_id`; False when another batch holds it (claiming
        again for the same batch, a redelivered event, succeeds)."""
        response = _unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=_to_item({"pk": outbox_pk(name), "sk": META, "batch_id": batch_id}),
            ConditionExpression="attribute_not_exists(pk) OR batch_id = :me",
            ExpressionAttributeValues=_to_item({":me": batch_id}),
        )
        return response is not None

    def mark_shards_queued(self, batch_id: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=_to_item({"pk": batch_pk(batch_id), "sk": META}),
            UpdateExpression="SET shards_queued = :yes",
            ExpressionAttributeValues=_to_item({":yes": True}),
        )

    # -- shards ------------------------------------------------------------------------

    def put_shards(self, batch_id: str, shards: Iterable[ShardRecord]) -> None:
        requests = [
            {
                "PutRequest": {
                    "Item": _to_item(
                        {"pk": batch_pk(batch_id), "sk": shard_sk(s.index), **s.model_dump()}
                    )
                }
            }
            for s in shards
        ]
        for start in range(0, len(requests), 25):
            pending: Any = {self._table: requests[start : start + 25]}
            for attempt in itertools.count():
                response = self._db.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or None
                if not pending:
                    break
                # Unprocessed items are DynamoDB throttling us: back off, with jitter.
                time.sleep(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))

    def get_shard(self, batch_id: str, index: int) -> ShardRecord | None:
        response = self._db.get_item(
            TableName=self._table,
            Key=_to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        values = _from_item(item)
        return ShardRecord.model_validate(values)

    def begin_shard_attempt(
        self,
        batch_id: str,
        index: int,
        *,
        owner: str = "",
        lease_until: float = 0,
        now: float = 0,
    ) -> ShardRecord | None:
        """Take a shard that is not done and not leased by someone else (its lease expired, or
        there is none), counting one more attempt, in one transaction with a check that the
        batch is still in progress: once a batch is cancelling or expiring no attempt can
        begin, so the end of the batch only waits for attempts already holding a lease.
        None if the batch stopped, the shard is done or it is held elsewhere."""
        shard_key = _to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)})
        response = _unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": _to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "ConditionExpression": "#status = :in_progress",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _to_item({":in_progress": "in_progress"}),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": shard_key,
                        "UpdateExpression": (
                            "SET #status = :running, lease_owner = :owner, "
                            "lease_until = :until ADD attempts :one"
                        ),
                        "ConditionExpression": (
                            "attribute_exists(pk) AND #status <> :done AND ("
                            "attribute_not_exists(lease_until) OR lease_until < :now "
                            "OR lease_owner = :owner)"
                        ),
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":running": "running",
                                ":one": 1,
                                ":done": "done",
                                ":owner": owner,
                                ":until": Decimal(str(lease_until)),
                                ":now": Decimal(str(now)),
                            }
                        ),
                    }
                },
            ],
        )
        if response is None:
            return None
        return self.get_shard(batch_id, index)

    def renew_lease(self, batch_id: str, index: int, *, owner: str, lease_until: float) -> bool:
        """Extend (or with `lease_until=0`, give up) our lease; False if it is not ours now."""
        response = _unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=_to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)}),
            UpdateExpression="SET lease_until = :until",
            ConditionExpression="lease_owner = :owner",
            ExpressionAttributeValues=_to_item(
                {":owner": owner, ":until": Decimal(str(lease_until))}
            ),
        )
        return response is not None

    def commit_part(
        self,
        batch_id: str,
        index: int,
        *,
        part_index: int,
        completed: int,
        failed: int,
        input_tokens: int,
        cached_tokens: int,
        output_tokens: int,
        settle: bool = False,
    ) -> bool:
        """Add one part's counts to the shard and the batch, exactly once per part.

        The shard's `parts_committed` must equal `part_index`: a part already counted (a
        redelivered message re-committing it) fails the condition and changes nothing.
        With `settle` this is the shard's last part: the shard is marked done and counted
        off the batch's pending shards in the same transaction (one write instead of two).
        """
        shard_update = "SET parts_committed = :next ADD completed :completed, failed :failed"
        batch_update = (
            "ADD request_completed :completed, request_failed :failed, input_tokens :input, "
            "cached_tokens :cached, output_tokens :output"
        )
        # A settled shard takes no more parts (every part of it is already counted).
        condition = "parts_committed = :part AND #status <> :done"
        if settle:
            shard_update = (
                "SET parts_committed = :next, #status = :done "
                "ADD completed :completed, failed :failed"
            )
            batch_update += ", shards_pending :minus_one"
        key = _to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)})
        response = _unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key,
                        "UpdateExpression": shard_update,
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":next": part_index + 1,
                                ":part": part_index,
                                ":completed": completed,
                                ":failed": failed,
                                ":done": "done",
                            }
                        ),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "UpdateExpression": batch_update,
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":completed": completed,
                                ":failed": failed,
                                ":input": input_tokens,
                                ":cached": cached_tokens,
                                ":output": output_tokens,
                                **({":minus_one": -1} if settle else {}),
                            }
                        ),
                    }
                },
            ],
        )
        return response is not None

    def list_shards(self, batch_id: str) -> list[ShardRecord]:
        """Every shard item of a batch, in index order."""
        shards: list[ShardRecord] = []
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :shard)",
            ExpressionAttributeValues=_to_item({":pk": batch_pk(batch_id), ":shard": "SHARD#"}),
            ConsistentRead=True,
        )
        for page in pages:
            shards.extend(ShardRecord.model_validate(_from_item(i)) for i in page["Items"])
        return sorted(shards, key=lambda shard: shard.index)

    def settle_shard(self, batch_id: str, index: int, *, never_ran: int = 0) -> bool:
        """Mark a shard done and count it off the batch's pending shards, exactly once.

        `never_ran`: requests of the shard that end as batch_cancelled/batch_expired lines;
        they are counted as failed in the same transaction."""
        response = _unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)}),
                        "UpdateExpression": "SET #status = :done",
                        "ConditionExpression": "#status <> :done",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _to_item({":done": "done"}),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "UpdateExpression": (
                            "ADD shards_pending :minus_one, request_failed :never_ran"
                        ),
                        "ExpressionAttributeValues": _to_item(
                            {":minus_one": -1, ":never_ran": never_ran}
                        ),
                    }
                },
            ],
        )
        return response is not None

    # -- files -------------------------------------------------------------------------

    def put_file(self, record: FileRecord) -> None:
        file = record.file
        values = {
            "pk": file_pk(file.id),
            "sk": META,
            "s3_key": record.s3_key,
            "batch_id": record.batch_id,
            "tenant": record.tenant,
            **listing_keys(record.tenant, "file", file.id),
            **{f"file_{k}": v for k, v in file.model_dump().items()},
        }
        if file.expires_at is not None:  # in the expiry index, under its own partition
            values |= {"id": file.id, "active": FILES_BY_EXPIRY, "expires_at": file.expires_at}
        self._db.put_item(TableName=self._table, Item=_to_item(values))

    def wait_for_file(self, file_id: str, batch_id: str) -> bool:
        """Note that `batch_id` waits for the file's bytes (its upload is being joined); False
        when the file is no longer `uploaded` (the join finished: copy it now)."""
        response = _unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=_to_item({"pk": file_pk(file_id), "sk": META}),
            UpdateExpression="SET waiting_batches = list_append("
            "if_not_exists(waiting_batches, :empty), :batch)",
            ConditionExpression="file_status = :uploaded",
            ExpressionAttributeValues=_to_item(
                {":empty": [], ":batch": [batch_id], ":uploaded": "uploaded"}
            ),
        )
        return response is not None

    def finish_file(
        self,
        file_id: str,
        *,
        status: str,
        status_details: str | None = None,
        size: int | None = None,
    ) -> list[str]:
        """Move an `uploaded` file to `status` (and its `bytes` to `size`, when given);
        returns the batches that waited for it (in the same write, so none is missed). Empty
        when it was already finished."""
        values: dict[str, Any] = {":status": status, ":uploaded": "uploaded"}
        update = "SET file_status = :status"
        if size is not None:
            update += ", file_bytes = :size"
            values[":size"] = size
        if status_details:
            update += ", file_status_details = :details"
            values[":details"] = status_details
        response = _unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=_to_item({"pk": file_pk(file_id), "sk": META}),
            UpdateExpression=update + " REMOVE waiting_batches",
            ConditionExpression="file_status = :uploaded",
            ExpressionAttributeValues=_to_item(values),
            ReturnValues="UPDATED_OLD",
        )
        if response is None:
            return []
        old = _from_item(response.get("Attributes") or {})
        return [str(batch_id) for batch_id in old.get("waiting_batches") or []]

    def get_file(self, file_id: str) -> FileRecord | None:
        response = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": file_pk(file_id), "sk": META})
        )
        item = response.get("Item")
        return self._file_from(_from_item(item)) if item else None

    @staticmethod
    def _file_from(values: dict[str, Any]) -> FileRecord:
        file_values = {k[5:]: v for k, v in values.items() if k.startswith("file_")}
        return FileRecord(
            file=FileObject.model_validate(file_values),
            s3_key=values["s3_key"],
            batch_id=values.get("batch_id"),
            tenant=values.get("tenant", "default"),
        )

    def list_files(
        self,
        tenant: str,
        *,
        after: str | None,
        limit: int,
        ascending: bool,
        purpose: str | None,
    ) -> tuple[list[FileRecord], bool]:
        """A tenant's files in creation order (or reversed), past the listing position."""
        filters = {"file_purpose": purpose} if purpose else None
        page = self._page(tenant, "file", after, limit, ascending=ascending, filters=filters)
        return [self._file_from(values) for values in page.items], page.has_more

    def delete_file(self, file_id: str) -> bool:
        """Forget a file; False if it was not there."""
        response = self._db.delete_item(
            TableName=self._table,
            Key=_to_item({"pk": file_pk(file_id), "sk": META}),
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))

    # -- webhook endpoints --------------------------------------------------------------

    def put_webhook(self, record: WebhookRecord) -> None:
        values = {
            "pk": webhook_pk(record.endpoint.id),
            "sk": META,
            "tenant": record.tenant,
            "document": record.model_dump_json(),
            **listing_keys(record.tenant, "webhook", record.endpoint.id),
        }
        self._db.put_item(TableName=self._table, Item=_to_item(values))

    def get_webhook(self, endpoint_id: str) -> WebhookRecord | None:
        response = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": webhook_pk(endpoint_id), "sk": META})
        )
        item = response.get("Item")
        return WebhookRecord.model_validate_json(_from_item(item)["document"]) if item else None

    def list_webhooks(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[WebhookRecord], bool]:
        """A tenant's endpoints, newest first, past the listing position `after`."""
        page = self._page(tenant, "webhook", after, limit, ascending=False)
        records = [WebhookRecord.model_validate_json(v["document"]) for v in page.items]
        return records, page.has_more

    def delete_webhook(self, endpoint_id: str) -> None:
        self._db.delete_item(
            TableName=self._table, Key=_to_item({"pk": webhook_pk(endpoint_id), "sk": META})
        )

    # -- uploads (a large file in parts) ------------------------------------------------

    def put_upload(self, record: UploadRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=_to_item(
                {
                    "pk": upload_pk(record.upload.id),
                    "sk": META,
                    "document": record.model_dump_json(),
                }
            ),
        )

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        response = self._db.get_item(
            TableName=self._table,
            Key=_to_item({"pk": upload_pk(upload_id), "sk": META}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        return UploadRecord.model_validate_json(_from_item(item)["document"])

    def reserve_upload_bytes(self, upload_id: str, size: int, limit: int) -> bool:
        """Count `size` more bytes of parts against the upload's declared `limit`; False
        when they would not fit (the part is refused before it is stored)."""
        if size > limit:
            return False
        response = _unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=_to_item({"pk": upload_pk(upload_id), "sk": META}),
            UpdateExpression="ADD received :size",
            ConditionExpression="attribute_exists(pk) AND "
            "(attribute_not_exists(received) OR received <= :room)",
            ExpressionAttributeValues=_to_item({":size": size, ":room": limit - size}),
        )
        return response is not None

    def finish_upload(self, record: UploadRecord, upload: Upload) -> bool:
        """Move a pending upload to its final state (completed or cancelled), once."""
        response = _unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=_to_item(
                {
                    "pk": upload_pk(upload.id),
                    "sk": META,
                    "status": upload.status,
                    "document": record.model_copy(update={"upload": upload}).model_dump_json(),
                }
            ),
            ConditionExpression="attribute_not_exists(#status)",
            ExpressionAttributeNames={"#status": "status"},
        )
        return response is not None

    def put_upload_part(self, record: UploadPartRecord) -> None:
        part: UploadPart = record.part
        self._db.put_item(
            TableName=self._table,
            Item=_to_item(
                {
                    "pk": upload_pk(part.upload_id),
                    "sk": f"PART#{part.id}",
                    "document": record.model_dump_json(),
                }
            ),
        )

    def list_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        parts: list[UploadPartRecord] = []
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :part)",
            ExpressionAttributeValues=_to_item({":pk": upload_pk(upload_id), ":part": "PART#"}),
            ConsistentRead=True,
        )
        for page in pages:
            parts += [
                UploadPartRecord.model_validate_json(_from_item(item)["document"])
                for item in page["Items"]
            ]
        return parts

    # -- per-tenant request rate --------------------------------------------------------

    def take_request_slot(self, tenant: str, window: int, limit: int, expires_at: int) -> bool:
        """Count one request of `tenant` in the time window `window`; False when `limit`
        were already counted there. One conditional write; the item expires by TTL."""
        response = _unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=_to_item({"pk": f"RATE#{tenant}", "sk": f"{window:012d}"}),
            UpdateExpression="ADD requests :one SET #ttl = :ttl",
            ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues=_to_item({":one": 1, ":limit": limit, ":ttl": expires_at}),
        )
        return response is not None

    # -- API keys ------------------------------------------------------------------------

    def put_api_key(self, record: ApiKeyRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=_to_item({"pk": api_key_pk(record.key_hash), "sk": META, **record.model_dump()}),
        )

    def delete_api_key(self, key_hash: str) -> bool:
        response = self._db.delete_item(
            TableName=self._table,
            Key=_to_item({"pk": api_key_pk(key_hash), "sk": META}),
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        response = self._db.get_item(
            TableName=self._table, Key=_to_item({"pk": api_key_pk(key_hash), "sk": META})
        )
        item = response.get("Item")
        return ApiKeyRecord.model_validate(_from_item(item)) if item else None
