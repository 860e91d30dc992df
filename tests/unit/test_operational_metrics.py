"""The metrics the dashboard and alarms read: batches by status from the core, GPU utilisation
from the worker (read from nvidia-smi)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from aws_lambda_powertools import Metrics

from batch_core.batch_metrics import count_cost, count_status
from gpu_worker.gpu_monitor import GpuMonitor, gpu_utilization
from gpu_worker.observability import ShardMetrics


def test_batch_statuses_are_counted_into_the_handlers_metric_set() -> None:
    handler_metrics = Metrics(namespace="OpenBatch", service="openbatch")
    handler_metrics.clear_metrics()
    for status in ("in_progress", "completed", "failed", "failed", "validating", "finalizing"):
        count_status(status)  # type: ignore[arg-type]
    emitted = handler_metrics.serialize_metric_set()
    handler_metrics.clear_metrics()
    assert emitted["BatchesStarted"] == [1.0]
    assert emitted["BatchesCompleted"] == [1.0]
    assert emitted["BatchesFailed"] == [1.0, 1.0]
    assert "BatchesValidating" not in emitted and "BatchesFinalizing" not in emitted


def test_an_ended_batch_sends_its_gpu_time_and_cost_and_a_running_one_nothing() -> None:
    from tests.conftest import batch_record

    handler_metrics = Metrics(namespace="OpenBatch", service="openbatch")
    handler_metrics.clear_metrics()
    priced = {"gpu_seconds": 7200.0, "gpu_hourly_price": 0.45}
    count_cost(batch_record("batch_run", "in_progress", 0, **priced))
    count_cost(batch_record("batch_done", "completed", 0, **priced))
    count_cost(batch_record("batch_gone", "cancelled", 0, gpu_seconds=36.0, gpu_hourly_price=1.0))
    emitted = handler_metrics.serialize_metric_set()
    handler_metrics.clear_metrics()
    assert emitted["BatchGpuSeconds"] == [7200.0, 36.0]
    assert emitted["BatchEstimatedCost"] == [pytest.approx(0.9), pytest.approx(0.01)]


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nvidia-smi on PATH that answers as a two-GPU host does (and checks its query)."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--query-gpu=utilization.gpu" ] || exit 9\n'
        "printf '87\\n[N/A]\\n12\\n'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return script


def test_utilisation_is_read_per_gpu_and_unreported_values_skipped(fake_nvidia_smi: Path) -> None:
    assert gpu_utilization() == [87.0, 12.0]


def test_no_nvidia_smi_means_no_samples(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_utilization() is None
    recorded: list[list[float]] = []
    with GpuMonitor(recorded.append, interval_seconds=0.01) as monitor:
        monitor._thread.join(timeout=5)  # it stops by itself: nothing to sample
    assert recorded == []


def test_the_monitor_sends_gpu_utilisation_as_emf(
    fake_nvidia_smi: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = ShardMetrics(namespace="OpenBatch")
    sampled = threading.Event()

    def record(values: list[float]) -> None:
        metrics.record_gpu(values)
        sampled.set()

    with GpuMonitor(record, interval_seconds=60):
        assert sampled.wait(timeout=10)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (emf,) = [line for line in lines if "GpuUtilization" in line]
    assert emf["GpuUtilization"] == [87.0, 12.0]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "OpenBatch"
    assert {"Name": "GpuUtilization", "Unit": "Percent"} in directive["Metrics"]
    assert emf["service"] == "openbatch-worker"


def test_a_failing_recorder_does_not_stop_the_sampling(fake_nvidia_smi: Path) -> None:
    calls: list[list[float]] = []

    def broken(values: list[float]) -> None:
        calls.append(values)
        raise RuntimeError("CloudWatch is down")

    with GpuMonitor(broken, interval_seconds=0.01):
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= 2
