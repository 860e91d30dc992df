"""The batch service: every stage of a batch's life, one class for handlers and the worker.

Each stage lives in its own file and adds its calls to the one before (the layers, from the
bottom): `service_base` (collaborators, reads, status events), `shard_parts` (result parts),
`shard_run` (running a shard) and `ending` (cancel, expire, poison shards, finalize), `intake`
(validation and shards), `batches` (the API's create and list), `retries`. Handlers and the
worker loop translate an event into one call on `BatchService`.
"""

from __future__ import annotations

from batch_core.batches import ResultPart
from batch_core.intake import DroppedObject, shard_bounds
from batch_core.retries import Retries
from batch_core.shard_parts import ShardOutcome, ShardRun
from batch_core.shard_run import ShardRunning

__all__ = [
    "BatchService",
    "DroppedObject",
    "ResultPart",
    "ShardOutcome",
    "ShardRun",
    "shard_bounds",
]


class BatchService(Retries, ShardRunning):
    """The batch lifecycle over the table, the bucket, the shard queue and the tracker."""
