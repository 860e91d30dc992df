"""Each worker fleet scaled out to its work (issue 27): the count `fleet_sizing` computes, set
as the fleet's minimum capacity, which Application Auto Scaling applies at once.

Two callers, as the template wires them:
- the sweep (every 5 minutes) sizes every fleet from all its running batches, and lowers a
  floor the work no longer needs (to zero once none is left: the scale-in alarm then stops
  the workers after 15 idle minutes, as before);
- intake sizes the fleet of a batch it has just started from that batch alone, and only
  raises the floor: a fleet at zero starts its first worker at once, and a big urgent batch
  gets its workers without waiting for the sweep.

A fleet is the stack's own workers (WORKER_CLUSTER: batches of models not in the registry) or
a worker-fleet stack's (its registry entry's `scaling_target`). A fleet that cannot be read
or set is logged and left to the next run; one fleet never stops another's sizing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_core.deps import Deps
from batch_core.fleet_capacity import Capacity, FleetCapacity
from batch_core.fleet_sizing import DueWork, desired_workers, engines_per_worker
from batch_core.model_registry import ModelRegistry
from batch_core.records import BatchRecord
from batch_core.turns import Turns

logger = logging.getLogger(__name__)

READ_AGAIN_SECONDS = 60.0
"""How long intake trusts a fleet's capacity it read (a burst of small batches reads it once a
minute per process, not once a batch: Application Auto Scaling's API rate is low)."""
WITHOUT_DEADLINE_SECONDS = 24 * 3600
"""A running batch's deadline when it has none recorded (never, in practice)."""


@dataclass(frozen=True)
class FleetWork:
    """One fleet's running batches, as the sweep sizes it."""

    target: str
    model: str | None
    """The model its speed is read for (None: the stack's own workers)."""
    engines: int = 1
    """Shards one of its workers runs at once."""
    cold_start_seconds: int = 0
    """0: FLEET_COLD_START_SECONDS."""
    batches: list[BatchRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Sized:
    target: str
    minimum: int
    """The floor it has now (set by this run, or already there)."""
    changed: bool


@dataclass
class FleetScaling:
    deps: Deps
    registry: ModelRegistry
    turns: Turns
    capacity: FleetCapacity
    monotonic: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[float, Capacity]] = field(default_factory=dict)
    _own_target: tuple[float, str | None] | None = None
    """The stack's own target as last looked up: kept once found, looked up again a
    minute after it was not."""

    # -- which fleet ------------------------------------------------------------------------

    def own_target(self) -> str | None:
        """The stack's own workers' scalable target (none without WORKER_CLUSTER)."""
        cluster = self.deps.settings.worker_cluster
        if not cluster:
            return None
        now, looked = self.monotonic(), self._own_target
        if looked is None or (looked[1] is None and now - looked[0] > READ_AGAIN_SECONDS):
            looked = self._own_target = (now, self.capacity.target_of_cluster(cluster))
        return looked[1]

    def fleet_of(self, model: str | None) -> FleetWork | None:
        """The fleet that runs `model`'s shards (none to size: a registered model without a
        scaling target, or no workers of the stack's own)."""
        served = self.registry.served(model)
        if served is not None:
            if not served.scaling_target:
                return None
            return FleetWork(
                served.scaling_target,
                served.name,
                served.engines_per_worker,
                served.cold_start_seconds,
            )
        own = self.own_target()
        if own is None:
            return None
        settings = self.deps.settings
        engines = engines_per_worker(settings.worker_gpus, settings.worker_gpus_per_engine)
        return FleetWork(own, None, engines)

    def fleets(self, running: list[BatchRecord]) -> list[FleetWork]:
        """Every fleet the sweep sizes, each with its running batches (none: its floor
        goes back to zero)."""
        fleets: dict[str, FleetWork] = {}
        for model in [None, *self.registry.models()]:
            fleet = self.fleet_of(model)
            if fleet is not None:
                fleets[fleet.target] = fleet
        for batch in running:
            fleet = self.fleet_of(batch.model)
            if fleet is not None and fleet.target in fleets:
                fleets[fleet.target].batches.append(batch)
        return list(fleets.values())

    # -- sizing -----------------------------------------------------------------------------

    def size(self, fleet: FleetWork) -> Sized | None:
        """The sweep's sizing of one fleet: its floor set to what all its work needs now."""
        capacity = self.capacity.read(fleet.target)
        if capacity is None:
            logger.warning("fleet %s: no scalable target (deleted, or not created yet)", fleet)
            return None
        self._seen.pop(fleet.target, None)
        return self._set(capacity, self._need(fleet, fleet.batches, capacity))

    def size_for_batch(self, batch: BatchRecord) -> Sized | None:
        """Intake's sizing: the floor of `batch`'s fleet raised to what `batch` alone needs
        (never lowered: the fleet's other work is the sweep's to count)."""
        fleet = self.fleet_of(batch.model)
        if fleet is None:
            return None
        target = fleet.target
        now = self.monotonic()
        seen = self._seen.get(target)
        if seen is not None and now - seen[0] <= READ_AGAIN_SECONDS:
            read_at, capacity = seen
        else:
            read = self.capacity.read(target)
            if read is None:
                return None
            read_at, capacity = now, read
        sized = self._set(capacity, max(self._need(fleet, [batch], capacity), capacity.minimum))
        self._seen[target] = (read_at, _with_minimum(capacity, sized.minimum))
        return sized

    def _need(self, fleet: FleetWork, batches: list[BatchRecord], capacity: Capacity) -> int:
        settings = self.deps.settings
        now = self.deps.now()
        work = [
            DueWork(
                deadline_at=float(batch.expires_at or now + WITHOUT_DEADLINE_SECONDS),
                tokens=self.turns.remaining_tokens(batch),
                shards=batch.shards_pending,
            )
            for batch in batches
        ]
        # The registry's (or FLEET_TOKENS_PER_SECOND's) speed is the whole fleet's at its
        # largest: one worker does its share of it.
        per_worker = self.turns.throughput(fleet.model) / max(capacity.maximum, 1)
        return desired_workers(
            work,
            now=float(now),
            tokens_per_second=per_worker,
            cold_start_seconds=float(fleet.cold_start_seconds or settings.fleet_cold_start_seconds),
            ready=capacity.running,
            max_workers=capacity.maximum,
            engines_per_worker=fleet.engines,
        )

    def _set(self, capacity: Capacity, minimum: int) -> Sized:
        if minimum == capacity.minimum:
            return Sized(capacity.target, minimum, changed=False)
        self.capacity.set_minimum(capacity.target, minimum)
        logger.info(
            "fleet %s: minimum %d -> %d (desired %d, running %d, at most %d)",
            capacity.target,
            capacity.minimum,
            minimum,
            capacity.desired,
            capacity.running,
            capacity.maximum,
        )
        return Sized(capacity.target, minimum, changed=True)


def _with_minimum(capacity: Capacity, minimum: int) -> Capacity:
    return Capacity(
        target=capacity.target,
        minimum=minimum,
        maximum=capacity.maximum,
        desired=max(capacity.desired, minimum),
        running=capacity.running,
    )
