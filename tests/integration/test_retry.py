"""Retry of failed lines, through the core on moto: what can be retried, and from where."""

from __future__ import annotations

import json
import time

import pytest

from batch_core import s3keys, wiring
from batch_core.batch_params import BatchParams
from batch_core.errors import ConflictError
from batch_core.records import BatchRecord
from batchctl.local import LocalStack
from tests.conftest import chat_request

TENANT = "retry-tests"
LONG = "word " * 100  # over the fake engine's 64-token context: a 400 line


def run_batch(stack: LocalStack, lines: list[dict[str, object]]) -> BatchRecord:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = wiring.default_stages().files.create(
        TENANT, filename="r.jsonl", purpose="batch", data=data
    )
    created = stack.stages.batches.create_batch(
        TENANT,
        BatchParams(endpoint="/v1/chat/completions", completion_window="24h"),
        input_file_id=uploaded.id,
    )
    deadline = time.monotonic() + 60
    while True:
        record = stack.stages.batches.get_for(TENANT, created.id)
        if record.status in {"completed", "failed", "expired", "cancelled"}:
            return record
        assert time.monotonic() < deadline, record.status
        time.sleep(0.1)


def child_custom_ids(stack: LocalStack, child: BatchRecord) -> list[str]:
    """The custom_ids of the child's input, once its intake job has written it."""
    deadline = time.monotonic() + 30
    while (record := stack.stages.table.files.get_file(child.input_file_id)) is None or (
        record.file.status == "uploaded"
    ):
        assert time.monotonic() < deadline, "the retry's input was never built"
        time.sleep(0.1)
    assert record.file.status == "processed"
    data = stack.stages.store.read(s3keys.file_key(child.input_file_id))
    return [json.loads(line)["custom_id"] for line in data.splitlines()]


def test_retry_needs_a_batch_that_ran_and_has_failures(fake_stack: LocalStack) -> None:
    clean = run_batch(fake_stack, [chat_request("fine")])
    assert clean.status == "completed"
    with pytest.raises(ConflictError, match="no failed requests"):
        fake_stack.stages.retries.retry(TENANT, clean.id)
    invalid = run_batch(fake_stack, [{"custom_id": "x"}])
    assert invalid.status == "failed"
    with pytest.raises(ConflictError, match="is failed"):
        fake_stack.stages.retries.retry(TENANT, invalid.id)


def test_retry_reads_the_input_file_once_the_batch_copy_is_gone(fake_stack: LocalStack) -> None:
    parent = run_batch(fake_stack, [chat_request("ok"), chat_request("bad", LONG)])
    fake_stack.stages.store.delete(parent.input_key)  # the bucket's lifecycle rule expired it
    child = fake_stack.stages.retries.retry(TENANT, parent.id)
    assert child_custom_ids(fake_stack, child) == ["bad"]


def test_retry_says_when_the_working_data_expired(fake_stack: LocalStack) -> None:
    parent = run_batch(fake_stack, [chat_request("ok"), chat_request("bad", LONG)])
    fake_stack.stages.store.delete_prefix(s3keys.errors_prefix(parent.id))
    with pytest.raises(ConflictError, match="expired"):
        fake_stack.stages.retries.retry(TENANT, parent.id)


def test_a_retry_whose_input_is_gone_ends_failed_saying_why(fake_stack: LocalStack) -> None:
    parent = run_batch(fake_stack, [chat_request("ok"), chat_request("bad", LONG)])
    store = fake_stack.stages.store
    store.delete(parent.input_key)  # the batch's copy and its input File, both gone
    input_file = fake_stack.stages.table.files.get_file(parent.input_file_id)
    assert input_file is not None
    store.delete(input_file.s3_key)
    child = fake_stack.stages.retries.retry(TENANT, parent.id)  # the job finds out, not this call
    deadline = time.monotonic() + 30
    while (record := fake_stack.stages.batches.get_for(TENANT, child.id)).status == "validating":
        assert time.monotonic() < deadline, "the retry never ended"
        time.sleep(0.1)
    assert record.status == "failed"
    assert record.errors is not None and record.errors[0].code == "invalid_input_file"
    assert "no longer exists" in (record.errors[0].message or "")
    file = fake_stack.stages.table.files.get_file(child.input_file_id)
    assert file is not None and file.file.status == "error"
