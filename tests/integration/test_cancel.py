"""Cancelling a batch, through the real ASL on moto: partial results plus batch_cancelled lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core.batch_params import BatchParams
from batch_core.errors import ConflictError
from batch_core.intake_jobs import DroppedObject
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import (
    EXAMPLES,
    MODEL,
    assert_ended_early,
    chat_request,
    drop_requests,
    wait_for_progress,
    write_jsonl,
)


def test_cancel_mid_run_keeps_finished_results_and_cancels_the_rest(
    slow_stack: LocalStack, tmp_path: Path
) -> None:
    total = 24
    name = drop_requests(slow_stack, tmp_path, total, "c")
    batch_id = wait_for_progress(slow_stack, name, completed=2)
    cancelling = slow_stack.stages.ending.cancel(batch_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert slow_stack.stages.ending.cancel(batch_id).status in {
        "cancelling",
        "cancelled",
    }  # twice: fine

    parsed, _ = assert_ended_early(
        slow_stack, name, tmp_path / "out", total, "cancelled", "batch_cancelled"
    )
    assert parsed.cancelled_at and parsed.cancelling_at


def test_a_finished_batch_cannot_be_cancelled(
    fake_stack: LocalStack,
) -> None:
    name = fake_stack.drop(EXAMPLES / "chat.jsonl")
    batch = fake_stack.wait_for_outbox(name, timeout=120)
    assert batch.status == "completed"
    with pytest.raises(ConflictError, match="completed"):
        fake_stack.stages.ending.cancel(batch.id)


def test_a_batch_cancelled_while_validating_ends_cancelled_with_every_line_cancelled(
    bare_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = bare_stack.stages
    path = write_jsonl(tmp_path / "v.jsonl", [chat_request(f"r{i}") for i in range(6)])
    key = "inbox/v.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    # The cancel lands while the file is being validated (after the shards are planned).
    put_shards = stages.table.shards.put_shards

    def put_shards_then_cancel(batch_id: str, shards: object) -> None:
        put_shards(batch_id, shards)  # type: ignore[arg-type]
        stages.ending.cancel(batch_id)

    monkeypatch.setattr(stages.table.shards, "put_shards", put_shards_then_cancel)
    record = stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "cancelling"
    assert stages.shard_queue.receive(wait_seconds=0) == []  # nothing was queued
    final = stages.ending.finalize(record.id)  # what the tracker's first look does
    assert final.status == "cancelled"
    assert (final.request_total, final.request_completed, final.request_failed) == (6, 0, 6)
    assert final.output_file_id is None and final.error_file_id


def test_a_cancel_ends_within_a_lease_even_when_a_worker_died_mid_shard(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    from batch_core.messaging import ShardTask
    from batch_core.protocol import EngineResult

    stages = bare_stack.stages
    path = write_jsonl(tmp_path / "d.jsonl", [chat_request(f"r{i}") for i in range(8)])
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, "inbox/d.jsonl")
    record = stages.intake.ingest_dropped_object(DroppedObject(key="inbox/d.jsonl", etag="1"))
    assert record is not None and record.shards_total == 2

    class DyingEngine(FakeEngine):
        """Answers three requests (one part gets written), then the host dies."""

        def run(self, requests: object) -> Iterator[EngineResult]:
            for index, result in enumerate(super().run(requests)):  # type: ignore[arg-type]
                if index == 3:
                    raise RuntimeError("host lost")
                yield result

    task = ShardTask(batch_id=record.id, shard_index=0)
    with pytest.raises(RuntimeError):
        stages.runner.process_shard(task, DyingEngine(MODEL), lease_seconds=1.0)
    stages.ending.cancel(record.id)
    assert (
        stages.ending.finalize(record.id).status == "cancelling"
    )  # the dead worker's lease is live
    time.sleep(1.1)
    final = stages.ending.finalize(record.id)
    assert final.status == "cancelled"
    assert (final.request_total, final.request_completed, final.request_failed) == (8, 3, 5)
    again = stages.ending.finalize(record.id)  # the tracker asking twice changes nothing
    assert (again.request_completed, again.request_failed) == (3, 5)
    assert again.error_file_id == final.error_file_id


def test_an_api_batch_cancelled_before_its_validation_began_ends_cancelled(
    bare_stack: LocalStack,
) -> None:
    from batch_core import s3keys, wiring

    files = wiring.default_stages().files
    stages = bare_stack.stages
    upload = files.create(
        "acme",
        filename="early.jsonl",
        purpose="batch",
        data=json.dumps(chat_request("r0")).encode() + b"\n",
    )
    created = stages.batches.create_batch(
        "acme",
        BatchParams(endpoint="/v1/chat/completions", completion_window="24h"),
        input_file_id=upload.id,
    )
    assert stages.ending.cancel(created.id, tenant="acme").status == "cancelling"
    # The input's S3 event arrives after the cancel.
    ended = stages.intake.ingest_dropped_object(
        DroppedObject(key=s3keys.batch_input_key(created.id), etag="e")
    )
    assert ended is not None and ended.status == "cancelled" and ended.cancelled_at
    assert (ended.request_total, ended.output_file_id, ended.error_file_id) == (0, None, None)
