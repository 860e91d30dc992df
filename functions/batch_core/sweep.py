"""The expiry sweep (the EventBridge schedule, every 5 minutes): overdue batches expired, expired
Files deleted, tenant slots a crash left behind released, and the deadline checks of running
batches (escalation, held shards let in, at-risk notices, the scaling pressure).

It serves every tenant, so one bad item never stops it: each step is guarded, and so is each
item within a step (a failure is logged, counted and left for the next run). Files are
deleted page after page until none is left or the run's time is nearly spent, so a tenant
cannot create Files faster than the sweep deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from batch_core.ending import Ending
    from batch_core.files import FileService
    from batch_core.fleet_scaling import FleetScaling, Sized
    from batch_core.records import BatchRecord
    from batch_core.tenant_slots import TenantSlots
    from batch_core.turns import Turns

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SAFETY_SECONDS = 20.0
"""What a run keeps in hand: no new item is begun with less time left than this."""
FILE_PAGE = 1000
"""Expired Files read per page of the expiry index."""


@dataclass
class SweepReport:
    """What one run did, and what it could not."""

    expired: list[str] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    released_slots: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    topped_up: dict[str, int] = field(default_factory=dict)
    at_risk: list[str] = field(default_factory=list)
    pressures: dict[str, float] | None = None
    fleets: dict[str, int] = field(default_factory=dict)
    """Each fleet's floor as sized (its scalable target: the workers its work needs now)."""
    """DeadlinePressure by model; None when the running batches could not be read."""
    failures: dict[str, int] = field(default_factory=dict)
    """Items (or whole steps) that raised, by step: logged, and tried again next run."""
    unfinished: list[str] = field(default_factory=list)
    """Steps stopped by the time budget; the next run carries on."""


class Sweep:
    """One run of the sweep over the batches, the tenants' slots and the Files."""

    def __init__(
        self,
        ending: Ending,
        turns: Turns,
        slots: TenantSlots,
        files: FileService,
        fleet_scaling: FleetScaling | None = None,
    ) -> None:
        self.ending = ending
        self.turns = turns
        self.slots = slots
        self.files = files
        self.fleet_scaling = fleet_scaling

    def run(self, time_left: Callable[[], float]) -> SweepReport:
        """Every step, each guarded; `time_left` is the seconds the run still has (the
        Lambda context's remaining time)."""
        report = SweepReport()
        step = _Steps(report, time_left)
        ending, turns, slots = self.ending, self.turns, self.slots
        overdue = step.read("expire", ending.overdue_batch_ids)
        report.expired = [r.id for r in step.each("expire", overdue, ending.end_overdue)]
        past = step.read("release_slots", slots.past_expiry)
        released = step.each("release_slots", past, slots.release_if_ended)
        report.released_slots = [batch_id for batch_id in released if batch_id is not None]
        running = step.once("running", turns.running_batches)
        for batch in running or []:  # the deadline checks, one batch at a time
            if step.out_of_time("deadlines"):
                break
            report.escalated += step.once("escalate", turns.escalate_near_deadlines, [batch]) or []
            report.topped_up.update(step.once("top_up", turns.top_up_shards, [batch]) or {})
            report.at_risk += step.once("at_risk", turns.flag_at_risk, [batch]) or []
        if running is not None:  # unread, the pressure is unknown, not zero
            report.pressures = step.once("pressures", turns.deadline_pressures, 3600, running)
            report.fleets = self._size_fleets(step, running)
        # Last: what a tenant can make more of never takes the time of the steps above.
        report.deleted_files = self._delete_files(step)
        return report

    def _size_fleets(self, step: _Steps, running: list[BatchRecord]) -> dict[str, int]:
        """Each fleet's workers sized to its running batches, one fleet at a time."""
        scaling = self.fleet_scaling
        if scaling is None:
            return {}
        fleets = step.read("fleets", scaling.fleets, running)
        sized: Iterable[Sized | None] = step.each("fleets", fleets, scaling.size)
        return {s.target: s.minimum for s in sized if s is not None}

    def _delete_files(self, step: _Steps) -> list[str]:
        """Expired Files, a page at a time until none is left (or time runs short). A File
        that fails stays in the index: a page of nothing but those ends the run's share."""
        deleted: list[str] = []
        failed: set[str] = set()
        while not step.out_of_time("delete_files"):
            page = step.read("delete_files", self.files.expired_file_ids, FILE_PAGE)
            fresh = [file_id for file_id in page if file_id not in failed]
            if not fresh:
                break
            for file_id in fresh:
                if step.out_of_time("delete_files"):
                    break
                if step.once("delete_files", self.files.delete_expired_file, file_id) is None:
                    failed.add(file_id)
                else:
                    deleted.append(file_id)
            if len(page) < FILE_PAGE:
                break
        return deleted


class _Steps:
    """The guards of one run: each call or item in a try, failures counted by step."""

    def __init__(self, report: SweepReport, time_left: Callable[[], float]) -> None:
        self.report = report
        self.time_left = time_left

    def out_of_time(self, step: str) -> bool:
        if self.time_left() > SAFETY_SECONDS:
            return False
        if step not in self.report.unfinished:
            self.report.unfinished.append(step)
            logger.warning("sweep: out of time in %s; the next run carries on", step)
        return True

    def failed(self, step: str) -> None:
        self.report.failures[step] = self.report.failures.get(step, 0) + 1

    def once(self, step: str, call: Callable[..., R], *args: object) -> R | None:
        try:
            return call(*args)
        except Exception:
            logger.exception("sweep: %s failed", step)
            self.failed(step)
            return None

    def read(self, step: str, call: Callable[..., list[T]], *args: object) -> list[T]:
        return self.once(step, call, *args) or []

    def each(self, step: str, items: Iterable[T], act: Callable[[T], R]) -> Iterable[R]:
        for item in items:
            if self.out_of_time(step):
                return
            try:
                yield act(item)
            except Exception:
                logger.exception("sweep: %s failed for %s", step, item)
                self.failed(step)
