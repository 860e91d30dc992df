"""Repeats run once (issue 28): identical requests of a batch reach the engine once, and every
line still gets its own output line, counted once, with tokens counted once; failures repeat
as failures, a cancelled batch reports its never-ran repeats, a redelivered shard writes no
repeat twice; hostile repeats (a huge body, deep JSON) cost no more than the lines hold."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from batch_core import repeats, s3keys
from batch_core.messaging import ShardTask
from batch_core.protocol import EngineRequest, EngineResult
from batch_core.records import BatchRecord
from batch_core.repeats import canonical_body, request_digest
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

LONG = " ".join(["word"] * 100)
"""Longer than a 64-token context: the engine answers 400."""


def every_line(world: StageWorld, record: BatchRecord) -> list[dict[str, Any]]:
    """The lines of the batch's output and error Files."""
    lines = []
    for file_id in (record.output_file_id, record.error_file_id):
        if file_id is not None:
            lines += world.file_lines(file_id)
    return lines


def survey(count: int, distinct: int) -> list[dict[str, Any]]:
    """`count` lines over `distinct` bodies: line i asks question i % distinct."""
    return [chat_request(f"q{i}", f"question {i % distinct}") for i in range(count)]


def test_a_thousand_lines_with_400_repeats_run_600_requests(world: StageWorld) -> None:
    world.configure(results_part_size=50, max_requests_per_shard=100, prefix_slots=0)
    engine = FakeEngine(MODEL)

    record = world.run_to_end(world.ingest("survey.jsonl", survey(1000, 600)), engine)

    assert engine.calls == 600
    lines = every_line(world, record)
    assert len(lines) == 1000
    assert len({line["id"] for line in lines}) == 1000
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q{i}" for i in range(1000))
    batch = record.to_batch()
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed) == (1000, 1000)
    assert batch.reused_requests == 400
    # Every repeat carries its primary's response; usage counts the 600 runs only.
    by_id = {line["custom_id"]: line for line in lines}
    for i in range(600, 1000):
        assert by_id[f"q{i}"]["response"] == by_id[f"q{i - 600}"]["response"]
    alone = world.run_to_end(world.ingest("unique.jsonl", survey(600, 600)), FakeEngine(MODEL))
    assert batch.usage is not None and alone.to_batch().usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (
        alone.input_tokens,
        alone.output_tokens,
    )
    assert alone.to_batch().reused_requests == 0
    # The shards' counts hold their repeats: what intake reserved and the runner settled.
    shards = world.table.shards.list_shards(record.id)
    assert sum(s.request_count for s in shards) == 1000
    assert sum(s.repeats for s in shards) == 400
    assert sum(s.completed + s.failed for s in shards) == 1000


def test_identical_means_the_canonical_body_and_the_url(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    base = chat_request("a", "Say hé.")
    reordered = {
        "custom_id": "b",
        "body": dict(reversed(list(base["body"].items()))),
        "url": "/v1/chat/completions",
        "method": "POST",
    }
    # The same body, its "é" escaped and its keys in another order, written by hand.
    escaped = (
        '{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":'
        '{"max_tokens":8,"messages":[{"content":"Say h\\u00e9.","role":"user"}],'
        f'"model":"{MODEL}"}}}}'
    )
    integer = chat_request("d", "Say hé.")
    integer["body"]["temperature"] = 1
    floating = chat_request("e", "Say hé.")
    floating["body"]["temperature"] = 1.0
    exponent = chat_request("f", "Say hé.")
    exponent["body"]["temperature"] = 1.0
    engine = FakeEngine(MODEL)
    lines = [
        base,
        reordered,
        escaped,
        integer,
        floating,
        json.dumps(exponent).replace("1.0", "1e0"),
    ]

    record = world.run_to_end(world.ingest("same.jsonl", lines), engine)

    # a, b, c are one request; d (the integer 1) is not e (the float 1.0), which f (1e0) is.
    assert engine.calls == 3
    assert record.request_reused == 3 and record.request_completed == 6
    assert canonical_body({"b": 1, "a": [1.0, {"d": 1, "c": 2}]}) == (
        b'{"a":[1.0,{"c":2,"d":1}],"b":1}'
    )
    assert request_digest("/v1/embeddings", {}) != request_digest("/v1/completions", {})


def test_a_repeat_of_a_failing_request_fails_alike(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    lines = [chat_request("long", LONG), chat_request("ok"), chat_request("long-again", LONG)]
    engine = FakeEngine(MODEL, max_model_len=64)

    record = world.run_to_end(world.ingest("fails.jsonl", lines), engine)

    assert engine.calls == 2
    errors = world.file_lines(record.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["long", "long-again"]
    first, again = sorted(errors, key=lambda line: line["custom_id"])
    assert first["response"]["status_code"] == again["response"]["status_code"] == 400
    assert first["response"]["body"] == again["response"]["body"]
    assert first["id"] != again["id"]
    assert (record.request_completed, record.request_failed, record.request_reused) == (1, 2, 1)


def test_a_cancelled_batch_gives_never_ran_lines_to_repeats_too(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0)
    record = world.ingest("stop.jsonl", survey(12, 4))  # each body 3 times
    (task,) = world.drain()
    engine = FakeEngine(MODEL)

    class CancelsOnSecond:
        def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
            for number, result in enumerate(engine.run(requests), 1):
                if number == 2:
                    world.stages.ending.cancel(record.id)
                yield result

    run = world.stages.runner.process_shard(task, CancelsOnSecond())  # type: ignore[arg-type]
    ended = world.stages.ending.finalize(record.id)

    assert run.outcome == "stopped"
    assert ended.status == "cancelled"
    lines = every_line(world, ended)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q{i}" for i in range(12))
    never_ran = [line for line in lines if line["error"] is not None]
    assert never_ran and all(line["error"]["code"] == "batch_cancelled" for line in never_ran)
    # A body that never ran never ran for any of its three lines.
    ran = {line["custom_id"] for line in lines if line["error"] is None}
    for body in range(4):
        group = {f"q{body}", f"q{body + 4}", f"q{body + 8}"}
        assert group <= ran or not group & ran
    counts = ended.to_batch().request_counts
    assert counts.completed + counts.failed == counts.total == 12
    assert ended.request_reused == 2 * engine.calls


def test_a_redelivered_shard_writes_no_repeat_twice(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0)
    record = world.ingest("again.jsonl", survey(10, 5))
    (task,) = world.drain()
    engine = FakeEngine(MODEL)

    first = world.stages.runner.process_shard(task, engine, should_stop=lambda: True)
    second = world.stages.runner.process_shard(task, engine)

    assert (first.outcome, second.outcome) == ("interrupted", "done")
    assert engine.calls == 5
    ended = world.stages.ending.finalize(record.id)
    lines = every_line(world, ended)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q{i}" for i in range(10))
    assert (ended.request_completed, ended.request_reused) == (10, 5)


def test_a_part_written_but_not_counted_is_counted_with_its_repeats_once(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(results_part_size=2, prefix_slots=0)
    record = world.ingest("crash.jsonl", survey(6, 3))
    (task,) = world.drain()
    shards = world.table.shards

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the worker died between the part and its count")

    with monkeypatch.context() as patched:
        patched.setattr(shards, "commit_part", crash)
        with pytest.raises(RuntimeError):
            world.stages.runner.process_shard(task, FakeEngine(MODEL))
    assert world.store.list_keys(s3keys.results_prefix(record.id))  # written, not counted
    engine = FakeEngine(MODEL)

    world.clock.advance(301)  # the dead attempt's lease lapses
    world.stages.runner.process_shard(task, engine)

    assert engine.calls == 2  # the first part's primary is not run again
    ended = world.stages.ending.finalize(record.id)
    alone = world.run_to_end(world.ingest("three.jsonl", survey(3, 3)), FakeEngine(MODEL))
    assert (ended.request_completed, ended.request_reused) == (6, 3)
    assert (ended.input_tokens, ended.output_tokens) == (alone.input_tokens, alone.output_tokens)
    assert len(every_line(world, ended)) == 6


def test_a_huge_body_repeated_runs_once_and_is_not_copied(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    huge = " ".join(["token"] * 40_000)  # 240 KB a line
    lines = [chat_request(f"h{i}", huge, max_tokens=1) for i in range(30)]
    engine = FakeEngine(MODEL, max_model_len=100_000)

    record = world.run_to_end(world.ingest("huge.jsonl", lines), engine)

    assert engine.calls == 1
    assert record.request_reused == 29 and record.request_completed == 30
    # The repeats are a line each of ids and numbers, not the body.
    assert len(world.store.read(s3keys.repeats_key(record.id, 0))) < 30 * 100
    assert len(world.store.read(s3keys.shard_key(record.id, 0))) < 2 * len(huge)


def _nested(depth: int, reverse: bool) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for level in range(depth):
        pair = [("type", "object"), ("properties", {f"k{level}": node})]
        node = dict(reversed(pair) if reverse else pair)
    return node


def test_deep_json_repeats_are_found_and_too_deep_lines_stay_refused(world: StageWorld) -> None:
    world.configure(prefix_slots=0)

    def structured(custom_id: str, depth: int, reverse: bool = False) -> dict[str, Any]:
        line = chat_request(custom_id, "Fill the schema.")
        line["body"]["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "deep", "schema": _nested(depth, reverse)},
        }
        return line

    lines = [structured("a", 28), structured("b", 28, reverse=True), structured("c", 27)]
    engine = FakeEngine(MODEL)

    record = world.run_to_end(world.ingest("deep.jsonl", lines), engine)

    assert engine.calls == 2
    assert (record.request_completed, record.request_reused) == (3, 1)
    refused = world.ingest("deeper.jsonl", [structured("x", 40), structured("y", 40)])
    assert refused.status == "failed"
    assert refused.errors and refused.errors[0].code == "json_too_deep"


def test_repeats_past_a_primarys_cap_run_again(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run answers at most MAX_REPEATS_PER_PRIMARY repeats, so a part stays bounded."""
    monkeypatch.setattr(repeats, "MAX_REPEATS_PER_PRIMARY", 3)
    world.configure(prefix_slots=0)
    engine = FakeEngine(MODEL)

    record = world.run_to_end(world.ingest("many.jsonl", survey(10, 1)), engine)

    assert engine.calls == 3  # 1 + 3 repeats, 1 + 3 repeats, 1 + 1 repeat
    assert (record.request_completed, record.request_reused) == (10, 7)


def test_a_repeat_keeps_its_own_line_number_for_the_results_index(world: StageWorld) -> None:
    """What the results index (helper R) reads: each line's input line number."""
    world.configure(prefix_slots=0)
    lines = [chat_request("a", "same"), chat_request("b", "other"), chat_request("c", "same")]
    record = world.ingest("numbers.jsonl", lines)
    (task,) = world.drain()
    assert task == ShardTask(batch_id=record.id, shard_index=0)
    seen: list[dict[str, int]] = []
    write = world.stages.runner.results.write

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(copy.copy(args[2].input_lines))
        return write(*args, **kwargs)

    world.stages.runner.results.write = spy  # type: ignore[method-assign]
    world.stages.runner.process_shard(
        ShardTask(batch_id=record.id, shard_index=0), FakeEngine(MODEL)
    )

    assert seen == [{"a": 1, "b": 2, "c": 3}]  # c: a's repeat, in a's part
    assert world.batch(record.id).request_reused == 1


def test_past_the_remembered_cap_new_bodies_run_and_nothing_is_lost(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repeats, "MAX_REMEMBERED", 3)
    world.configure(prefix_slots=0)
    engine = FakeEngine(MODEL)

    record = world.run_to_end(world.ingest("wide.jsonl", survey(10, 5)), engine)

    # Bodies 0-2 are remembered (lines 5-7 reuse them); bodies 3 and 4 run twice each.
    assert engine.calls == 7
    assert (record.request_completed, record.request_reused) == (10, 3)


def test_the_digest_table_grows_and_finds_every_digest() -> None:
    table = repeats._DigestTable(max_entries=5000)
    digests = [request_digest("/v1/embeddings", {"input": i})[:16] for i in range(6000)]
    stored = [table.put(digest, i + 1) for i, digest in enumerate(digests)]

    assert stored == [True] * 5000 + [False] * 1000
    assert [table.get(digest)[1] for digest in digests] == [*range(1, 5001), *[0] * 1000]
    assert table.put(digests[0], 7) and table.get(digests[0])[1] == 7  # a known one: updated
    assert table.size == 5000


def test_past_the_spooled_shards_cap_copies_run_and_intake_holds_few_files(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard's repeats spool to what may become a file: intake holds at most
    MAX_SPOOLED_SHARDS of them (a Lambda has 1,024 descriptors); copies whose primary's shard
    would need one more run again, and nothing is lost."""
    monkeypatch.setattr(repeats, "MAX_SPOOLED_SHARDS", 2)
    world.configure(prefix_slots=0, max_requests_per_shard=2)
    engine = FakeEngine(MODEL)
    # Four shards of two distinct bodies, then one copy of each of the eight.
    lines = [chat_request(f"p{n}", f"body {n}") for n in range(8)]
    lines += [chat_request(f"c{n}", f"body {n}") for n in range(8)]

    record = world.run_to_end(world.ingest("spread.jsonl", lines), engine)

    # The copies of shard 0's and shard 1's bodies are repeats; the other four run again
    # (as primaries of shards of their own).
    assert (record.request_completed, record.request_reused) == (16, 4)
    assert engine.calls == 12
