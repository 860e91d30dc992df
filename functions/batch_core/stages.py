"""Every stage of a batch's life over one set of clients, each built on first use and each
holding the collaborators it calls by name (openai-python's client of sub-resources).

A handler or the worker depends on one stage: the validate function on `intake`, the worker
on `runner`, finalize and the dead-letter functions on `ending`, the schedule on `sweep`, the
API's routes on `batches`, `retries`, `files` and `webhook_endpoints`, the webhook
function on `webhooks`. Tests build one over moto."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from batch_core.batches import Batches
from batch_core.deps import Deps
from batch_core.ending import Ending
from batch_core.files import FileService
from batch_core.fleet_capacity import FleetCapacity
from batch_core.fleet_scaling import FleetScaling
from batch_core.intake import Intake
from batch_core.messaging import IntakeJobs, ShardQueue, StatusEvents, Tracker, WebhookQueue
from batch_core.model_registry import ModelRegistry, RegistryRules
from batch_core.notices import Notices
from batch_core.repository import BatchRepository
from batch_core.results import Results
from batch_core.retries import Retries
from batch_core.settings import Settings
from batch_core.shard_run import ShardRunner
from batch_core.storage import ObjectStore
from batch_core.sweep import Sweep
from batch_core.tenant_limits import TenantLimitBook
from batch_core.tenant_slots import TenantSlots
from batch_core.turns import Turns
from batch_core.webhook_endpoints import WebhookEndpoints
from batch_core.webhooks import WebhookService


@dataclass(frozen=True)
class Channels:
    """The queues, the tracker and the event bus the stages send to."""

    shard_queue: ShardQueue
    tracker: Tracker
    jobs: IntakeJobs | None = None
    events: StatusEvents | None = None
    webhook_queue: WebhookQueue | None = None
    fleets: FleetCapacity | None = None
    """The workers' scaling (none: nothing here sizes a fleet)."""


class Stages:
    def __init__(self, deps: Deps, channels: Channels) -> None:
        self.deps = deps
        self.channels = channels

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def table(self) -> BatchRepository:
        return self.deps.table

    @property
    def store(self) -> ObjectStore:
        return self.deps.store

    @property
    def shard_queue(self) -> ShardQueue:
        return self.channels.shard_queue

    @cached_property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(
            self.deps.table, clock=self.deps.clock, rules=RegistryRules.of(self.deps.settings)
        )

    @cached_property
    def limits(self) -> TenantLimitBook:
        """Each tenant's limits in force, one cache per process (the rate limiter's too)."""
        return TenantLimitBook(self.deps.table, self.deps.settings, self.deps.clock)

    @cached_property
    def slots(self) -> TenantSlots:
        return TenantSlots(self.deps, self.limits)

    @cached_property
    def webhooks(self) -> WebhookService:
        return WebhookService(
            self.deps.settings, self.deps.table.tenants, self.channels.webhook_queue
        )

    @cached_property
    def webhook_endpoints(self) -> WebhookEndpoints:
        return WebhookEndpoints(self.deps.table.tenants, self.webhooks, clock=self.deps.clock)

    @cached_property
    def notices(self) -> Notices:
        return Notices(self.deps, self.slots, self.channels.events, self.webhooks)

    @cached_property
    def results(self) -> Results:
        return Results(self.deps)

    @cached_property
    def turns(self) -> Turns:
        return Turns(self.deps, self.registry, self.channels.shard_queue, self.notices)

    @cached_property
    def fleet_scaling(self) -> FleetScaling | None:
        fleets = self.channels.fleets
        return FleetScaling(self.deps, self.registry, self.turns, fleets) if fleets else None

    @cached_property
    def ending(self) -> Ending:
        return Ending(self.deps, self.results, self.turns, self.notices, self.channels.tracker)

    @cached_property
    def runner(self) -> ShardRunner:
        return ShardRunner(self.deps, self.results, self.turns, self.notices)

    @cached_property
    def files(self) -> FileService:
        deps = self.deps
        return FileService(deps.settings, deps.table, deps.store, self.channels.jobs, deps.clock)

    @cached_property
    def batches(self) -> Batches:
        return Batches(self.deps, self.slots, self.ending, self.results)

    @cached_property
    def retries(self) -> Retries:
        return Retries(self.deps, self.batches, self.results, self.channels.jobs)

    @cached_property
    def intake(self) -> Intake:
        return Intake(
            self.deps,
            registry=self.registry,
            slots=self.slots,
            turns=self.turns,
            notices=self.notices,
            ending=self.ending,
            tracker=self.channels.tracker,
            files=self.files,
            retries=self.retries,
            fleet_scaling=self.fleet_scaling,
        )

    @cached_property
    def sweep(self) -> Sweep:
        return Sweep(self.ending, self.turns, self.slots, self.files, self.fleet_scaling)
