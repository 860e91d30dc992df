"""The shard runner over a bare moto world and the fake engine: results in parts, each counted
once; a redelivered shard runs and writes nothing twice; a batch that stops running stops its
shard between parts; a shard held by another worker is left alone until its lease lapses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from batch_core import s3keys
from batch_core.messaging import ShardTask
from batch_core.protocol import EngineRequest, EngineResult
from batch_core.records import BatchRecord
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

LONG = " ".join(["word"] * 100)
"""A prompt longer than the fake engine's 64-token context: a 400 from the engine."""


def planned(world: StageWorld, count: int, *, part_size: int = 2) -> BatchRecord:
    """A running batch of one shard of `count` requests (r0, r1, ...), its task taken off
    the queue; parts of `part_size` results."""
    world.configure(results_part_size=part_size, prefix_slots=0)
    record = world.ingest("run.jsonl", [chat_request(f"r{i}", f"hello {i}") for i in range(count)])
    assert [t.shard_index for t in world.drain()] == [0]
    return record


def written(world: StageWorld, batch_id: str) -> tuple[list[str], list[str]]:
    """The custom_ids of the result lines and of the error lines written so far."""

    def ids(prefix: str) -> list[str]:
        keys = world.store.list_keys(prefix)
        return [line["custom_id"] for key in keys for line in world.lines(key)]

    return ids(s3keys.results_prefix(batch_id)), ids(s3keys.errors_prefix(batch_id))


def test_a_shard_runs_in_parts_counted_on_its_batch_and_settles(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0)
    lines = [chat_request(f"r{i}", f"hello {i}") for i in range(4)] + [chat_request("long", LONG)]
    record = world.ingest("mixed.jsonl", lines)
    (task,) = world.drain()
    engine = FakeEngine(MODEL, max_model_len=64)

    run = world.stages.runner.process_shard(task, engine)

    assert (run.outcome, run.succeeded, run.failed) == ("done", 4, 1)
    assert run.input_tokens > 0 and run.output_tokens > 0
    results, errors = written(world, record.id)
    assert (sorted(results), errors) == ([f"r{i}" for i in range(4)], ["long"])
    # Parts of two results: r0 r1 | r2 r3 | long.
    assert len(world.store.list_keys(s3keys.results_prefix(record.id, 0))) == 2
    batch = world.batch(record.id)
    assert (batch.request_completed, batch.request_failed, batch.shards_pending) == (4, 1, 0)
    assert (batch.input_tokens, batch.output_tokens) == (run.input_tokens, run.output_tokens)
    shard = world.table.shards.get_shard(record.id, 0)
    assert shard is not None and (shard.status, shard.parts_committed) == ("done", 3)


def test_a_redelivered_shard_runs_and_writes_nothing_twice(world: StageWorld) -> None:
    record = planned(world, 5)
    task = ShardTask(batch_id=record.id, shard_index=0)
    engine = FakeEngine(MODEL)

    first = world.stages.runner.process_shard(task, engine, should_stop=lambda: True)

    assert (first.outcome, first.succeeded) == ("interrupted", 2)
    shard = world.table.shards.get_shard(record.id, 0)
    assert shard is not None and shard.lease_until == 0  # given up for the next attempt

    second = world.stages.runner.process_shard(task, engine)
    again = world.stages.runner.process_shard(task, engine)  # a duplicated message

    assert (second.outcome, second.succeeded) == ("done", 3)
    assert again.outcome == "skipped"
    assert engine.calls == 5
    results, _ = written(world, record.id)
    assert sorted(results) == [f"r{i}" for i in range(5)]
    assert world.batch(record.id).request_completed == 5


def test_a_batch_cancelled_mid_shard_stops_it_after_the_current_part(world: StageWorld) -> None:
    record = planned(world, 6)
    engine = FakeEngine(MODEL)

    class CancelsOnSecond:
        """The fake engine, while someone cancels the batch as its second result is made."""

        def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
            for number, result in enumerate(engine.run(requests), 1):
                if number == 2:
                    world.stages.ending.cancel(record.id)
                yield result

    task = ShardTask(batch_id=record.id, shard_index=0)
    run = world.stages.runner.process_shard(task, CancelsOnSecond())  # type: ignore[arg-type]

    assert (run.outcome, run.succeeded) == ("stopped", 2)
    assert engine.calls == 2
    assert len(written(world, record.id)[0]) == 2
    assert world.batch(record.id).request_completed == 2
    # No attempt begins on a batch that no longer runs.
    assert world.stages.runner.process_shard(task, engine).outcome == "skipped"
    assert engine.calls == 2


def test_a_shard_leased_by_another_worker_waits_for_its_lease_to_lapse(
    world: StageWorld,
) -> None:
    record = planned(world, 2)
    now = world.clock()
    taken = world.table.shards.begin_shard_attempt(
        record.id, 0, owner="other", lease_until=now + 300, now=now
    )
    assert taken is not None
    task = ShardTask(batch_id=record.id, shard_index=0)
    engine = FakeEngine(MODEL)

    assert world.stages.runner.process_shard(task, engine, owner="me").outcome == "busy"
    assert engine.calls == 0
    assert not world.stages.runner.renew_shard_lease(task, "me", 300)

    world.clock.advance(301)

    assert world.stages.runner.process_shard(task, engine, owner="me").outcome == "done"
    assert engine.calls == 2


def test_settling_a_shard_lets_the_next_held_one_into_the_queue(world: StageWorld) -> None:
    world.configure(shards_ahead=1, max_requests_per_shard=1, prefix_slots=0)
    record = world.ingest("turns.jsonl", [chat_request(f"r{i}", f"hi {i}") for i in range(3)])
    (task,) = world.drain()
    assert task.shard_index == 0

    world.stages.runner.process_shard(task, FakeEngine(MODEL))

    assert [t.shard_index for t in world.drain()] == [1]
    assert world.batch(record.id).shards_released == 2


def test_lines_the_engine_must_not_run_become_error_lines(world: StageWorld) -> None:
    world.configure(allowed_media_domains=["img.example.com"], prefix_slots=0)
    picture = chat_request("pic")
    picture["body"]["messages"][0]["content"] = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://img.example.com/cat.png"}},
    ]
    lines = [chat_request("plain"), picture, chat_request("broken", "Say goodbye.")]
    record = world.ingest("media.jsonl", lines)
    (task,) = world.drain()
    # The policy changed since intake (shards are data: checked again), and a line of the
    # shard was damaged.
    world.configure(allowed_media_domains=[])
    key = s3keys.shard_key(record.id, 0)
    stored = world.store.read(key).splitlines()
    stored[2] = b'{"line": 3, "url": "/v1/chat/compl'
    world.store.put(key, b"\n".join(stored) + b"\n")
    engine = FakeEngine(MODEL)

    run = world.stages.runner.process_shard(task, engine)

    assert (run.outcome, run.succeeded, run.failed) == ("done", 1, 2)
    assert engine.calls == 1
    _, errors = written(world, record.id)
    codes = [
        line["response"]["body"]["error"]["code"]
        for key in world.store.list_keys(s3keys.errors_prefix(record.id))
        for line in world.lines(key)
    ]
    assert sorted(codes) == ["media_url_refused", "unreadable_request"]
    assert "pic" in errors
