"""Hardening, round two (issue 25): one tenant's object never breaks what every tenant shares.

On the local stack with the fake engine and tenant limits on: a dropped file whose key takes
all of S3's 1,024 bytes; output read through `/result_parts` and `/results` after its File was
deleted or has expired, and a retry of a batch whose input File was deleted; batches created at
once against the queued-requests limit; Idempotency-Key replays after their batch ended; and a
sweep with one poisoned batch among many expired Files.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from batch_core import s3keys
from batch_core.records import FileRecord
from batch_core.retention import new_file_object
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from handlers import expire
from tests.conftest import (
    MODEL,
    chat_request,
    expire_file_now,
    load_event,
    serve_api,
    write_jsonl,
)
from tests.integration.test_handlers import CONTEXT
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability

KEY = "sk-costs-tenant-0123456789"
NEIGHBOUR = "sk-costs-neighbour-012345"
QUEUED_LIMIT = 50
S3_MAX_KEY_BYTES = 1024


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, seconds_per_request=0.005, max_model_len=64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENANT_MAX_ACTIVE_BATCHES", "4")
        patch.setenv("TENANT_MAX_QUEUED_REQUESTS", str(QUEUED_LIMIT))
        keys = {KEY: "costs", NEIGHBOUR: "neighbour"}
        with serve_api(engine, keys, shard_size=10) as served:
            yield served


def client(running: tuple[LocalStack, ApiServer], key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=running[1].base_url, api_key=key, max_retries=0)


def upload(api: openai.OpenAI, count: int, stem: str) -> str:
    data = b"".join(json.dumps(chat_request(f"{stem}{i}")).encode() + b"\n" for i in range(count))
    return api.files.create(file=(f"{stem}.jsonl", data), purpose="batch").id


def create(api: openai.OpenAI, file_id: str, **extra: Any) -> str:
    batch = api.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **extra,
    )
    return batch.id


def ended(api: openai.OpenAI, batch_id: str, timeout: float = 120) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = api.batches.retrieve(batch_id)
        if batch.status in {"completed", "failed", "expired", "cancelled"}:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"{batch_id} did not end")


def load_is(stack: LocalStack, tenant: str, load: tuple[int, int]) -> bool:
    deadline = time.monotonic() + 15
    while stack.stages.table.tenants.tenant_load(tenant) != load:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def bucket_keys(stack: LocalStack, prefix: str) -> list[str]:
    s3 = stack.session.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.physical_id("DataBucket"), Prefix=prefix
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_drop_key_of_1024_bytes_runs_and_costs_no_one_anything(
    running: tuple[LocalStack, ApiServer], tmp_path: Path
) -> None:
    """S3 takes an inbox key of 1,024 bytes; its outbox keys once took the whole name and
    passed the limit, so every part's batch.json failed and took the worker down. The local
    stack refuses long keys as S3 does (`KeyTooLongError`)."""
    stack = running[0]
    room = S3_MAX_KEY_BYTES - len(s3keys.INBOX_PREFIX) - len(".jsonl")
    name = "é/" + "ü" * ((room - 4) // 2) + "x" * ((room - 4) % 2) + "z"  # é/ 3 bytes, z 1
    assert len(f"{s3keys.INBOX_PREFIX}{name}.jsonl".encode()) == S3_MAX_KEY_BYTES
    count = 25
    lines = [chat_request(f"long{i}") for i in range(count)]
    stack.drop(write_jsonl(tmp_path / "long.jsonl", lines), name)
    bounded = s3keys.outbox_name(f"{s3keys.INBOX_PREFIX}{name}.jsonl")
    assert bounded is not None
    batch = stack.wait_for_outbox(bounded, timeout=120)
    # Another tenant's batch, run by the same worker after it, completes too.
    neighbour = client(running, NEIGHBOUR)
    other = ended(neighbour, create(neighbour, upload(neighbour, 3, "n")))
    longest = max(len(key.encode()) for key in bucket_keys(stack, s3keys.OUTBOX_PREFIX))
    output = stack.download_outbox(bounded, tmp_path / "out")["output.jsonl"].read_text()
    record("tenant costs", "1,024-byte drop key: batch, other tenant's batch",
           f"{batch.status}, {other.status}",
           batch.status == "completed" and other.status == "completed")  # fmt: skip
    record("tenant costs", "longest outbox key (bytes, S3 takes 1,024)", longest, longest <= 1024)
    assert batch.status == "completed" and batch.request_counts.completed == count
    assert len(output.splitlines()) == count
    assert other.status == "completed"
    assert longest <= S3_MAX_KEY_BYTES


def test_deleted_and_expired_output_is_gone_from_results_and_retry(
    running: tuple[LocalStack, ApiServer],
) -> None:
    stack, api = running[0], client(running)
    # The second fails in the engine: its prompt passes the fake model's 64-token context.
    failing = [chat_request("ok0"), chat_request("bad", " ".join(["word"] * 100))]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in failing)
    input_id = api.files.create(file=("mixed.jsonl", data), purpose="batch").id
    batch = ended(api, create(api, input_id))
    parts = api.get(f"/batches/{batch.id}/result_parts", cast_to=httpx.Response).json()["data"]
    kinds_before = sorted(part["kind"] for part in parts)
    assert batch.output_file_id is not None
    api.files.delete(batch.output_file_id)  # the output: deleted by its owner
    assert batch.error_file_id is not None
    expire_file_now(stack, batch.error_file_id)  # the errors: expired
    parts = api.get(f"/batches/{batch.id}/result_parts", cast_to=httpx.Response).json()["data"]
    left = [part["kind"] for part in parts]
    lines_left = api.get(f"/batches/{batch.id}/results", cast_to=httpx.Response).json()["data"]
    result_parts = bucket_keys(stack, s3keys.results_prefix(batch.id))
    # Its failed lines were in the expired error file: no retry brings them back.
    with pytest.raises(openai.ConflictError) as gone_errors:
        api.post(f"/batches/{batch.id}/retry", cast_to=httpx.Response)
    assert "error file" in str(gone_errors.value.body)
    # Nor does the retry of a batch whose input its owner deleted.
    api.files.delete(input_id)
    with pytest.raises(openai.ConflictError) as refused:
        api.post(f"/batches/{batch.id}/retry", cast_to=httpx.Response)
    record("tenant costs", "deleted/expired output via /results: parts left",
           f"{len(left)} of {len(kinds_before)}", not left)  # fmt: skip
    record("tenant costs", "result parts kept in S3 after the output's deletion",
           len(result_parts), not result_parts)  # fmt: skip
    record("tenant costs", "retry after its input was deleted", refused.value.status_code,
           refused.value.status_code == 409)  # fmt: skip
    record("tenant costs", "deleted/expired output via /results: lines left",
           len(lines_left), not lines_left)  # fmt: skip
    assert kinds_before and left == [] and result_parts == []
    assert lines_left == []
    assert "input file" in str(refused.value.body)


def test_batches_created_at_once_never_pass_the_queued_limit(
    running: tuple[LocalStack, ApiServer],
) -> None:
    stack, api = running[0], client(running)
    assert load_is(stack, "costs", (0, 0))
    racers, size = 4, 30  # any two together pass the limit of 50
    file_ids = [upload(api, size, f"race{i}-") for i in range(racers)]
    created: list[str] = []
    refused: list[int] = []

    def create_one(file_id: str) -> None:
        try:
            created.append(create(client(running), file_id))
        except openai.RateLimitError as error:
            refused.append(error.status_code)

    threads = [threading.Thread(target=create_one, args=(f,)) for f in file_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = 0
    ends = []
    for batch_id in created:
        deadline = time.monotonic() + 120
        while (status := api.batches.retrieve(batch_id).status) not in {"completed", "failed"}:
            peak = max(peak, stack.stages.table.tenants.tenant_load("costs")[1])
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ends.append(status)
    ran = ends.count("completed")
    record("tenant costs", "4 x 30 requests created at once, limit 50: ran",
           f"{ran} ran, {len(ends) - ran} failed, {len(refused)} 429", ran == 1)  # fmt: skip
    record("tenant costs", "most requests the tenant held at once", peak, peak <= QUEUED_LIMIT)
    assert ran == 1 and peak <= QUEUED_LIMIT
    assert load_is(stack, "costs", (0, 0))


def test_idempotent_replays_after_the_end_take_no_slot(
    running: tuple[LocalStack, ApiServer],
) -> None:
    stack, api = running[0], client(running)
    file_id = upload(api, 1, "idem")
    headers = {"Idempotency-Key": "replayed-after-its-end"}
    batch_id = create(api, file_id, extra_headers=headers)
    assert ended(api, batch_id).status == "completed"
    replays = scale(5, 20)
    same = sum(create(api, file_id, extra_headers=headers) == batch_id for _ in range(replays))
    assert load_is(stack, "costs", (0, 0))
    load = stack.stages.table.tenants.tenant_load("costs")
    record("tenant costs", "Idempotency-Key replays after the end: load", f"{same}x, {load}",
           same == replays and load == (0, 0))  # fmt: skip
    assert same == replays and load == (0, 0)


def test_a_sweep_with_one_poisoned_batch_deletes_every_expired_file(
    running: tuple[LocalStack, ApiServer],
) -> None:
    """A batch the sweep cannot end (here its table item is unreadable) is logged and left;
    every other overdue batch ends and every expired File is deleted, past the 1,000 a run
    once stopped at."""
    stack = running[0]
    stages = stack.stages
    count = scale(1_100, 5_000)
    now = int(time.time())
    for i in range(count):
        file_id = f"file-swept{i:05d}"
        stored = new_file_object(
            file_id, size=1, created_at=now - 10, filename="x.jsonl", expires_at=now - 1
        )
        stages.table.files.put_file(
            FileRecord(file=stored, s3_key=s3keys.file_key(file_id), tenant="costs")
        )
    api = client(running)
    poisoned = create(api, upload(api, 1, "poison"))
    overdue = create(api, upload(api, 1, "overdue"))
    for batch_id in (poisoned, overdue):
        ended(api, batch_id)
    stack.session.client("dynamodb").update_item(  # both back in the index, window passed
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": f"BATCH#{overdue}"}, "sk": {"S": "META"}},
        UpdateExpression="SET #status = :s, active = :one, expires_at = :t",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":s": {"S": "validating"}, ":one": {"S": "1"},
                                   ":t": {"N": str(now - 10)}},
    )  # fmt: skip
    stack.session.client("dynamodb").update_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": f"BATCH#{poisoned}"}, "sk": {"S": "META"}},
        UpdateExpression="SET #status = :s, active = :one, expires_at = :t",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":s": {"S": "no-such-status"}, ":one": {"S": "1"},
                                   ":t": {"N": str(now - 20)}},
    )  # fmt: skip
    report = expire.handler(load_event("expire_schedule.json"), CONTEXT)
    left = len(stages.table.batches.expired_file_ids(int(time.time()), 10_000))
    overdue_status = stages.table.batches.get_batch(overdue)
    record("tenant costs", f"sweep: {count} expired files, one poisoned batch: left",
           left, left == 0)  # fmt: skip
    record("tenant costs", "sweep: the other overdue batch ended, failures counted",
           f"{overdue_status.status if overdue_status else None}, {report['failures']}",
           overdue_status is not None and overdue_status.status == "expired"
           and report["failures"] == {"expire": 1})  # fmt: skip
    # (The local stack's own scheduled sweep may delete some first: none is left either way.)
    assert left == 0 and report["deleted_files"]
    assert overdue_status is not None and overdue_status.status == "expired"
    assert report["failures"] == {"expire": 1}
    stack.session.client("dynamodb").delete_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": f"BATCH#{poisoned}"}, "sk": {"S": "META"}},
    )
