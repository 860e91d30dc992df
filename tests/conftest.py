"""Shared fixtures: the local stack on moto (fake engine) and event files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from openai.types import Batch as OpenAIBatch

from batch_core.models import BatchStatus
from batch_core.records import BatchRecord
from batch_core.repository import file_pk
from batch_core.table_codec import to_item
from batch_core.table_keys import META, rate_pk
from batchctl.local import LocalStack
from batchctl.server import ApiServer, serve_locally
from gpu_worker.engines.fake import FakeEngine
from tests.receivers import HttpReceiver

EVENTS = Path(__file__).parent.parent / "events"
EXAMPLES = Path(__file__).parent.parent / "examples"
MODEL = "demo-model"

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As the template's Globals set them for the functions.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "openbatch")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "OpenBatch")


@contextmanager
def serve_api(
    engine: FakeEngine, api_keys: dict[str, str], **options: Any
) -> Iterator[tuple[LocalStack, ApiServer]]:
    """The local server for tests of the API's answers, without the per-tenant request rate
    (tested on its own), which a fast test run or many clients at once would exceed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("API_REQUESTS_PER_SECOND", "0")
        with serve_locally(engine, api_keys=api_keys, **options) as running:
            yield running


def load_event(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return document


def chat_request(
    custom_id: str, content: str | None = None, *, model: str = MODEL, max_tokens: int = 8
) -> dict[str, Any]:
    """A chat line; by default it asks something of its own ("Say hello. (<custom_id>)"):
    identical requests run once (`repeats`), so tests that want N runs need N bodies."""
    if content is None:
        content = f"Say hello. ({custom_id})"
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        },
    }


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(MODEL, max_model_len=64)


@pytest.fixture
def fake_stack(fake_engine: FakeEngine) -> Iterator[LocalStack]:
    with LocalStack(fake_engine, shard_size=4, part_size=3) as stack:
        yield stack


@pytest.fixture
def bare_stack() -> Iterator[LocalStack]:
    """moto resources only: no routing, no worker (tests drive the handlers themselves)."""
    with LocalStack(
        None, served_models=[MODEL], route_events=False, shard_size=4, part_size=3
    ) as stack:
        yield stack


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """An HTTP receiver on 127.0.0.1 recording every request, answering 200 unless told
    otherwise (`status`, `answer`, `drip`); shut down after the test."""
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def slow_stack() -> Iterator[LocalStack]:
    """A fake engine at 0.1 s a request: slow enough to cancel or expire a batch mid-run."""
    with LocalStack(FakeEngine(MODEL, seconds_per_request=0.1), shard_size=4, part_size=2) as stack:
        yield stack


def drop_requests(stack: LocalStack, directory: Path, count: int, stem: str) -> str:
    """Drop a file of `count` chat requests r0..r{count-1}; returns its outbox name."""
    lines = [chat_request(f"r{i}") for i in range(count)]
    return stack.drop(write_jsonl(directory / f"{stem}.jsonl", lines))


def wait_for_progress(stack: LocalStack, name: str, completed: int, timeout: float = 60) -> str:
    """Wait until the dropped batch has `completed` results; returns its id."""
    deadline = time.monotonic() + timeout
    while True:
        batch = stack.outbox_batch(name)
        if batch is not None and batch.request_counts.completed >= completed:
            return batch.id
        assert time.monotonic() < deadline, f"{name}: no progress"
        time.sleep(0.05)


def assert_ended_early(
    stack: LocalStack, name: str, out_dir: Path, total: int, status: str, code: str
) -> tuple[OpenAIBatch, dict[str, Path]]:
    """Wait for the batch to end as `status`; check it kept its finished results, wrote a
    `code` line for each request that never ran, and names every custom_id exactly once."""
    final = stack.wait_for_outbox(name, timeout=60)
    paths = stack.download_outbox(name, out_dir)
    parsed = OpenAIBatch.model_validate_json(paths["batch.json"].read_text())
    assert parsed.status == status
    counts = final.request_counts
    assert counts.total == total and 2 <= counts.completed < total
    assert counts.completed + counts.failed == total
    output, errors = lines_of(paths["output.jsonl"]), lines_of(paths["errors.jsonl"])
    assert (len(output), len(errors)) == (counts.completed, counts.failed)
    assert all(line["error"] is None for line in output)
    for line in errors:
        assert line["response"] is None
        assert line["error"]["code"] == code
        assert str(line["id"]).startswith("batch_req_")
    ids = sorted(str(line["custom_id"]) for line in output + errors)
    assert ids == sorted(f"r{i}" for i in range(total))
    return parsed, paths


def expire_file_now(stack: LocalStack, file_id: str) -> None:
    """Move the File's `expires_at` a second into the past, as time would."""
    stack.session.client("dynamodb").update_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": file_pk(file_id)}, "sk": {"S": "META"}},
        UpdateExpression="SET expires_at = :t, #file.expires_at = :t",
        ExpressionAttributeNames={"#file": "file"},
        ExpressionAttributeValues={":t": {"N": str(int(time.time()) - 1)}},
    )


def worker_process(environ: dict[str, str]) -> subprocess.Popen[str]:
    """`python -m gpu_worker` as a container runs it, its output (logs, EMF) on one pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "gpu_worker"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def batch_record(batch_id: str, status: BatchStatus, now: int, **fields: Any) -> BatchRecord:
    """A batch as a stage would have left it (for tests that start mid-way)."""
    values: dict[str, Any] = {
        "id": batch_id,
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-x",
        "completion_window": "24h",
        "status": status,
        "created_at": now,
        "expires_at": now + 86400,
        "input_key": f"batches/{batch_id}/input.jsonl",
    }
    return BatchRecord(**{**values, **fields})


def store_batch(stack: LocalStack, batch_id: str, status: BatchStatus, **fields: Any) -> None:
    """A batch item as a stage would have left it, in the stack's table."""
    record = batch_record(
        batch_id, status, int(time.time()), **{"input_key": "inbox/x.jsonl", **fields}
    )
    stack.stages.table.batches.create_batch(record)


def empty_buckets(stack: LocalStack, *tenants: str) -> None:
    """Remove the tenants' request buckets: a test that ran the limiter on a clock of its
    own leaves them set in that clock's future, which would refuse later tests' requests."""
    access = stack.stages.table.access
    for tenant in tenants:
        access.db.delete_item(
            TableName=access.name, Key=to_item({"pk": rate_pk(tenant), "sk": META})
        )


def start_local_serve(
    *arguments: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`batchctl local serve ARGUMENTS` in its own process, as a user starts it (no AWS
    settings of ours leak in); returns it and what it printed up to "Ctrl-C"."""
    command = [sys.executable, "-m", "batchctl.cli", "local", "serve", *arguments]
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TABLE_", "BUCKET_"))
    }
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**environment, **(env or {})},
    )
    assert process.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 120
    while not any(line.startswith("Ctrl-C") for line in printed):
        assert time.monotonic() < deadline and process.poll() is None, "".join(printed)
        printed.append(process.stdout.readline())
    return process, "".join(printed)


def stop_process(process: subprocess.Popen[str]) -> None:
    """Stop a process started for a test: SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
