"""Expiry: the schedule's handler finds overdue batches through the index and ends them."""

from __future__ import annotations

import time
from pathlib import Path

from batch_core.repository import batch_pk
from batchctl.local import LocalStack
from handlers import expire
from tests.conftest import (
    assert_ended_early,
    chat_request,
    drop_requests,
    lines_of,
    load_event,
    wait_for_progress,
    write_jsonl,
)
from tests.integration.test_handlers import CONTEXT


def backdate(stack: LocalStack, batch_id: str, seconds: int = 1) -> None:
    """Make the batch's completion window end `seconds` ago."""
    stack.session.client("dynamodb").update_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": batch_pk(batch_id)}, "sk": {"S": "META"}},
        UpdateExpression="SET expires_at = :t",
        ExpressionAttributeValues={":t": {"N": str(int(time.time()) - seconds)}},
    )


def test_an_overdue_batch_expires_keeping_finished_results(
    slow_stack: LocalStack, tmp_path: Path
) -> None:
    total = 24
    name = drop_requests(slow_stack, tmp_path, total, "x")
    other = slow_stack.drop(write_jsonl(tmp_path / "y.jsonl", [chat_request("keep")]))
    batch_id = wait_for_progress(slow_stack, name, completed=2)
    backdate(slow_stack, batch_id)

    result = expire.handler(load_event("expire_schedule.json"), CONTEXT)
    assert result == {
        "expired": [batch_id],
        "deleted_files": [],
        "failures": {},
    }  # found through the index; the other is not due

    parsed, paths = assert_ended_early(
        slow_stack, name, tmp_path / "out", total, "expired", "batch_expired"
    )
    assert parsed.expired_at and parsed.finalizing_at
    (first_error,) = lines_of(paths["errors.jsonl"])[:1]
    assert first_error["error"]["message"] == (
        "This request could not be executed before the completion window expired."
    )
    assert slow_stack.wait_for_outbox(other, timeout=60).status == "completed"
    # A finished batch leaves the index: the next run finds nothing.
    assert expire.handler(load_event("expire_schedule.json"), CONTEXT)["expired"] == []


def test_a_batch_stuck_in_validation_expires_at_once(bare_stack: LocalStack) -> None:
    from batch_core.records import BatchRecord

    stages = bare_stack.stages
    stuck = BatchRecord(
        id="batch_stuck",
        endpoint="/v1/chat/completions",
        input_file_id="file-stuck",
        completion_window="24h",
        status="validating",
        created_at=int(time.time()) - 90000,
        expires_at=int(time.time()) - 3600,
        input_key="inbox/stuck.jsonl",
    )
    assert stages.table.batches.create_batch(stuck)
    (expired,) = stages.ending.expire_overdue()
    assert (expired.id, expired.status) == ("batch_stuck", "expired")
    assert expired.expired_at is not None
    assert stages.ending.expire_overdue() == []
