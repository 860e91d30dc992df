"""The table's own calls, shared by every kind of item (`table_batches`, `table_shards`,
`table_files`, `table_tenants`, `table_models` each hold one): read, delete and conditionally
update one item, read a partition, page a tenant's listing, read the expiry index."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from batch_core.table_codec import Page, from_item, to_item, unless_refused
from batch_core.table_keys import ACTIVE_BY_EXPIRY, BY_TENANT, META, batch_pk, file_pk, webhook_pk

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class TableAccess:
    """One DynamoDB table through one client."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self.db = dynamodb
        self.name = table_name

    def item(self, pk: str, sk: str = META, *, consistent: bool = False) -> dict[str, Any] | None:
        """One item's plain values; None when there is none."""
        response = self.db.get_item(
            TableName=self.name, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=consistent
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def delete(self, pk: str, sk: str = META) -> bool:
        """Delete one item; False if it was not there."""
        response = self.db.delete_item(
            TableName=self.name, Key=to_item({"pk": pk, "sk": sk}), ReturnValues="ALL_OLD"
        )
        return bool(response.get("Attributes"))

    def update_if(
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
        moved = self.update_returning(
            pk, sk, update=update, condition=condition, values=values, names=names
        )
        return moved is not None

    def update_returning(
        self,
        pk: str,
        sk: str = META,
        *,
        update: str,
        condition: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
        returning: Literal["NONE", "ALL_NEW", "UPDATED_NEW"] = "NONE",
    ) -> dict[str, Any] | None:
        """Update one item if `condition` holds: the values `returning` asks for (empty for
        NONE); None when DynamoDB refused it."""
        response = unless_refused(
            self.db.update_item,
            TableName=self.name,
            Key=to_item({"pk": pk, "sk": sk}),
            UpdateExpression=update,
            ConditionExpression=condition,
            **({"ExpressionAttributeNames": dict(names)} if names else {}),
            ExpressionAttributeValues=to_item(dict(values)),
            ReturnValues=returning,
        )
        return None if response is None else from_item(response.get("Attributes") or {})

    def items_under(self, pk: str, sk_prefix: str) -> Iterator[dict[str, Any]]:
        """Every item of partition `pk` whose sort key starts with `sk_prefix`, read
        consistently, page after page."""
        pages = self.db.get_paginator("query").paginate(
            TableName=self.name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": pk, ":prefix": sk_prefix}),
            ConsistentRead=True,
        )
        for page in pages:
            for item in page["Items"]:
                yield from_item(item)

    def page(
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
                "TableName": self.name,
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
            response = self.db.query(**request)
            items += [from_item(item) for item in response["Items"]]
            start_key = response.get("LastEvaluatedKey")
            if len(items) > limit or not start_key:
                return Page(items=items[:limit], has_more=len(items) > limit)

    def past_expiry(self, partition: str, before: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items of the expiry index's `partition` with `expires_at` before
        `before`, oldest first (keys and `id`)."""
        response = self.db.query(
            TableName=self.name,
            IndexName=ACTIVE_BY_EXPIRY,
            KeyConditionExpression="#active = :partition AND expires_at < :before",
            ExpressionAttributeNames={"#active": "active"},
            ExpressionAttributeValues=to_item({":partition": partition, ":before": before}),
            Limit=limit,
        )
        return [from_item(item) for item in response["Items"]]

    def listing_position(self, tenant: str, kind: str, object_id: str) -> str | None:
        """Where a tenant's batch or file sits in its listing (a page cursor); None if the
        object does not exist or is another tenant's."""
        pk = {"batch": batch_pk, "file": file_pk, "webhook": webhook_pk}[kind](object_id)
        response = self.db.get_item(
            TableName=self.name,
            Key=to_item({"pk": pk, "sk": META}),
            ProjectionExpression="tenant_kind, created_sort",
        )
        values = from_item(response.get("Item") or {})
        if values.get("tenant_kind") != f"{tenant}#{kind}":
            return None
        position: str = values["created_sort"]
        return position
