"""Nothing is ever stuck: the expiry sweep ends a batch that is still not terminal well past
its window, whatever its tracker, shards or workers did; an intake that fails every attempt
ends `failed`. The service runs directly on moto (no tracker, no router), so the failures
are the ones chosen here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batch_core import s3keys
from batch_core.intake import Intake
from batch_core.messaging import ShardTask
from batch_core.stages import Stages
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, drop_requests, write_jsonl
from tests.integration.test_expire import backdate
from tests.integration.test_shard_recovery import start_batch

PAST_GRACE = 2 * 3600  # stuck_after_seconds is an hour by default


def results_of(service: Stages, batch_id: str) -> tuple[list[str], list[str]]:
    """custom_ids of the output and error files of an ended batch."""
    record = service.batches.get_batch(batch_id)
    assert record is not None
    ids: list[list[str]] = []
    for file_id in (record.output_file_id, record.error_file_id):
        if file_id is None:
            ids.append([])
            continue
        data = service.store.read(s3keys.file_key(file_id)).decode()
        ids.append([json.loads(line)["custom_id"] for line in data.splitlines()])
    return ids[0], ids[1]


def test_a_batch_with_a_dead_tracker_and_a_hung_worker_is_ended_by_the_sweep(
    bare_stack: LocalStack,
) -> None:
    service, batch_id = start_batch(bare_stack, 10)  # shards of 4: 3 shards
    service.runner.process_shard(ShardTask(batch_id=batch_id, shard_index=0), FakeEngine(MODEL))
    # A worker that hangs on to shard 1 for ever (its heartbeat still renews the lease).
    hung = service.table.shards.begin_shard_attempt(
        batch_id, 1, owner="hung", lease_until=time.time() + 10**6, now=time.time()
    )
    assert hung is not None
    backdate(bare_stack, batch_id, seconds=10)
    (first,) = service.ending.expire_overdue()
    assert first.status == "finalizing"  # within the grace: the live lease is waited for
    backdate(bare_stack, batch_id, seconds=PAST_GRACE)
    (ended,) = service.ending.expire_overdue()
    assert ended.status == "expired"
    counts = ended.to_batch().request_counts
    assert (counts.total, counts.completed, counts.failed) == (10, 4, 6)
    output, errors = results_of(service, batch_id)
    assert sorted(output + errors) == sorted(f"r{i}" for i in range(10))
    assert sorted(output) == ["r0", "r1", "r2", "r3"]
    assert service.ending.expire_overdue() == []  # terminal: out of the index


def test_a_cancel_nobody_finished_is_ended_by_the_sweep(bare_stack: LocalStack) -> None:
    service, batch_id = start_batch(bare_stack, 6)
    service.runner.process_shard(ShardTask(batch_id=batch_id, shard_index=0), FakeEngine(MODEL))
    assert service.ending.cancel(batch_id).status == "cancelling"  # and the tracker is gone
    backdate(bare_stack, batch_id, seconds=PAST_GRACE)
    (ended,) = service.ending.expire_overdue()
    assert ended.status == "cancelled"
    output, errors = results_of(service, batch_id)
    assert (len(output), len(errors)) == (4, 2)
    assert sorted(output + errors) == sorted(f"r{i}" for i in range(6))


def test_a_finished_batch_whose_finalize_never_came_is_completed_by_the_sweep(
    bare_stack: LocalStack,
) -> None:
    service, batch_id = start_batch(bare_stack, 6)
    for index in range(2):
        service.runner.process_shard(
            ShardTask(batch_id=batch_id, shard_index=index), FakeEngine(MODEL)
        )
    assert service.table.batches.transition(
        batch_id, to_status="finalizing", from_statuses=["in_progress"]
    )  # the tracker saw it done, then its finalize step died for good
    backdate(bare_stack, batch_id, seconds=PAST_GRACE)
    (ended,) = service.ending.expire_overdue()
    assert ended.status == "completed"
    output, errors = results_of(service, batch_id)
    assert sorted(output) == sorted(f"r{i}" for i in range(6)) and errors == []


def test_an_intake_that_fails_every_attempt_ends_failed_not_validating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalStack(FakeEngine(MODEL), shard_size=4, part_size=3) as stack:

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the validator has a bug")

        with monkeypatch.context() as patch:
            patch.setattr(Intake, "_validate_and_plan", broken)
            name = stack.drop(write_jsonl(tmp_path / "doomed.jsonl", [chat_request("a")]))
            # Five deliveries two seconds apart, then the dead-letter queue's consumer.
            final = stack.wait_for_outbox(name, timeout=90)
        assert final.status == "failed"
        assert final.errors is not None and final.errors.data
        assert final.errors.data[0].code == "intake_failed"
        assert final.failed_at is not None
        # The next file goes through as usual.
        after = stack.wait_for_outbox(drop_requests(stack, tmp_path, 2, "next"), timeout=60)
        assert after.status == "completed"
