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
