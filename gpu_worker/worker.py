"""The worker loop: long-poll the shard queue, run each shard, settle the message.

A few loops share one engine (`concurrency`, at most 8 by default). A loop takes a shard only
while the engine has room (`Engine.has_room`: for vLLM, fewer requests in flight than twice
the sequences it runs at once), so the next shard is already feeding the engine while the
current one drains its last requests, small shards included, and an idle loop never holds
a message another worker could run. While a shard runs, a heartbeat keeps its message
invisible to other workers; if the worker dies the heartbeat stops and SQS hands the shard
to another worker, which skips the results already written.

With `stall_seconds` set, a watchdog (gpu_worker/stall_watchdog.py) also stops the heartbeats
when the engine makes no progress, and `run` raises `EngineStalledError` so the process exits
non-zero and ECS replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType

from pydantic import ValidationError

from batch_core.messaging import QueueMessage, ShardQueue, ShardTask
from batch_core.protocol import Engine
from batch_core.shard_run import ShardRun, ShardRunner
from gpu_worker.observability import ShardMetrics
from gpu_worker.stall_watchdog import EngineProgress, EngineStalledError, StallWatchdog

logger = logging.getLogger(__name__)

ROOM_POLL_SECONDS = 0.05


class Heartbeat:
    """Every third of the visibility timeout, until the `with` block ends: extends the message's
    visibility and renews the shard's lease. A lost lease (another worker took the shard over
    while this one stalled) sets `lost`, and the shard stops at its next part. Once `stalled` is
    set (the engine hung) it beats no more, so the shard's lease lapses as if the worker died."""

    def __init__(
        self,
        queue: ShardQueue,
        message: QueueMessage,
        visibility_seconds: int,
        renew_lease: Callable[[], bool],
        stalled: threading.Event | None = None,
    ) -> None:
        self._queue = queue
        self._message = message
        self._visibility = visibility_seconds
        self._renew_lease = renew_lease
        self.lost = threading.Event()
        self._stalled = stalled or threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        interval = max(self._visibility / 3, 0.5)
        while not self._done.wait(interval):
            if self._stalled.is_set():
                return
            try:
                self._queue.extend(self._message, self._visibility)
                if not self._renew_lease():
                    logger.warning("lost the shard's lease to another worker: stopping it")
                    self.lost.set()
                    return
            except Exception:  # a missed beat is not fatal; the next one tries again
                logger.warning("could not extend the shard's lease", exc_info=True)


class Worker:
    """Pulls shards until told to stop. No business rule here: the runner runs the shard."""

    def __init__(
        self,
        runner: ShardRunner,
        queue: ShardQueue,
        engine: Engine,
        *,
        wait_seconds: int = 20,
        visibility_seconds: int = 300,
        concurrency: int = 1,
        stop: threading.Event | None = None,
        metrics: ShardMetrics | None = None,
        stall_seconds: float = 0,
        gpus: int = 1,
    ) -> None:
        """`stall_seconds` > 0 turns the stall watchdog on (ENGINE_STALL_SECONDS); `gpus`:
        the engine's GPUs (its tensor-parallel size), for each shard's GPU-seconds."""
        self._runner = runner
        self._queue = queue
        self._progress = EngineProgress(engine) if stall_seconds > 0 else None
        self._engine: Engine = self._progress or engine
        self._stall_seconds = stall_seconds
        self._gpus = max(gpus, 1)
        self.stalled = threading.Event()
        self._wait_seconds = wait_seconds
        self._visibility_seconds = visibility_seconds
        self._concurrency = concurrency
        self._metrics = metrics
        self.stop = stop or threading.Event()
        self._failure: BaseException | None = None
        self._last_work = time.monotonic()

    def run(self, idle_exit_seconds: float | None = None) -> None:
        """Run `concurrency` loops until stopped (or idle); re-raises a loop's failure, and
        raises `EngineStalledError` at once when the engine stalls (its loops hang in it)."""
        self._last_work = time.monotonic()
        # Daemons: after a stall the loops stay stuck in the engine, and must not keep the
        # process alive.
        loops = [
            threading.Thread(
                target=self._loop, args=(idle_exit_seconds,), name=f"shards-{i}", daemon=True
            )
            for i in range(self._concurrency)
        ]
        for loop in loops:
            loop.start()
        with contextlib.ExitStack() as watching:
            if self._progress is not None:
                watching.enter_context(
                    StallWatchdog(self._progress, self._stall_seconds, self._on_stall)
                )
            for loop in loops:
                while loop.is_alive() and not self.stalled.is_set():
                    loop.join(timeout=0.2)
        if self.stalled.is_set():
            raise EngineStalledError(f"the engine made no progress for {self._stall_seconds:.0f} s")
        if self._failure is not None:
            raise self._failure

    def _on_stall(self, seconds: float) -> None:
        logger.error("the engine made no progress for %.1f s: giving up its shards", seconds)
        # Stop the heartbeats first: nothing this worker holds is renewed from now on. No
        # message is released: its shard's lease is still held, so a worker receiving it now
        # would find it busy and hide it for a whole visibility timeout again. Instead the
        # lease lapses (0.9 of the visibility timeout after its last renewal) just before the
        # message reappears, as after a crash, and the next worker skips the written results.
        self.stalled.set()
        self.stop.set()

    def _loop(self, idle_exit_seconds: float | None) -> None:
        try:
            while not self.stop.is_set():
                if not self._engine.has_room():
                    self.stop.wait(ROOM_POLL_SECONDS)
                    self._last_work = time.monotonic()  # busy, not idle
                    continue
                if self.poll_once():
                    self._last_work = time.monotonic()
                elif (
                    idle_exit_seconds is not None
                    and time.monotonic() - self._last_work > idle_exit_seconds
                ):
                    logger.info("no shard for %.0f s: exiting", idle_exit_seconds)
                    return
        except BaseException as error:
            # The engine died or AWS failed us: stop the other loops (they release their
            # shards) and let the process exit non-zero so the orchestrator restarts it.
            self._failure = self._failure or error
            self.stop.set()

    def poll_once(self) -> bool:
        """Take at most one shard; True if one was handled."""
        if self.stop.is_set():
            return False
        messages = self._queue.receive(
            wait_seconds=self._wait_seconds, visibility_seconds=self._visibility_seconds
        )
        for message in messages:
            self._handle(message)
        return bool(messages)

    def _handle(self, message: QueueMessage) -> None:
        try:
            task = ShardTask.model_validate_json(message.body)
        except ValidationError:
            # Not a shard of ours (no sender but the intake writes here): drop it, stay up.
            logger.error("dropping a message that names no shard: %.200r", message.body)
            self._queue.delete(message)
            return
        owner = uuid.uuid4().hex
        # The lease lapses a little before the message reappears, so the worker that gets the
        # message after a crash finds the shard free.
        lease_seconds = 0.9 * self._visibility_seconds
        heartbeat = Heartbeat(
            self._queue,
            message,
            self._visibility_seconds,
            lambda: self._runner.renew_shard_lease(task, owner, lease_seconds),
            stalled=self.stalled,
        )
        try:
            with heartbeat:
                run = self._runner.process_shard(
                    task,
                    self._engine,
                    should_stop=lambda: self.stop.is_set() or heartbeat.lost.is_set(),
                    owner=owner,
                    lease_seconds=lease_seconds,
                    queue=self._queue,
                    gpus=self._gpus,
                )
        except BaseException:
            logger.exception("shard %s:%d failed", task.batch_id, task.shard_index)
            self._queue.release(message)  # another worker (or this one, restarted) retries
            raise
        self._settle(message, task, run)

    def _settle(self, message: QueueMessage, task: ShardTask, run: ShardRun) -> None:
        if run.outcome == "interrupted":
            self._queue.release(message)  # another worker takes the rest at once
        elif run.outcome == "busy":
            pass  # another worker runs it; if that one dies, this message comes back
        else:
            self._queue.delete(message)
        logger.info(
            "shard %s:%d %s",
            task.batch_id,
            task.shard_index,
            run.outcome,
            extra={
                "batch_id": task.batch_id,
                "shard_index": task.shard_index,
                "outcome": run.outcome,
                "succeeded": run.succeeded,
                "failed": run.failed,
                "seconds": round(run.seconds, 3),
            },
        )
        if self._metrics is not None:
            self._metrics.record(run)
