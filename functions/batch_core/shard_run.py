"""Running one shard on an engine (the GPU worker's one dependency): a lease, crash-safe
parts, and a stop between parts when the batch no longer runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from batch_core.deps import Deps
from batch_core.gpu_time import EngineClock, ShardMeter
from batch_core.media_urls import MediaPolicy, refused_media
from batch_core.messaging import ShardQueue, ShardTask
from batch_core.notices import Notices
from batch_core.protocol import (
    BatchRequestOutput,
    BatchResponse,
    Engine,
    EngineRequest,
    EngineResult,
    ShardRequest,
)
from batch_core.records import PartCounts, ShardRecord
from batch_core.repeats import ShardRepeats
from batch_core.results import FinishedRequests, PendingPart, Results, refused_line
from batch_core.reuse import ShardReuse, cached_line
from batch_core.table_reuse import ReuseTable
from batch_core.turns import Turns

logger = logging.getLogger(__name__)

ShardOutcome = Literal["done", "interrupted", "stopped", "busy", "skipped"]
"""done: settled; interrupted: the worker is stopping, another finishes it; stopped: the batch
is no longer running; busy: another worker holds the shard's lease; skipped: nothing to do
(already done, or the batch is not running)."""


@dataclass
class ShardRun:
    """What one attempt at a shard did (for the worker's logs and metrics)."""

    outcome: ShardOutcome
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reused: int = 0
    seconds: float = 0.0
    gpu_seconds: float = 0.0

    def add(self, counts: PartCounts) -> None:
        self.reused += counts.reused
        self.gpu_seconds += counts.gpu_seconds
        self.succeeded += counts.completed
        self.failed += counts.failed
        self.input_tokens += counts.input_tokens
        self.output_tokens += counts.output_tokens


def _media_refused_line(
    shard: ShardRecord, request: ShardRequest, param: str, reason: str
) -> BatchRequestOutput:
    return refused_line(
        f"{shard.batch_id}/{request.custom_id}/media",
        request.custom_id,
        message=f"Invalid '{param}': {reason}.",
        code="media_url_refused",
        param=param,
    )


class ShardRunner:
    def __init__(self, deps: Deps, results: Results, turns: Turns, notices: Notices) -> None:
        self.deps = deps
        self.results = results
        self.turns = turns
        self.notices = notices
        # One clock per engine, so the shards running on it at once share its time.
        self._clocks: weakref.WeakKeyDictionary[Engine, EngineClock]
        self._clocks = weakref.WeakKeyDictionary()
        self._clocks_lock = threading.Lock()

    def _start(
        self, engine: Engine, pending: list[EngineRequest], gpus: int
    ) -> tuple[Iterator[EngineResult], ShardMeter]:
        """The engine's results for `pending`, and the meter of the shard's engine time."""
        with self._clocks_lock:
            clock = self._clocks.get(engine)
            if clock is None:
                clock = self._clocks[engine] = EngineClock(gpus)
        meter = ShardMeter(clock)
        try:
            return engine.run(pending), meter
        except BaseException:
            meter.close()
            raise

    def process_shard(
        self,
        task: ShardTask,
        engine: Engine,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        owner: str | None = None,
        lease_seconds: float = 300,
        queue: ShardQueue | None = None,
        gpus: int = 1,
    ) -> ShardRun:
        """Run one shard through the engine, writing results in crash-safe parts.

        Parts already written by an earlier attempt are counted (once) and their requests
        skipped, so a redelivered message never produces a result twice. A part is written
        every `results_part_size` results or `results_part_seconds`, whichever comes first;
        after each part the batch's status is read again, so a batch that is no longer
        running (cancelling, expired) stops its shards, and `should_stop` (the worker is
        shutting down) interrupts the shard for another worker to finish. Once it settles,
        the batch's next held shard is sent to `queue` (the worker's own: the batch is for
        its model), else to the model's queues from the registry. Each part carries the
        GPU-seconds (`gpus` per engine) since the previous one, counted with it (`gpu_time`).
        """
        started = time.monotonic()
        settings, table = self.deps.settings, self.deps.table
        owner = owner or uuid.uuid4().hex
        now = self.deps.clock()
        # One transaction checks the batch is in progress and takes the shard's lease.
        shard = table.shards.begin_shard_attempt(
            task.batch_id, task.shard_index, owner=owner, lease_until=now + lease_seconds, now=now
        )
        if shard is None:
            return self._not_begun(task)
        # A first attempt has nothing to recover: no part can exist before an attempt began.
        finished, next_part = (
            self.results.recover(shard)
            if shard.attempts > 1 or shard.parts_committed
            else (FinishedRequests(), 0)
        )
        run = ShardRun("done")
        part = PendingPart()
        answers = _Answers(shard, ShardRepeats.read(self.deps.store, shard), self._reuse(shard))
        pending = self._to_run(shard, finished, part, answers)
        part_started = time.monotonic()
        remaining = len(pending)
        results, meter = self._start(engine, pending, gpus)
        try:
            for result in results:
                answers.add(part, result.to_output_line())
                remaining -= 1
                if remaining and (
                    len(part) >= settings.results_part_size
                    or time.monotonic() - part_started >= settings.results_part_seconds
                ):
                    run.add(answers.write(self.results, next_part, part, meter))
                    next_part, part, part_started = next_part + 1, PendingPart(), time.monotonic()
                    if not self._still_running(task.batch_id):
                        run.outcome = "stopped"
                        break
                    if should_stop():
                        break
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # abort what the engine still runs for us
            meter.close()  # the shard's engine time ends with its requests
        if remaining:
            if len(part):
                run.add(answers.write(self.results, next_part, part, meter))
            # Give the lease up so whoever takes the shard next need not wait for it to lapse.
            table.shards.renew_lease(task.batch_id, shard.index, owner=owner, lease_until=0)
            run.seconds = time.monotonic() - started
            if run.outcome == "stopped":
                logger.info("batch %s is not running: shard %d stops", task.batch_id, shard.index)
            else:
                run.outcome = "interrupted"
            return run
        # The last part and the shard's settlement are one transaction.
        run.add(answers.write(self.results, next_part, part, meter, settle=True))
        settled = table.batches.get_batch(task.batch_id)
        if settled is not None:
            self.notices.outbox(settled)  # a shard of one part moves the outbox's counts too
            self.turns.let_next_shard_in(settled, queue=queue)
        run.seconds = time.monotonic() - started
        return run

    def renew_shard_lease(self, task: ShardTask, owner: str, lease_seconds: float) -> bool:
        """Keep running a shard; False means the lease was lost (another worker took over)."""
        return self.deps.table.shards.renew_lease(
            task.batch_id,
            task.shard_index,
            owner=owner,
            lease_until=self.deps.clock() + lease_seconds,
        )

    def _still_running(self, batch_id: str) -> bool:
        """After a part: whether the batch still runs (live counts go to its outbox)."""
        batch = self.deps.table.batches.get_batch(batch_id)
        if batch is None:
            return False
        self.notices.outbox(batch)  # live request_counts for people watching batch.json
        return batch.status == "in_progress"

    def _not_begun(self, task: ShardTask) -> ShardRun:
        """Why an attempt could not begin: the batch is not running, or the shard is done or
        held by another worker (a duplicated message)."""
        table = self.deps.table
        latest = table.batches.get_batch(task.batch_id)
        if latest is None or latest.status != "in_progress":
            logger.info("skipping shard %s: batch is %s", task, latest and latest.status)
            return ShardRun("skipped")
        current = table.shards.get_shard(task.batch_id, task.shard_index)
        if current is not None and current.status != "done":
            return ShardRun("busy")  # another worker holds its lease: a duplicated message
        return ShardRun("skipped")  # already done

    def _reuse(self, shard: ShardRecord) -> ShardReuse | None:
        """The tenant's result cache, for a shard whose batch opted in (`reuse`)."""
        if not shard.reuse_results:
            return None
        batch = self.deps.table.batches.get_batch(shard.batch_id)
        if batch is None:
            return None
        keep = batch.output_expires_after_seconds or self.deps.settings.file_retention_seconds
        return ShardReuse(
            ReuseTable(self.deps.table.access),
            self.deps.store,
            tenant=batch.tenant,
            now=self.deps.now(),
            keep_seconds=keep,
        )

    def _to_run(
        self, shard: ShardRecord, finished: FinishedRequests, part: PendingPart, answers: _Answers
    ) -> list[EngineRequest]:
        """The shard's requests the engine still has to run; lines it must not run (unreadable,
        a media URL the policy refuses) go to `part` as error lines, and those the tenant's
        cache answers as reused lines (each with its repeats)."""
        runnable: list[ShardRequest] = []
        media = MediaPolicy.of(self.deps.settings.allowed_media_domains)
        for request in self.results.unfinished(shard, finished):
            if isinstance(request, BatchRequestOutput):
                part.failed.append(request)  # an unreadable line: not the engine's to run
                continue
            answers.known(request)
            # Intake's walk, every shape; shards are data, so checked again here.
            refused = refused_media(request.body, request.url, media)
            if refused is not None:
                answers.add(part, _media_refused_line(shard, request, *refused))
                continue
            runnable.append(request)
        cached = answers.cached(runnable)
        pending: list[EngineRequest] = []
        for request in runnable:
            hit = cached.get(request.custom_id)
            if hit is not None:
                answers.add(part, cached_line(shard.batch_id, request.custom_id, hit), reused=True)
                continue
            pending.append(
                EngineRequest(custom_id=request.custom_id, url=request.url, body=request.body)
            )
        return pending


class _Answers:
    """How each of a shard's results becomes lines: the request's own, and one for each of
    its repeats, in the same part (a crash never splits them); kept for reuse when its batch
    opted in."""

    def __init__(self, shard: ShardRecord, repeats: ShardRepeats, reuse: ShardReuse | None) -> None:
        self._shard = shard
        self._repeats = repeats
        self._reuse = reuse
        self._lines: dict[str, int] = {}  # custom_id -> input line of the requests to answer

    def known(self, request: ShardRequest) -> None:
        self._lines[request.custom_id] = request.line

    def cached(self, requests: list[ShardRequest]) -> dict[str, BatchResponse]:
        return {} if self._reuse is None else self._reuse.lookup(requests)

    def add(self, part: PendingPart, line: BatchRequestOutput, *, reused: bool = False) -> None:
        """`line` (a request's result) and its repeats' lines into `part`."""
        kind = part.succeeded if line.succeeded else part.failed
        kind.append(line)
        if reused:
            part.reused_ids.add(line.id)
        elif self._reuse is not None:
            self._reuse.remember(line)
        input_line = self._lines.get(line.custom_id or "")
        if input_line is None:
            return
        if line.line is None:
            line.line = input_line  # the results index places every line by its input line
        part.input_lines[line.custom_id or ""] = input_line
        for repeat, copy in self._repeats.copies(self._shard.batch_id, input_line, line):
            kind.append(copy)
            part.reused_ids.add(copy.id)
            part.input_lines[repeat.custom_id] = repeat.line

    def write(
        self,
        results: Results,
        part_index: int,
        part: PendingPart,
        meter: ShardMeter,
        *,
        settle: bool = False,
    ) -> PartCounts:
        part.gpu_seconds = meter.take()  # the time up to this part, counted with it
        counts = results.write(self._shard, part_index, part, settle=settle)
        if self._reuse is not None:
            self._reuse.flush(part.written)  # after the part: kept only once it is written
        return counts
