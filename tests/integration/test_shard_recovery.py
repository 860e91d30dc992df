"""A shard interrupted at any point is finished by a later attempt: every custom_id exactly once,
counts exact. Runs the stages directly on moto (no routing), so each crash point is chosen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from batch_core import s3keys
from batch_core.intake_jobs import DroppedObject
from batch_core.messaging import ShardTask
from batch_core.protocol import EngineRequest, EngineResult
from batch_core.stages import Stages
from batch_core.table_shards import ShardTable
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request


class CrashError(Exception):
    """Stands for the worker process dying."""


class CrashingEngine:
    """Answers `survive` requests, then dies."""

    def __init__(self, survive: int) -> None:
        self._inner = FakeEngine(MODEL)
        self._survive = survive

    @property
    def served_model(self) -> str:
        return MODEL

    def has_room(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        for count, result in enumerate(self._inner.run(requests)):
            if count == self._survive:
                raise CrashError
            yield result


def start_batch(stack: LocalStack, count: int) -> tuple[Stages, str]:
    stages = stack.stages
    body = "".join(json.dumps(chat_request(f"r{i}")) + "\n" for i in range(count))
    stack.session.client("s3").put_object(
        Bucket=stack.bucket, Key="inbox/crash.jsonl", Body=body.encode()
    )
    record = stages.intake.ingest_dropped_object(DroppedObject(key="inbox/crash.jsonl", etag="e1"))
    assert record is not None and record.status == "in_progress"
    return stages, record.id


def crash_once_in(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    action: Callable[[], object],
    when: Callable[[dict[str, Any]], bool] = lambda kwargs: True,
) -> None:
    """Run `action` with the shard table dying at `method` (for calls whose keyword
    arguments satisfy `when`), then restore the method."""
    original = getattr(ShardTable, method)

    def die(self: ShardTable, *args: Any, **kwargs: Any) -> bool:
        if when(kwargs):
            raise CrashError
        result: bool = original(self, *args, **kwargs)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(ShardTable, method, die)
        with pytest.raises(CrashError):
            action()


def written_ids(stages: Stages, batch_id: str) -> list[str]:
    ids = []
    for prefix in (s3keys.results_prefix(batch_id), s3keys.errors_prefix(batch_id)):
        for key in stages.store.list_keys(prefix):
            ids += [
                json.loads(line)["custom_id"]
                for line in stages.store.read(key).splitlines()
                if line
            ]
    return ids


@pytest.mark.parametrize("survive", [0, 1, 2, 3])
def test_a_crash_mid_shard_loses_and_duplicates_nothing(
    bare_stack: LocalStack, survive: int
) -> None:
    # 4 requests per shard, parts of 3 results: crashes before, inside and after a part.
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    with pytest.raises(CrashError):
        # A crashed attempt holds its lease until it lapses; lease 0 lapses at once.
        stages.runner.process_shard(task, CrashingEngine(survive), lease_seconds=0)
    assert stages.runner.process_shard(task, FakeEngine(MODEL)).outcome == "done"

    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]
    record = stages.batches.get_batch(batch_id)
    assert record is not None
    assert (record.request_completed, record.request_failed, record.shards_pending) == (4, 0, 0)


def test_a_part_written_but_not_counted_is_counted_once_on_redelivery(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    crash_once_in(
        monkeypatch,
        "commit_part",
        lambda: stages.runner.process_shard(task, FakeEngine(MODEL), lease_seconds=0),
    )
    assert stages.store.list_keys(s3keys.results_prefix(batch_id, 0))  # the part is in S3

    assert stages.runner.process_shard(task, FakeEngine(MODEL)).outcome == "done"
    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]
    record = stages.batches.get_batch(batch_id)
    assert record is not None
    assert (record.request_completed, record.request_failed) == (4, 0)


def test_a_crash_while_committing_the_last_part_settles_once(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last part's objects are written, then the commit that also settles the shard
    dies: the next attempt counts that part once and settles the shard once."""
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    crash_once_in(
        monkeypatch,
        "commit_part",
        lambda: stages.runner.process_shard(task, FakeEngine(MODEL), lease_seconds=0),
        when=lambda kwargs: bool(kwargs.get("settle")),
    )
    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]
    engine = FakeEngine(MODEL)
    assert stages.runner.process_shard(task, engine).outcome == "done"
    assert engine.calls == 0  # everything was already written
    record = stages.batches.get_batch(batch_id)
    assert record is not None
    assert (record.request_completed, record.shards_pending) == (4, 0)


def test_a_duplicated_message_for_a_done_shard_changes_nothing(bare_stack: LocalStack) -> None:
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    engine = FakeEngine(MODEL)
    assert stages.runner.process_shard(task, engine).outcome == "done"
    calls = engine.calls
    assert stages.runner.process_shard(task, engine).outcome == "skipped"
    assert engine.calls == calls
    record = stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)


def test_a_stop_request_interrupts_between_parts_and_the_rest_runs_later(
    bare_stack: LocalStack,
) -> None:
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    run = stages.runner.process_shard(task, FakeEngine(MODEL), should_stop=lambda: True)
    assert run.outcome == "interrupted"
    record = stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (3, 1)
    assert stages.runner.process_shard(task, FakeEngine(MODEL)).outcome == "done"
    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]


def test_finalize_twice_gives_the_same_files_and_counts(bare_stack: LocalStack) -> None:
    stages, batch_id = start_batch(bare_stack, 6)
    for index in range(2):
        assert (
            stages.runner.process_shard(
                ShardTask(batch_id=batch_id, shard_index=index), FakeEngine(MODEL)
            ).outcome
            == "done"
        )
    first = stages.ending.finalize(batch_id)
    first_output = stages.store.read(s3keys.file_key(first.output_file_id or ""))
    # A second run (a redelivered finalize message) is harmless; so is re-running from finalizing.
    second = stages.ending.finalize(batch_id)
    assert (second.output_file_id, second.error_file_id, second.request_completed) == (
        first.output_file_id,
        first.error_file_id,
        6,
    )
    assert stages.store.read(s3keys.file_key(second.output_file_id or "")) == first_output
    assert len(first_output.splitlines()) == 6
    assert stages.table.files.get_file(first.output_file_id or "") is not None


def test_a_batch_that_stops_running_stops_its_shards_after_the_current_part(
    bare_stack: LocalStack,
) -> None:
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)

    class CancellingEngine(FakeEngine):
        """Marks the batch cancelling while its first results come back (as a cancel would)."""

        def run(self, requests: Any) -> Any:
            for index, result in enumerate(super().run(requests)):
                if index == 1:
                    stages.table.batches.transition(
                        batch_id, to_status="cancelling", from_statuses=["in_progress"]
                    )
                yield result

    run = stages.runner.process_shard(task, CancellingEngine(MODEL))
    assert run.outcome == "stopped"
    assert (run.succeeded, run.failed) == (3, 0)  # the part in hand was still written
    record = stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (3, 1)
    assert sorted(written_ids(stages, batch_id)) == ["r0", "r1", "r2"]


def test_a_shard_leased_by_a_live_attempt_is_left_alone_until_the_lease_lapses(
    bare_stack: LocalStack,
) -> None:
    # SQS can deliver one message twice at once: the second worker must not run the shard.
    stages, batch_id = start_batch(bare_stack, 4)
    task = ShardTask(batch_id=batch_id, shard_index=0)
    first = "worker-a"
    with pytest.raises(CrashError):  # holds the lease, then stalls (here: dies)
        stages.runner.process_shard(task, CrashingEngine(1), owner=first, lease_seconds=1.0)
    engine = FakeEngine(MODEL)
    assert stages.runner.process_shard(task, engine, owner="worker-b").outcome == "busy"
    assert engine.calls == 0
    assert stages.runner.renew_shard_lease(task, first, 1.0)  # the holder can renew
    assert not stages.runner.renew_shard_lease(task, "worker-b", 1.0)  # nobody else can
    time.sleep(1.1)
    assert stages.runner.process_shard(task, engine, owner="worker-b").outcome == "done"
    assert sorted(written_ids(stages, batch_id)) == [f"r{i}" for i in range(4)]
    record = stages.batches.get_batch(batch_id)
    assert record is not None and (record.request_completed, record.shards_pending) == (4, 0)
    assert not stages.runner.renew_shard_lease(task, first, 1.0)  # the first worker lost it
