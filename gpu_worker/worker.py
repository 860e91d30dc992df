"""The worker loop: long-poll the shard queue, run each shard, settle the message."""

from __future__ import annotations

import logging
import threading
import time

from batch_core.messaging import ShardQueue, ShardTask
from batch_core.protocol import Engine
from batch_core.service import BatchService

logger = logging.getLogger(__name__)


class Worker:
    """Pulls shards until told to stop. No business rule here: the service runs the shard."""

    def __init__(
        self,
        service: BatchService,
        queue: ShardQueue,
        engine: Engine,
        *,
        wait_seconds: int = 20,
        stop: threading.Event | None = None,
    ) -> None:
        self._service = service
        self._queue = queue
        self._engine = engine
        self._wait_seconds = wait_seconds
        self.stop = stop or threading.Event()

    def run(self, idle_exit_seconds: float | None = None) -> None:
        idle_since = time.monotonic()
        while not self.stop.is_set():
            if self.poll_once():
                idle_since = time.monotonic()
            elif (
                idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds
            ):
                logger.info("no shard for %.0f s: exiting", idle_exit_seconds)
                return

    def poll_once(self) -> bool:
        """Take at most one shard; True if one was handled."""
        messages = self._queue.receive(wait_seconds=self._wait_seconds)
        for message in messages:
            task = ShardTask.model_validate_json(message.body)
            outcome = self._service.process_shard(task, self._engine, should_stop=self.stop.is_set)
            if outcome == "interrupted":
                self._queue.release(message)  # another worker takes the rest
            else:
                self._queue.delete(message)
            logger.info("shard %s:%d %s", task.batch_id, task.shard_index, outcome)
        return bool(messages)
