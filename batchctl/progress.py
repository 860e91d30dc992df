"""What batchctl shows while a batch runs and when it ends, for every command that waits:
`local run`, `submit --wait` and `retry --wait` print the same progress line and summary."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class _Counts(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def failed(self) -> int: ...


class _Usage(Protocol):
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


class _Error(Protocol):
    @property
    def line(self) -> int | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def param(self) -> str | None: ...


class _Errors(Protocol):
    @property
    def data(self) -> Sequence[_Error] | None: ...


class BatchView(Protocol):
    """A Batch as the SDK (`openai.types.Batch`) or the outbox (`batch_core.models.Batch`)
    gives it: the fields the progress line and summary read."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def request_counts(self) -> _Counts | None: ...
    @property
    def usage(self) -> _Usage | None: ...
    @property
    def errors(self) -> _Errors | None: ...


@dataclass
class ProgressMeter:
    """Turns successive Batch snapshots into a progress line: a bar, requests done/failed/
    total, output tokens per second and an ETA from the request rate so far."""

    width: int = 30
    _started: float | None = None
    _samples: list[tuple[float, int, int]] = field(default_factory=list)

    def line(self, batch: BatchView, now: float) -> str:
        counts = batch.request_counts
        total = counts.total if counts else 0
        failed = counts.failed if counts else 0
        done = (counts.completed if counts else 0) + failed
        tokens = batch.usage.output_tokens if batch.usage else 0
        if batch.status == "in_progress" and self._started is None:
            self._started = now
            self._samples = [(now, done, tokens)]
        elif self._started is not None:
            self._samples = [*self._samples[-20:], (now, done, tokens)]
        filled = int(self.width * done / total) if total else 0
        bar = "#" * filled + "." * (self.width - filled)
        text = f"[{bar}] {done}/{total} done, {failed} failed"
        if len(self._samples) >= 2:
            (t0, done0, tokens0), (t1, done1, tokens1) = self._samples[0], self._samples[-1]
            seconds = max(t1 - t0, 1e-9)
            text += f", {(tokens1 - tokens0) / seconds:.0f} tok/s"
            rate = (done1 - done0) / seconds
            if rate > 0 and total > done:
                text += f", ETA {duration((total - done) / rate)}"
        return f"{text}  {batch.status}"


@dataclass
class ProgressPrinter:
    """Prints a meter line when it changes: in place on a terminal, one per line otherwise."""

    meter: ProgressMeter = field(default_factory=ProgressMeter)
    live: bool = field(default_factory=sys.stdout.isatty)
    _last: str = ""

    def show(self, batch: BatchView, now: float) -> None:
        line = self.meter.line(batch, now)
        if line == self._last:
            return
        if self.live:
            print("\r" + line + "\x1b[K", end="", flush=True)
        else:
            print(line, flush=True)
        self._last = line

    def finish(self) -> None:
        if self.live and self._last:
            print()


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def print_summary(
    batch: BatchView, *, seconds: float | None = None, paths: Iterable[Path] = ()
) -> None:
    """The end of a batch: its status, first validation errors, counts, tokens, files."""
    counts = batch.request_counts
    print()
    print(f"Batch {batch.id}: {batch.status}")
    if batch.errors and batch.errors.data:
        for error in batch.errors.data[:20]:
            print(f"  line {error.line}: [{error.code}] {error.message} (param: {error.param})")
    if counts:
        print(f"  requests   {counts.total}")
        print(f"  succeeded  {counts.completed}")
        print(f"  failed     {counts.failed}")
    if batch.usage:
        print(f"  tokens     {batch.usage.input_tokens} in, {batch.usage.output_tokens} out")
    # Extension fields: attributes of ours, and of the SDK's Batch (its model_extra).
    gpu_seconds, cost = getattr(batch, "gpu_seconds", None), getattr(batch, "estimated_cost", None)
    if gpu_seconds is not None and cost is not None:
        print(f"  GPU time   {gpu_seconds:.1f} GPU-seconds, estimated ${cost:.4f}")
    if seconds is not None:
        print(f"  wall time  {seconds:.1f} s")
    for path in paths:
        print(f"  {path}")
