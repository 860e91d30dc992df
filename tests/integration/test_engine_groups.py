"""Several engines per host: one worker process per GPU group, each with its own shard loops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from gpu_worker.engine_groups import engine_groups
from tests.conftest import MODEL, worker_process
from tests.integration.test_worker_faults import (
    assert_exactly_once,
    drop_batch,
    finish_with_survivor,
    moto_server_stack,
    record_of,
    wait_for,
)


def test_gpus_split_into_whole_groups() -> None:
    eight = [str(i) for i in range(8)]
    assert engine_groups(eight, 1) == [[gpu] for gpu in eight]  # a 7B model: 8 engines
    assert engine_groups(eight, 4) == [eight[:4], eight[4:]]  # tensor parallel over 4
    assert engine_groups(["0", "1", "2"], 2) == [["0", "1"]]  # the odd GPU stays idle
    assert engine_groups(["0"], 2) == []


@pytest.fixture
def server_stack() -> Iterator[LocalStack]:
    with moto_server_stack(shard_size=12, part_size=3) as stack:
        yield stack


def four_gpu_host(**environ: str) -> subprocess.Popen[str]:
    """A worker task on a 4-GPU host, one engine per 2 GPUs (fake engines at 0.3 s a
    request: a shard of 12 takes 3.6 s), `environ` added."""
    return worker_process(
        {
            **os.environ,
            "ENGINE": "fake",
            "SERVED_MODEL_NAME": MODEL,
            "FAKE_SECONDS_PER_REQUEST": "0.3",
            "WORKER_WAIT_SECONDS": "1",
            "WORKER_CONCURRENCY": "1",  # one shard per engine at a time
            "CUDA_VISIBLE_DEVICES": "0,1,2,3",
            "GPUS_PER_ENGINE": "2",
            "POWERTOOLS_METRICS_DISABLED": "true",
            **environ,
        }
    )


def test_a_four_gpu_host_runs_two_engines_each_on_its_own_gpus(
    server_stack: LocalStack, tmp_path: Path
) -> None:
    name = drop_batch(server_stack, tmp_path)  # two shards of 12
    host = four_gpu_host()
    try:
        # Two engines, one shard each, side by side: both shards are seen running at once
        # (one engine would run them one after the other: never both). No clock involved.
        both_running = False

        def done() -> bool:
            nonlocal both_running
            record = record_of(server_stack, name)
            shards = server_stack.stages.table.shards
            running = [shards.get_shard(record.id, i) for i in range(record.shards_total)]
            both_running = both_running or all(s and s.status == "running" for s in running)
            return record.request_completed == 24

        wait_for(done, 60, "the batch")
        assert both_running
        host.send_signal(signal.SIGTERM)  # ECS stops the task: every engine's worker stops
        output, _ = host.communicate(timeout=30)
        assert host.returncode == 0, output
    finally:
        if host.poll() is None:
            host.kill()
    ready = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"worker ready"' in line
    ]
    assert sorted(entry["gpus"] for entry in ready) == ["0,1", "2,3"]
    assert output.count('"worker stopped"') == 2
    assert_exactly_once(server_stack, name, tmp_path)


def test_an_engine_that_fails_stops_the_host_and_its_shards_go_to_another(
    server_stack: LocalStack, tmp_path: Path
) -> None:
    name = drop_batch(server_stack, tmp_path)  # two shards of 12
    host = four_gpu_host(
        WORKER_VISIBILITY_SECONDS="600",  # back this soon only if released
        FAKE_FAIL_ON_GPU="3",  # the second group's engine cannot start
    )
    try:
        output, _ = host.communicate(timeout=60)
    finally:
        if host.poll() is None:
            host.kill()
    # The failed engine's worker takes the healthy one down with it: ECS starts a fresh task
    # (the task exits non-zero), and the healthy one released what it held on the way out.
    assert host.returncode == 1, output
    assert "an engine's worker failed" in output
    assert "GPU 3 cannot load it" in output
    record = record_of(server_stack, name)
    assert record.request_completed < 24
    finish_with_survivor(server_stack, name, tmp_path, visibility_seconds=600)
