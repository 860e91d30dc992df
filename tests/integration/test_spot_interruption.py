"""A spot interruption as it reaches the worker: nothing lost.

With ECS managed draining, a spot interruption warning (or a rebalance recommendation) sets the
container instance DRAINING and ECS stops its tasks as it stops any task: SIGTERM to the
container's PID 1 (the worker: the image's exec-form ENTRYPOINT, no shell in between), then
SIGKILL once the container's stopTimeout has passed. This test plays ECS's part against a real
worker process with two shards in hand (two shard loops; the image runs 8).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from tests.conftest import MODEL, worker_process
from tests.integration.test_worker_faults import (
    REQUESTS,
    assert_exactly_once,
    drop_batch,
    moto_server_stack,
    record_of,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server_stack() -> Iterator[LocalStack]:
    with moto_server_stack(shard_size=12, part_size=3) as stack:
        yield stack


def stop_timeout() -> int:
    """The worker container's stopTimeout, as the fleet template gives it to ECS."""
    found = re.search(r"StopTimeout: (\d+)", (ROOT / "infra/worker-fleet.yaml").read_text())
    assert found is not None
    return int(found.group(1))


def start_worker(concurrency: int) -> subprocess.Popen[str]:
    return worker_process(
        {
            **os.environ,  # the stack's AWS_ENDPOINT_URL, table, bucket and queue names
            "ENGINE": "fake",
            "SERVED_MODEL_NAME": MODEL,
            "FAKE_SECONDS_PER_REQUEST": "0.3",  # a shard of 12 takes 3.6 s
            "WORKER_WAIT_SECONDS": "1",
            "WORKER_CONCURRENCY": str(concurrency),
            # A shard can only come back at once if the worker released it.
            "WORKER_VISIBILITY_SECONDS": "600",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )


def ecs_stops(task: subprocess.Popen[str], timeout: int) -> bool:
    """What ECS does to a task on a draining instance: SIGTERM, then SIGKILL after `timeout`.
    True if it had to kill."""
    task.send_signal(signal.SIGTERM)
    try:
        task.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        task.kill()
        task.wait(timeout=10)
        return True
    return False


def shards_started(stack: LocalStack, name: str) -> int:
    record = record_of(stack, name)
    shards = stack.stages.table.shards
    return sum(1 for i in range(2) if (shard := shards.get_shard(record.id, i)) and shard.attempts)


def test_a_draining_instance_stops_the_worker_mid_shard_and_nothing_is_lost(
    server_stack: LocalStack, tmp_path: Path
) -> None:
    name = drop_batch(server_stack, tmp_path)  # two shards of 12, parts of 3
    worker = start_worker(concurrency=2)
    try:
        wait_for(lambda: shards_started(server_stack, name) == 2, 60, "both shards to start")
        wait_for(lambda: record_of(server_stack, name).request_completed >= 3, 60, "a part")
        killed = ecs_stops(worker, stop_timeout())
        output = worker.stdout.read() if worker.stdout else ""
        assert not killed, output  # it went by itself, inside the stop timeout
        assert worker.returncode == 0, output
    finally:
        if worker.poll() is None:
            worker.kill()
    assert 0 < record_of(server_stack, name).request_completed < REQUESTS
    assert output.count(" interrupted") == 2, output  # each shard flushed its part in hand
    sqs = server_stack.session.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=server_stack.physical_id("ShardQueue"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    # Both shards were released at once (their 600 s visibility could not have lapsed).
    assert int(attributes["ApproximateNumberOfMessages"]) == 2
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0

    survivor = start_worker(concurrency=2)  # on another instance
    try:
        started = time.monotonic()
        assert_exactly_once(server_stack, name, tmp_path)
        # The leases were given up too: the survivor did not wait for them to lapse (540 s).
        assert time.monotonic() - started < 60
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)
