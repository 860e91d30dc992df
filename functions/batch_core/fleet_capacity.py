"""A worker fleet's capacity as AWS holds it: its ECS service's scalable target (Application
Auto Scaling) and its tasks (ECS). The data layer of `fleet_scaling`; nothing else touches
these two clients, and each is built on first use (most processes never size a fleet)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

NAMESPACE: Final = "ecs"
DIMENSION: Final = "ecs:service:DesiredCount"


@dataclass(frozen=True)
class Capacity:
    """What a fleet's scalable target allows and what its service runs."""

    target: str
    """The scalable target's resource id: `service/<cluster>/<service>`."""
    minimum: int
    maximum: int
    desired: int
    running: int
    """Tasks running: the workers past their image pull (still loading weights, some)."""


class FleetCapacity:
    """Reads a fleet's capacity and sets its minimum (the scale-out; the scale-in alarm
    brings the desired count back to zero once the work is gone)."""

    def __init__(self, autoscaling: Callable[[], Any], ecs: Callable[[], Any]) -> None:
        self._autoscaling = autoscaling
        self._ecs = ecs

    @cached_property
    def autoscaling(self) -> Any:
        return self._autoscaling()

    @cached_property
    def ecs(self) -> Any:
        return self._ecs()

    def target_of_cluster(self, cluster: str) -> str | None:
        """The scalable target of the one worker service in `cluster` (the stack's own
        workers, whose names the stack does not know before they exist), if registered."""
        prefix = f"service/{cluster}/"
        pages = self.autoscaling.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace=NAMESPACE, ScalableDimension=DIMENSION
        )
        for page in pages:
            for target in page["ScalableTargets"]:
                if str(target["ResourceId"]).startswith(prefix):
                    return str(target["ResourceId"])
        return None

    def read(self, target: str) -> Capacity | None:
        """The fleet's capacity; None when no such target is registered (a fleet deleted, or
        not yet created)."""
        found = self.autoscaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ScalableDimension=DIMENSION, ResourceIds=[target]
        )["ScalableTargets"]
        if not found:
            return None
        _, cluster, service = target.split("/", 2)
        services = self.ecs.describe_services(cluster=cluster, services=[service])["services"]
        desired = int(services[0].get("desiredCount", 0)) if services else 0
        running = int(services[0].get("runningCount", 0)) if services else 0
        return Capacity(
            target=target,
            minimum=int(found[0]["MinCapacity"]),
            maximum=int(found[0]["MaxCapacity"]),
            desired=desired,
            running=running,
        )

    def set_minimum(self, target: str, minimum: int) -> None:
        """Raise (or lower) the fleet's floor: above the desired count, Application Auto
        Scaling raises the desired count to it at once."""
        self.autoscaling.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ScalableDimension=DIMENSION,
            ResourceId=target,
            MinCapacity=minimum,
        )
