"""A worker's cold start as metrics: ECS's image pull read from the task metadata endpoint (as
ECS serves it, nanoseconds and all), the process's weights and engine phases, sent as EMF
once the engine is ready, and shown on the dashboard."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from batchctl.template import load_template
from gpu_worker.cold_start import ColdStart, ImagePull, fetch_task_metadata, image_pull
from gpu_worker.observability import ShardMetrics

# A v4 task metadata document's times (ECS's format: nanoseconds, Z).
TASK = {
    "Cluster": "workers",
    "PullStartedAt": "2026-12-03T10:00:00.250000123Z",
    "PullStoppedAt": "2026-12-03T10:03:20.750000987Z",
    "Containers": [{"Name": "worker"}],
}
PULL_STARTED = 1796292000.25  # 2026-12-03T10:00:00.25Z


class Clock:
    def __init__(self, *times: float) -> None:
        self._times = list(times)

    def __call__(self) -> float:
        return self._times.pop(0)


def test_the_phases_run_from_the_pull_through_the_weights_to_the_engine() -> None:
    pull = image_pull(TASK)
    assert pull == ImagePull(PULL_STARTED, PULL_STARTED + 200.5)
    # The process starts 30 s after the pull, has its weights 90 s later, its engine 240 s on.
    process = PULL_STARTED + 230.5
    start = ColdStart(clock=Clock(process, process + 90, process + 330))
    start.weights_ready()
    start.engine_ready()
    assert start.phases(pull) == pytest.approx(
        {"ImagePull": 200.5, "Startup": 30.0, "Weights": 90.0, "Engine": 240.0, "Total": 560.5}
    )
    # Outside ECS (no pull times): the process's phases, the total from the process's start.
    assert start.phases(None) == pytest.approx({"Weights": 90.0, "Engine": 240.0, "Total": 330.0})


def test_no_pull_times_no_pull_phase() -> None:
    assert image_pull({}) is None
    assert image_pull({"PullStartedAt": "2026-12-03T10:00:00Z"}) is None  # still pulling
    assert image_pull({"PullStartedAt": "soon", "PullStoppedAt": "later"}) is None
    start = ColdStart(clock=Clock(100.0, 110.0))
    start.weights_ready()
    assert start.phases(None) == {"Weights": 10.0}  # the engine never came up: no total


@pytest.fixture
def metadata_endpoint() -> Iterator[str]:
    """ECS's task metadata endpoint: GET {base}/task answers TASK."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(TASK).encode() if self.path == "/v4/abc/task" else b""
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
    server.shutdown()
    server.server_close()


def test_the_pull_is_read_from_the_tasks_metadata_endpoint(metadata_endpoint: str) -> None:
    environ = {"ECS_CONTAINER_METADATA_URI_V4": metadata_endpoint}
    assert image_pull(fetch_task_metadata(environ)) == ImagePull(PULL_STARTED, PULL_STARTED + 200.5)
    assert fetch_task_metadata({}) == {}  # not on ECS
    # An endpoint that fails costs the metric, never the start.
    assert fetch_task_metadata({"ECS_CONTAINER_METADATA_URI_V4": metadata_endpoint + "x"}) == {}


def test_the_phases_are_sent_as_emf_once(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = ShardMetrics(namespace="OpenBatch")
    # Powertools keeps one metric set per process: what another test of this process added
    # and did not flush would go out with these.
    metrics._metrics.clear_metrics()
    capsys.readouterr()
    metrics.record_cold_start(
        {"ImagePull": 200.5, "Weights": 90.0, "Engine": 240.0, "Total": 560.5}
    )
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "OpenBatch"
    sent = {m["Name"]: emf[m["Name"]] for m in directive["Metrics"]}
    assert sent == {
        "ColdStartImagePullSeconds": [200.5],
        "ColdStartWeightsSeconds": [90.0],
        "ColdStartEngineSeconds": [240.0],
        "ColdStartSeconds": [560.5],
    }
    assert {m["Unit"] for m in directive["Metrics"]} == {"Seconds"}
    assert emf["service"] == "openbatch-worker"


def test_the_dashboard_shows_each_phase() -> None:
    body = load_template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))["widgets"]
    (widget,) = [w for w in widgets if "cold start" in w["properties"].get("title", "")]
    shown = {m[1] for m in widget["properties"]["metrics"] if m[0] == "OpenBatch"}
    assert shown == {
        "ColdStartImagePullSeconds",
        "ColdStartStartupSeconds",
        "ColdStartWeightsSeconds",
        "ColdStartEngineSeconds",
        "ColdStartSeconds",
    }
