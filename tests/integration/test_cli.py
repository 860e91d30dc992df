"""`batchctl local run`: the command-line contract other tools build on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from openai.types import Batch as OpenAIBatch

from tests.conftest import EXAMPLES, chat_request, write_jsonl


def batchctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchctl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_local_run_writes_the_three_files_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "chat"
    result = batchctl(
        "local",
        "run",
        str(EXAMPLES / "chat.jsonl"),
        "--out",
        str(out),
        "--engine",
        "fake",
        "--model",
        "demo-model",
    )
    assert result.returncode == 0, result.stderr
    batch = OpenAIBatch.model_validate_json((out / "batch.json").read_text())
    assert batch.status == "completed"
    assert len((out / "output.jsonl").read_text().splitlines()) == 20
    assert (out / "errors.jsonl").read_text() == ""
    assert "succeeded  20" in result.stdout


def test_a_failed_batch_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "bad.jsonl", [chat_request("a"), "not json"])
    result = batchctl(
        "local",
        "run",
        str(source),
        "--out",
        str(tmp_path / "bad"),
        "--engine",
        "fake",
        "--model",
        "demo-model",
    )
    assert result.returncode == 0, result.stderr
    batch = json.loads((tmp_path / "bad" / "batch.json").read_text())
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["line"] == 2
    assert "line 2: [invalid_json_line]" in result.stdout


def test_a_request_for_another_model_is_a_validation_error(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "other.jsonl", [chat_request("a", model="someone-else")])
    result = batchctl(
        "local",
        "run",
        str(source),
        "--out",
        str(tmp_path / "o"),
        "--engine",
        "fake",
        "--model",
        "demo-model",
    )
    assert result.returncode == 0
    batch = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "model_not_found"


def test_a_missing_input_file_is_a_tool_error(tmp_path: Path) -> None:
    result = batchctl(
        "local",
        "run",
        str(tmp_path / "nope.jsonl"),
        "--out",
        str(tmp_path / "x"),
        "--engine",
        "fake",
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_local_run_serves_several_models_each_on_its_own_worker(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "b.jsonl", [chat_request(f"b{i}", model="model-b") for i in range(5)]
    )
    out = tmp_path / "b"
    result = batchctl(
        "local", "run", str(source), "--out", str(out), "--engine", "fake",
        "--model", "model-a", "--model", "model-b", "--shard-size", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serving 'model-a', 'model-b'" in result.stdout
    output = [json.loads(line) for line in (out / "output.jsonl").read_text().splitlines()]
    assert len(output) == 5 and {line["response"]["body"]["model"] for line in output} == {
        "model-b"
    }
