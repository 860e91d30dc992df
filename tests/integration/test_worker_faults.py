"""Worker processes killed mid-shard: nothing lost, nothing duplicated, counts exact.

The stack runs on a moto server so that real `python -m gpu_worker` processes (fake engine,
slowed down so they can be caught mid-shard) share it with the test, which plays Lambda's
part (routing intake and finalize events) exactly as the local stack does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batch_core.records import BatchRecord
from batchctl.local import LocalStack
from batchctl.moto_server import start_moto_server, stop_moto_server
from tests.conftest import MODEL, chat_request, lines_of, worker_process, write_jsonl

REQUESTS = 24  # two shards of 12, parts of 3


@contextmanager
def moto_server_stack(shard_size: int, part_size: int) -> Iterator[LocalStack]:
    """The stack on a moto server of its own, which worker processes can share."""
    server, url = start_moto_server()
    try:
        with LocalStack(
            None,
            served_models=[MODEL],
            endpoint_url=url,
            shard_size=shard_size,
            part_size=part_size,
        ) as stack:
            yield stack
    finally:
        stop_moto_server(server)


@pytest.fixture
def server_stack() -> Iterator[LocalStack]:
    with moto_server_stack(shard_size=12, part_size=3) as stack:
        yield stack


def start_worker(visibility_seconds: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,  # the stack's AWS_ENDPOINT_URL, table, bucket and queue names
        "ENGINE": "fake",
        "SERVED_MODEL_NAME": MODEL,
        "FAKE_SECONDS_PER_REQUEST": "0.15",
        "WORKER_WAIT_SECONDS": "1",
        "WORKER_CONCURRENCY": "1",
        "WORKER_VISIBILITY_SECONDS": str(visibility_seconds),
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    return worker_process(env)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drop_batch(stack: LocalStack, tmp_path: Path) -> str:
    path = write_jsonl(tmp_path / "k.jsonl", [chat_request(f"r{i}") for i in range(REQUESTS)])
    name = stack.drop(path)
    wait_for(lambda: stack.outbox_batch(name) is not None, 30, "intake")
    return name


def record_of(stack: LocalStack, name: str) -> BatchRecord:
    batch = stack.outbox_batch(name)
    assert batch is not None
    record = stack.stages.batches.get_batch(batch.id)
    assert record is not None
    return record


def shard_attempts(stack: LocalStack, name: str) -> int:
    shard = stack.stages.table.shards.get_shard(record_of(stack, name).id, 0)
    return shard.attempts if shard else 0


def assert_exactly_once(stack: LocalStack, name: str, tmp_path: Path) -> None:
    batch = stack.wait_for_outbox(name, timeout=120)
    assert batch.status == "completed"
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (REQUESTS, REQUESTS, 0)
    output = lines_of(stack.download_outbox(name, tmp_path / "out")["output.jsonl"])
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(REQUESTS))


def finish_with_survivor(
    stack: LocalStack, name: str, tmp_path: Path, visibility_seconds: int
) -> None:
    """A fresh worker takes up what is left (a shard once it reappears): every request is
    answered exactly once."""
    survivor = start_worker(visibility_seconds)
    try:
        assert_exactly_once(stack, name, tmp_path)
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)


@pytest.mark.parametrize(
    "kill_after_completed",
    [0, 3, 7],
    ids=["before-any-part", "after-first-part", "mid-part"],
)
def test_sigkill_mid_shard_loses_and_duplicates_nothing(
    server_stack: LocalStack, tmp_path: Path, kill_after_completed: int
) -> None:
    name = drop_batch(server_stack, tmp_path)
    doomed = start_worker(visibility_seconds=2)
    try:
        wait_for(lambda: shard_attempts(server_stack, name) >= 1, 60, "the worker to start")
        wait_for(
            lambda: record_of(server_stack, name).request_completed >= kill_after_completed,
            60,
            f"{kill_after_completed} results",
        )
        doomed.kill()  # SIGKILL: no flush, no release; the heartbeat simply stops
        doomed.wait(timeout=10)
        assert doomed.returncode == -signal.SIGKILL
        finish_with_survivor(server_stack, name, tmp_path, visibility_seconds=2)
    finally:
        if doomed.poll() is None:
            doomed.kill()


def test_sigterm_flushes_releases_and_exits_cleanly(
    server_stack: LocalStack, tmp_path: Path
) -> None:
    name = drop_batch(server_stack, tmp_path)
    # A long visibility timeout: the shard can only come back this fast if it was released.
    worker = start_worker(visibility_seconds=600)
    wait_for(lambda: record_of(server_stack, name).request_completed >= 3, 60, "a first part")
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    record = record_of(server_stack, name)
    assert 0 < record.request_completed < REQUESTS
    assert record.request_completed % 3 == 0  # whole parts only: the part in hand was flushed

    sqs = server_stack.session.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=server_stack.physical_id("ShardQueue"),
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    # Both shards are visible: the untouched one, and the one it was running, released at once
    # (its 600 s visibility timeout could not have expired).
    assert int(attributes["ApproximateNumberOfMessages"]) == 2

    finish_with_survivor(server_stack, name, tmp_path, visibility_seconds=600)
