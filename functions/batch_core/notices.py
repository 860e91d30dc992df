"""What is told when a batch moves: the status metric, the EventBridge event, the tenant's
webhooks, the outbox's batch.json and result copies of a dropped batch. Every notice is
best-effort alike: a failed one is logged and never fails, or stops, what told it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from batch_core import s3keys
from batch_core.batch_metrics import count_cost, count_status
from batch_core.deps import Deps
from batch_core.messaging import StatusEvents
from batch_core.models import TERMINAL_STATUSES
from batch_core.records import BatchRecord
from batch_core.tenant_slots import TenantSlots
from batch_core.webhooks import WebhookService

logger = logging.getLogger(__name__)


def _guarded(what: str, record: BatchRecord, call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:
        logger.exception("could not %s of %s", what, record.id)


class Notices:
    def __init__(
        self,
        deps: Deps,
        slots: TenantSlots,
        events: StatusEvents | None = None,
        webhooks: WebhookService | None = None,
    ) -> None:
        self.deps = deps
        self.slots = slots
        self.events = events
        self.webhooks = webhooks

    def moved(self, record: BatchRecord) -> None:
        """The batch reached a new status (in_progress or a terminal one): counted, its
        tenant's slot freed when it ended, the status event and webhooks sent."""
        _guarded("count the status", record, lambda: count_status(record.status))
        ended = record.status in TERMINAL_STATUSES
        if ended:
            _guarded("count the cost", record, lambda: count_cost(record))
            self.slots.release(record)
            if record.shards_let_in < record.shards_total:  # ended holding shards back
                _guarded(
                    "forget its held shards",
                    record,
                    lambda: self.deps.table.tenants.release_held(record.tenant, record.id),
                )
        events, webhooks = self.events, self.webhooks
        if events is not None:
            _guarded(
                "publish the status event",
                record,
                lambda: events.publish(record.to_batch().model_dump(mode="json")),
            )
        if webhooks is not None and ended:
            _guarded("queue the webhooks", record, lambda: webhooks.batch_ended(record))

    def at_risk(self, record: BatchRecord) -> None:
        """The batch cannot make its deadline (marked once, so never told twice)."""
        events, webhooks = self.events, self.webhooks
        if events is not None:
            _guarded(
                "publish the at-risk event",
                record,
                lambda: events.publish(
                    record.to_batch().model_dump(mode="json"), detail_type=events.AT_RISK
                ),
            )
        if webhooks is not None:
            _guarded("queue the at-risk webhooks", record, lambda: webhooks.batch_at_risk(record))

    def outbox(self, record: BatchRecord) -> None:
        """Keep outbox/<name>/batch.json current for a batch that came in as a dropped file
        (the next change of the batch writes it again)."""
        name = record.outbox_name
        if not name:
            return
        store = self.deps.store
        _guarded(
            "write the outbox batch.json",
            record,
            lambda: store.put_json(
                s3keys.outbox_key(name, "batch.json"), record.to_batch().model_dump(mode="json")
            ),
        )

    def mirror_results(self, record: BatchRecord) -> None:
        """Copies of an ended dropped batch's output and error files in its outbox, for the
        dropper's convenience: the batch ends without them."""
        name = record.outbox_name
        if not name:
            return
        for file_id, filename in (
            (record.output_file_id, "output.jsonl"),
            (record.error_file_id, "errors.jsonl"),
        ):
            if file_id:
                copy = partial(
                    self.deps.store.copy,
                    s3keys.file_key(file_id),
                    s3keys.outbox_key(name, filename),
                )
                _guarded(f"copy {filename} to the outbox", record, copy)
