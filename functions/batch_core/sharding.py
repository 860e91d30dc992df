"""Shard planning: cut the stream of valid requests into shards as it flows by.

Shards are the unit of retry, progress and parallelism: big enough to keep a GPU busy for a
few minutes, small enough that a lost worker costs little. A shard closes when it reaches its
estimated work (prompt tokens plus the output budget), its request count or its byte size,
whichever comes first.

Requests that share their leading chat messages (a system prompt, a few-shot preamble) go to
the same open shard, in file order, so vLLM's prefix cache serves the shared part once: the
planner keeps one open shard per *slot*, and a request's slot is chosen by the digest of its
leading messages (slot 0 holds requests with no shared part). Open shards spool to temporary
files, so memory stays bounded by a few small buffers whatever the shard size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from batch_core.validation import BatchValidator, ValidationReport, ValidLine

# Bytes of each open shard kept in memory before it spills to a temporary file.
_SPOOL_BYTES = 1024 * 1024

DEFAULT_CONTEXT_TOKENS = 32_768
"""The context window assumed for a model whose own is not known (a common size)."""
MAX_CHOICES = 128
"""OpenAI's most `n` (validation refuses more; the estimate relies on no line but its own)."""


@dataclass(frozen=True)
class ShardBounds:
    """When a shard is full, and how requests are grouped."""

    max_requests: int = 10_000
    max_bytes: int = 64 * 1024**2
    max_work_tokens: int = 1_000_000
    """Estimated prompt plus output tokens in one shard."""
    default_output_tokens: int = 256
    """Output budget assumed for a request that sets no max_tokens."""
    prefix_slots: int = 4
    """Open shards for requests with leading messages (0 puts every request in one stream)."""
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    """The model's context window, which bounds each request's estimate (`estimate_work`)."""


def estimate_work(
    line: ValidLine, default_output_tokens: int, context_tokens: int = DEFAULT_CONTEXT_TOKENS
) -> int:
    """Estimated tokens a request costs the engine: its prompt plus what it may generate.

    `max_tokens` and `n` are the line's to declare, so they are clamped before they count:
    a choice generates at most what the context window leaves after the prompt, `n` is at
    most `MAX_CHOICES`, and the request as a whole is planned at no more than one window.
    A limit is a ceiling, rarely reached; one set absurdly high (2**63-1) must not weigh on
    the scheduler, DeadlinePressure and the at-risk check that every tenant shares. A batch
    that does produce more shows it in its pace (`BatchRecord.eta_at`).
    """
    prompt_tokens = (line.prompt_chars + 3) // 4
    choices = min(max(line.choices, 1), MAX_CHOICES)
    if line.output_tokens is None:
        per_choice = default_output_tokens
    else:  # the validator's figure is over every choice: `max_tokens * n`
        per_choice = line.output_tokens // max(line.choices, 1)
    per_choice = min(per_choice, max(context_tokens - prompt_tokens, 0))
    return min(prompt_tokens + choices * per_choice, context_tokens)


@dataclass
class PlannedShard:
    """A full shard: its lines are in `data`, positioned at the start."""

    index: int
    slot: int
    request_count: int
    byte_count: int
    work_tokens: int
    data: IO[bytes]
    serial: int = 0
    """What `ShardPlanner.add` called it while it was open."""


@dataclass
class _OpenShard:
    slot: int
    serial: int
    # Closed by whoever `emit` hands it to, or by `discard`.
    data: IO[bytes] = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    )
    request_count: int = 0
    byte_count: int = 0
    work_tokens: int = 0


class ShardPlanner:
    """Packs requests into shards and hands each full shard to `emit`, which owns (and must
    close) the shard's `data`."""

    def __init__(
        self,
        emit: Callable[[PlannedShard], None],
        bounds: ShardBounds,
        *,
        keep_lines: bool = True,
        context_tokens: Callable[[], int] | None = None,
    ) -> None:
        """With `keep_lines=False` only the counts are kept (a dry run): `data` stays empty.
        `context_tokens`: the batch's model's context window, asked once at the first request
        (the model is known from then on: a batch has one); default `bounds.context_tokens`."""
        self._emit = emit
        self._bounds = bounds
        self._keep_lines = keep_lines
        self._context_of = context_tokens
        self._context: int | None = None
        self._open: dict[int, _OpenShard] = {}
        self._opened = 0
        self.shard_count = 0

    def slot_of(self, line: ValidLine) -> int:
        slots = self._bounds.prefix_slots
        return 0 if not line.prefix or slots <= 0 else 1 + line.prefix % slots

    def add(self, line: ValidLine) -> int:
        """Put `line` in an open shard; returns that shard's serial (the number of shards
        opened before it), which `PlannedShard.serial` repeats once it is emitted."""
        data = line.shard_line()
        context = self._context
        if context is None:
            asked = self._context_of() if self._context_of is not None else 0
            context = self._context = asked or self._bounds.context_tokens
        work = estimate_work(line, self._bounds.default_output_tokens, context)
        slot = self.slot_of(line)
        shard = self._open.get(slot)
        if shard is not None and (
            shard.byte_count + len(data) > self._bounds.max_bytes
            or shard.work_tokens + work > self._bounds.max_work_tokens
        ):
            self._flush(slot)  # a shard never goes past its bounds unless one request does
            shard = None
        if shard is None:
            shard = self._open[slot] = _OpenShard(slot, self._opened)
            self._opened += 1
        if self._keep_lines:
            shard.data.write(data)
        shard.request_count += 1
        shard.byte_count += len(data)
        shard.work_tokens += work
        if (
            shard.request_count >= self._bounds.max_requests
            or shard.work_tokens >= self._bounds.max_work_tokens
        ):
            self._flush(slot)
        return shard.serial

    def add_all(self, lines: Iterable[ValidLine]) -> None:
        for line in lines:
            self.add(line)

    def close(self) -> int:
        """Emit the open shards; returns how many shards were planned."""
        for slot in sorted(self._open):
            self._flush(slot)
        return self.shard_count

    def discard(self) -> None:
        """Drop the open shards without emitting them (the batch failed validation)."""
        for shard in self._open.values():
            shard.data.close()
        self._open.clear()

    def _flush(self, slot: int) -> None:
        shard = self._open.pop(slot)
        shard.data.seek(0)
        self._emit(
            PlannedShard(
                index=self.shard_count,
                slot=shard.slot,
                request_count=shard.request_count,
                byte_count=shard.byte_count,
                work_tokens=shard.work_tokens,
                data=shard.data,
                serial=shard.serial,
            )
        )
        self.shard_count += 1


@dataclass(frozen=True)
class DryRun:
    """What intake would do with a file, computed without storing anything."""

    report: ValidationReport
    shards: int
    work_tokens: int
    """Estimated prompt plus output tokens over all valid requests."""

    def runnable(self, *, skip_invalid_lines: bool) -> bool:
        return self.report.runnable(skip_invalid_lines=skip_invalid_lines)


def dry_run(
    lines: Iterable[tuple[int, bytes]], validator: BatchValidator, bounds: ShardBounds
) -> DryRun:
    """Validate and plan shards as intake does, counting instead of writing."""
    work = 0

    def count(shard: PlannedShard) -> None:
        nonlocal work
        work += shard.work_tokens
        shard.data.close()

    planner = ShardPlanner(count, bounds, keep_lines=False)
    planner.add_all(validator.validate(lines))
    shards = planner.close()
    return DryRun(report=validator.report(), shards=shards, work_tokens=work)
