"""`make demo` as a new user sees it: `batchctl local run` on the example file with the real
engine prints our lines only (the engine's go to out/<name>/engine.log), its progress line
moves, and nothing is printed at exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchctl.template import PROJECT_ROOT

pytestmark = pytest.mark.e2e

NOISE = re.compile(r"Traceback|Exception ignored|Warning|WARNING|leaked|nanobind|resource_tracker")


def run_demo(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batchctl.cli", "local", "run", "examples/chat.jsonl"]
    command += ["--out", str(out), "--engine", "vllm", "--served-model-name", "demo-model"]
    command += ["--shard-size", "4", *extra]  # the Makefile's demo line
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TABLE_", "BUCKET_"))}
    env.pop("MODEL", None)
    return subprocess.run(
        command,
        check=False,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_demo_prints_only_our_lines_and_a_moving_progress(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "chat")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert not NOISE.search(printed), printed
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    counts = [re.search(r"\] (\d+)/20 done", line) for line in progress]
    done = [int(found.group(1)) for found in counts if found]
    assert len(set(done)) >= 3, progress  # it moves, not 0 then 20
    assert done == sorted(done) and done[-1] == 20
    assert "Batch batch_" in result.stdout and "succeeded  20" in result.stdout
    log = (tmp_path / "chat" / "engine.log").read_text()
    assert "vllm" in log.lower() and len(log.splitlines()) > 5  # what the terminal was spared
