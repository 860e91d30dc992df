"""How long a worker took to become ready, phase by phase, for the ColdStart* metrics.

A cold start is the image pull (ECS's, before the process exists: read from the task metadata
endpoint, ECS_CONTAINER_METADATA_URI_V4, when ECS gives one), then the process's own phases:
the weights (a copy from S3, or the hub's cache found) and the engine (vLLM loading the weights
onto the GPUs and compiling). Each phase is what the worker can measure: the pull from ECS's
timestamps, the rest from the process's clock; the total runs from the pull's start when known,
else from the process's start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

logger = logging.getLogger(__name__)

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
METADATA_TIMEOUT_SECONDS = 2.0

# ECS writes nanoseconds ("2026-12-03T19:25:39.123456789Z"); Python reads six digits at most.
_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class ImagePull:
    """ECS's pull of the task's image (wall clock, seconds since the epoch)."""

    started: float
    stopped: float


def parse_timestamp(value: str) -> float:
    iso = _EXTRA_DIGITS.sub(r"\1", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(iso).timestamp()


def image_pull(task: Mapping[str, object]) -> ImagePull | None:
    """The pull from a task metadata document (v4 `/task`), None when ECS gives no times."""
    started, stopped = task.get("PullStartedAt"), task.get("PullStoppedAt")
    if not isinstance(started, str) or not isinstance(stopped, str):
        return None
    try:
        return ImagePull(parse_timestamp(started), parse_timestamp(stopped))
    except ValueError:
        return None


def fetch_task_metadata(environ: Mapping[str, str] = os.environ) -> dict[str, object]:
    """The task's metadata document, {} outside ECS or when the endpoint does not answer (a
    metric is not worth failing a start for)."""
    base = environ.get(METADATA_ENV)
    if not base:
        return {}
    try:
        # ECS's endpoint on the instance (its URL from ECS, http only).
        url = f"{base}/task"
        with urllib.request.urlopen(url, timeout=METADATA_TIMEOUT_SECONDS) as answer:
            document = json.load(answer)
    except (OSError, ValueError) as error:
        logger.warning("no task metadata for the cold start metrics: %s", error)
        return {}
    return document if isinstance(document, dict) else {}


@dataclass
class ColdStart:
    """The process's phases, marked as they end (the clock injectable for tests)."""

    clock: Callable[[], float] = time.time
    started: float = field(default=0.0)
    weights: float | None = None
    engine: float | None = None

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    def weights_ready(self) -> None:
        self.weights = self.clock()

    def engine_ready(self) -> None:
        self.engine = self.clock()

    def phases(self, pull: ImagePull | None) -> dict[str, float]:
        """Seconds per phase: ImagePull, Startup (pull end to process start: the container's
        creation and the interpreter's imports), Weights, Engine and Total; those not measured
        left out."""
        found: dict[str, float] = {}
        if pull is not None:
            found["ImagePull"] = max(0.0, pull.stopped - pull.started)
            found["Startup"] = max(0.0, self.started - pull.stopped)
        if self.weights is not None:
            found["Weights"] = self.weights - self.started
        if self.engine is not None:
            found["Engine"] = self.engine - (self.weights or self.started)
            origin = pull.started if pull is not None else self.started
            found["Total"] = self.engine - origin
        return found
