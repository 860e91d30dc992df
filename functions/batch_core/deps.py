"""What every stage of a batch works over: the settings, the table, the bucket and the clock.

Stages (`intake`, `shard_run`, `ending`, `batches`, `retries`, `sweep`, ...) each hold this
value and the other stages they call, by name; `stages.Stages` builds them all."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_core.errors import NotFoundError
from batch_core.records import BatchRecord
from batch_core.repository import BatchRepository
from batch_core.settings import Settings
from batch_core.storage import ObjectStore


@dataclass(frozen=True)
class Deps:
    """Shared by every stage of one `Stages`; other settings make other `Stages` (several
    stages keep what they derive from the settings)."""

    settings: Settings
    table: BatchRepository
    store: ObjectStore
    clock: Callable[[], float] = field(default=time.time)

    def now(self) -> int:
        return int(self.clock())

    def batch(self, batch_id: str) -> BatchRecord:
        """The batch; NotFoundError when there is none."""
        record = self.table.batches.get_batch(batch_id)
        if record is None:
            raise NotFoundError(f"No batch found with id {batch_id!r}.")
        return record

    def tenant_batch(self, tenant: str, batch_id: str) -> BatchRecord:
        """The tenant's batch; NotFoundError for unknown ids and other tenants' batches alike."""
        record = self.table.batches.get_batch(batch_id)
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"No batch found with id {batch_id!r}.", param="batch_id")
        return record
