"""The repository writes only the moves the lifecycle lists."""

from __future__ import annotations

import json

import pytest

from batch_core.intake_jobs import DroppedObject
from batch_core.lifecycle import IllegalTransitionError
from batchctl.local import LocalStack
from tests.conftest import chat_request


def test_a_move_outside_the_lifecycle_never_reaches_the_table(bare_stack: LocalStack) -> None:
    body = json.dumps(chat_request("a")) + "\n"
    bare_stack.session.client("s3").put_object(
        Bucket=bare_stack.bucket, Key="inbox/l.jsonl", Body=body.encode()
    )
    record = bare_stack.stages.intake.ingest_dropped_object(
        DroppedObject(key="inbox/l.jsonl", etag="l")
    )
    assert record is not None and record.status == "in_progress"
    with pytest.raises(IllegalTransitionError, match="from in_progress to completed"):
        bare_stack.stages.table.batches.transition(
            record.id, to_status="completed", from_statuses=["in_progress"]
        )
    after = bare_stack.stages.batches.get_batch(record.id)
    assert after is not None and after.status == "in_progress"
