"""DynamoDB access: the only code that talks to the table, one file per kind of item.

`table_keys` names the keys, `table_codec` turns items to and from DynamoDB's values and
tells a conditional write's refusal from a failure; `table_batches`, `table_shards`,
`table_files`, `table_tenants` and `table_models` hold the calls for each kind of item. Every
write that a retry could repeat is conditional, so a redelivered SQS message or a duplicated
S3 event never changes anything twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_core.table_access import TableAccess
from batch_core.table_batches import BatchTable
from batch_core.table_codec import Page
from batch_core.table_files import FileTable
from batch_core.table_keys import (
    ACTIVE_BY_EXPIRY,
    BY_TENANT,
    FILES_BY_EXPIRY,
    api_key_pk,
    batch_pk,
    file_pk,
    listing_keys,
    outbox_pk,
    shard_sk,
    upload_pk,
    webhook_pk,
)
from batch_core.table_models import ModelTable
from batch_core.table_shards import ShardTable
from batch_core.table_tenants import TenantTable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "ACTIVE_BY_EXPIRY",
    "BY_TENANT",
    "FILES_BY_EXPIRY",
    "BatchRepository",
    "Page",
    "api_key_pk",
    "batch_pk",
    "file_pk",
    "listing_keys",
    "outbox_pk",
    "shard_sk",
    "upload_pk",
    "webhook_pk",
]


class BatchRepository:
    """Batches, their shards, files, uploads, tenants' items and served models in the single
    table: one object per kind of item, over one client."""

    def __init__(self, dynamodb: DynamoDBClient, table_name: str) -> None:
        self.access = TableAccess(dynamodb, table_name)
        self.batches = BatchTable(self.access)
        self.shards = ShardTable(self.access)
        self.files = FileTable(self.access)
        self.tenants = TenantTable(self.access)
        self.models = ModelTable(self.access)
