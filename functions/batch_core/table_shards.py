"""Shard items: put, a leased attempt, part commits with their counts, settlement."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterable
from typing import Any

from batch_core.records import PartCounts, ShardRecord
from batch_core.table_access import TableAccess
from batch_core.table_codec import record_from, record_item, to_item, unless_refused
from batch_core.table_keys import META, batch_pk, shard_sk


class ShardTable:
    """Shard items, each written conditionally so a retried call changes nothing twice."""

    def __init__(self, access: TableAccess) -> None:
        self._access = access
        self._db = access.db
        self._table = access.name

    def put_shards(self, batch_id: str, shards: Iterable[ShardRecord]) -> None:
        requests = [
            {"PutRequest": {"Item": record_item(s, pk=batch_pk(batch_id), sk=shard_sk(s.index))}}
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
        values = self._access.item(batch_pk(batch_id), shard_sk(index), consistent=True)
        return record_from(ShardRecord, values) if values else None

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
        shard_key = to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)})
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "ConditionExpression": "#status = :in_progress",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": to_item({":in_progress": "in_progress"}),
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
                        "ExpressionAttributeValues": to_item(
                            {
                                ":running": "running",
                                ":one": 1,
                                ":done": "done",
                                ":owner": owner,
                                ":until": lease_until,
                                ":now": now,
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
        return self._access.update_if(
            batch_pk(batch_id),
            shard_sk(index),
            update="SET lease_until = :until",
            condition="lease_owner = :owner",
            values={":owner": owner, ":until": lease_until},
        )

    def commit_part(
        self,
        batch_id: str,
        index: int,
        *,
        part_index: int,
        counts: PartCounts,
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
            "cached_tokens :cached, output_tokens :output, request_reused :reused, "
            "gpu_seconds :gpu"
        )
        # A settled shard takes no more parts (every part of it is already counted).
        condition = "parts_committed = :part AND #status <> :done"
        if settle:
            shard_update = (
                "SET parts_committed = :next, #status = :done "
                "ADD completed :completed, failed :failed"
            )
            batch_update += ", shards_pending :minus_one"
        key = to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)})
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key,
                        "UpdateExpression": shard_update,
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": to_item(
                            {
                                ":next": part_index + 1,
                                ":part": part_index,
                                ":completed": counts.completed,
                                ":failed": counts.failed,
                                ":done": "done",
                            }
                        ),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "UpdateExpression": batch_update,
                        "ExpressionAttributeValues": to_item(
                            {
                                ":completed": counts.completed,
                                ":failed": counts.failed,
                                ":input": counts.input_tokens,
                                ":cached": counts.cached_tokens,
                                ":output": counts.output_tokens,
                                ":reused": counts.reused,
                                ":gpu": counts.gpu_seconds,
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
        shards = [
            record_from(ShardRecord, values)
            for values in self._access.items_under(batch_pk(batch_id), "SHARD#")
        ]
        return sorted(shards, key=lambda shard: shard.index)

    def settle_shard(self, batch_id: str, index: int, *, never_ran: int = 0) -> bool:
        """Mark a shard done and count it off the batch's pending shards, exactly once.

        `never_ran`: requests of the shard that end as batch_cancelled/batch_expired lines;
        they are counted as failed in the same transaction."""
        response = unless_refused(
            self._db.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": batch_pk(batch_id), "sk": shard_sk(index)}),
                        "UpdateExpression": "SET #status = :done",
                        "ConditionExpression": "#status <> :done",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": to_item({":done": "done"}),
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"pk": batch_pk(batch_id), "sk": META}),
                        "UpdateExpression": (
                            "ADD shards_pending :minus_one, request_failed :never_ran"
                        ),
                        "ExpressionAttributeValues": to_item(
                            {":minus_one": -1, ":never_ran": never_ran}
                        ),
                    }
                },
            ],
        )
        return response is not None
