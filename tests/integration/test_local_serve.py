"""`batchctl local serve` as a user runs it: a separate process, the openai SDK on its API
and boto3 on its S3 endpoint (drop mode), then SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import boto3
import openai
import pytest

from batchctl.moto_server import _free_port
from tests.conftest import MODEL, chat_request, start_local_serve

KEY = "sk-serve-0123456789"


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process, text = start_local_serve(
        "--port", str(_free_port()), "--api-key", KEY, "--engine", "fake", "--model", MODEL
    )
    found = {
        "api": re.search(r"^API\s+(\S+)", text, re.M),
        "s3": re.search(r"^S3\s+(\S+)\s+\(bucket (\S+);", text, re.M),
    }
    assert found["api"] and found["s3"], text
    info = {
        "api": found["api"].group(1),
        "s3": found["s3"].group(1),
        "bucket": found["s3"].group(2),
    }
    try:
        yield process, info
    finally:
        if process.poll() is None:
            process.kill()


def test_local_serve_answers_the_sdk_and_s3_drops_then_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, info = served
    client = openai.OpenAI(base_url=info["api"], api_key=KEY, max_retries=0)
    data = b"".join(json.dumps(chat_request(f"r{i}")).encode() + b"\n" for i in range(3))
    uploaded = client.files.create(file=("s.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=info["s3"],
        region_name="us-east-1",
        aws_access_key_id="any",
        aws_secret_access_key="any",
    )
    s3.put_object(Bucket=info["bucket"], Key="inbox/dropped.jsonl", Body=data)
    deadline = time.monotonic() + 60
    while True:
        status = client.batches.retrieve(batch.id).status
        try:
            dropped = json.loads(
                s3.get_object(Bucket=info["bucket"], Key="outbox/dropped/batch.json")["Body"].read()
            )
        except s3.exceptions.NoSuchKey:
            dropped = {"status": "not yet"}
        if status == "completed" and dropped["status"] == "completed":
            break
        assert time.monotonic() < deadline, (status, dropped["status"])
        time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_the_sdk_pages_over_a_hundred_files_and_cancels_in_a_loop_without_a_429(
    served: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    """At the default request rate, what a script does with the SDK fits a tenant's share:
    auto-paging two at a time over more than 100 files, then cancelling batches one after
    another, with no retries and not one 429."""
    _, info = served
    statuses: list[int] = []
    counting = openai.DefaultHttpxClient(
        event_hooks={"response": [lambda r: statuses.append(r.status_code)]}
    )
    client = openai.OpenAI(base_url=info["api"], api_key=KEY, max_retries=0, http_client=counting)
    data = json.dumps(chat_request("one")).encode() + b"\n"
    created = [
        client.files.create(file=(f"many-{i}.jsonl", data), purpose="batch").id for i in range(105)
    ]
    page = client.files.list(limit=2)
    assert len(page.data) == 2 and page.has_more  # two a page: the SDK fetches the rest
    walked = [file.id for file in page]  # the SyncCursorPage's own auto-paging
    assert len(walked) == len(set(walked)) == 105
    assert set(walked) == set(created)
    batches = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for file_id in created[:6]
    ]
    for batch_id in batches:
        assert client.batches.cancel(batch_id).status in {"cancelling", "cancelled", "completed"}
    assert statuses.count(429) == 0
    assert statuses.count(200) == 105 + 53 + 12  # the creates, the pages, the batches
