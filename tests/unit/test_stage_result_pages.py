"""Pages of a batch's result lines over a bare moto world (`result_index`, `result_pages`):
input order across shards, parts and rejected lines whatever order requests finish in; a
custom_id found mid-run; a crash between a part and its index recovered; only index chunks
and ranged GETs of the page's lines read, never whole parts; a page's reads bounded by its
position; hidden like the parts; bad cursors, limits and custom_ids refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from batch_core import result_index, s3keys
from batch_core.errors import InvalidRequestError, NotFoundError
from batch_core.messaging import ShardTask
from batch_core.protocol import EngineRequest, EngineResult
from batch_core.records import BatchRecord
from batch_core.result_pages import ResultPages
from batch_core.storage import ObjectStore
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

LONG = " ".join(["word"] * 100)
"""Longer than the fake engine's 64-token context: an error line from the engine."""
BAD = {"custom_id": "bad", "method": "POST", "url": "/v1/nope", "body": {}}


class Backwards(FakeEngine):
    """Answers a shard's requests last first: completion order is not input order."""

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        return super().run(list(requests)[::-1])


class Reads:
    """Counts what the store is asked to read (wraps one world's `ObjectStore`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.whole: list[str] = []
        self.ranges: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        read, stream, read_range = ObjectStore.read, ObjectStore.stream, ObjectStore.read_range

        def counted_read(store: ObjectStore, key: str) -> bytes:
            with self._lock:
                self.whole.append(key)
            return read(store, key)

        def counted_stream(store: ObjectStore, key: str, chunk_size: int = 1 << 20) -> Any:
            with self._lock:
                self.whole.append(key)
            return stream(store, key, chunk_size)

        def counted_range(store: ObjectStore, key: str, offset: int, length: int) -> bytes:
            with self._lock:
                self.ranges.append((key, offset, length))
            return read_range(store, key, offset, length)

        monkeypatch.setattr(ObjectStore, "read", counted_read)
        monkeypatch.setattr(ObjectStore, "stream", counted_stream)
        monkeypatch.setattr(ObjectStore, "read_range", counted_range)

    def clear(self) -> None:
        self.whole.clear()
        self.ranges.clear()

    def chunks(self) -> list[str]:
        return [key for key in self.whole if "/index/lines/" in key]


def request(number: int) -> dict[str, Any]:
    """Line `number`'s request; two system prompts, so prefix slots interleave shards."""
    line = chat_request(f"q-{number}", f"question {number}")
    line["body"]["messages"].insert(0, {"role": "system", "content": f"Team {number % 2}."})
    return line


def mixed_batch(world: StageWorld, count: int = 40) -> BatchRecord:
    """`count` (23 or more) lines over several shards of parts of 3, with an engine error
    (line 10) and two lines validation rejects (lines 5 and 23)."""
    world.configure(
        max_requests_per_shard=6, results_part_size=3, prefix_slots=2, results_part_seconds=60
    )
    lines: list[Any] = [request(n) for n in range(1, count + 1)]
    lines[9] = chat_request("q-10", LONG)
    lines[4] = BAD
    lines[22] = "{not json"
    record = world.create(lines, invalid_lines="skip")
    assert record.status == "in_progress" and record.shards_total >= 3
    return record


def walk(pages: ResultPages, record: BatchRecord, limit: int) -> list[dict[str, Any]]:
    """Every line, page after page, as a client's cursor paging reads them."""
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = pages.page(pages.deps.batch(record.id), after=after, limit=limit)
        seen += page.data
        if not page.has_more:
            return seen
        after = page.data[-1]["id"]


def test_lines_come_in_input_order_across_shards_parts_and_rejected_lines(
    world: StageWorld,
) -> None:
    record = mixed_batch(world)
    ended = world.run_to_end(record, Backwards(MODEL, max_model_len=64))
    assert ended.status == "completed"
    pages = ResultPages(world.stages.results)

    seen = walk(pages, record, limit=7)

    assert [x["line"] for x in seen] == list(range(1, 41))
    assert len({x["id"] for x in seen}) == 40
    by_line = {x["line"]: x for x in seen}
    assert by_line[1]["custom_id"] == "q-1" and by_line[1]["response"]["status_code"] == 200
    assert by_line[10]["response"]["status_code"] == 400  # the engine's error, in its place
    assert by_line[5]["custom_id"] == "bad" and by_line[23]["custom_id"] is None  # rejected
    # The same lines as the output and error Files, ids and all.
    files = world.file_lines(ended.output_file_id) + world.file_lines(ended.error_file_id)
    assert sorted(x["id"] for x in files) == sorted(x["id"] for x in seen)
    assert all(result_index.line_of(x["id"]) == x["line"] for x in seen)
    whole = {x["id"]: x for x in files}
    assert all({k: v for k, v in x.items() if k != "line"} == whole[x["id"]] for x in seen)


def test_a_page_reads_index_chunks_and_ranges_of_its_lines_never_whole_parts(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = mixed_batch(world, count=60)
    world.run_to_end(record, Backwards(MODEL, max_model_len=64))
    pages = ResultPages(world.stages.results)
    every_chunk = result_index.list_chunks(world.store, record.id)
    line_30, line_50 = _id_of_line(pages, record, 30), _id_of_line(pages, record, 50)
    reads = Reads(monkeypatch)

    first = pages.page(world.batch(record.id), limit=5)
    middle = pages.page(world.batch(record.id), after=line_30, limit=5)

    assert [x["line"] for x in first.data] == [1, 2, 3, 4, 5]
    assert [x["line"] for x in middle.data] == [31, 32, 33, 34, 35]
    assert first.has_more and middle.has_more
    results_or_errors = (s3keys.results_prefix(record.id), s3keys.errors_prefix(record.id))
    assert not [key for key in reads.whole if key.startswith(results_or_errors)]
    assert reads.ranges and all(key.startswith(results_or_errors) for key, _, _ in reads.ranges)
    assert sum(length for _, _, length in reads.ranges) < 40_000  # ten lines' worth
    # A page reads the chunks of the shards around its position, not the batch's.
    reads.clear()
    pages.page(world.batch(record.id), after=line_50, limit=5)
    assert 0 < len(reads.chunks()) <= len(every_chunk) / 3


def _id_of_line(pages: ResultPages, record: BatchRecord, line: int) -> str:
    (found,) = [x for x in walk(pages, record, limit=1000) if x["line"] == line]
    return str(found["id"])


def test_a_custom_id_is_found_mid_run_with_only_some_parts_written(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0, max_requests_per_shard=100)
    record = world.create([chat_request(f"q-{n}", f"hello {n}") for n in range(1, 9)])
    (task,) = world.drain()
    pages = ResultPages(world.stages.results)
    engine = FakeEngine(MODEL, max_model_len=64)

    # The worker stops after its first part (two results): the batch still runs.
    run = world.stages.runner.process_shard(task, engine, should_stop=lambda: True)
    assert run.outcome == "interrupted"

    batch = world.batch(record.id)
    assert batch.status == "in_progress"
    (found,) = pages.page(batch, custom_id="q-2").data
    assert (found["custom_id"], found["line"], found["response"]["status_code"]) == ("q-2", 2, 200)
    assert pages.page(batch, custom_id="q-7").data == []  # not finished yet
    assert pages.page(batch, custom_id="nobody").data == []
    assert [x["line"] for x in pages.page(batch).data] == [1, 2]  # the lines finished so far

    world.stages.runner.process_shard(ShardTask(batch_id=record.id, shard_index=0), engine)
    (later,) = pages.page(world.batch(record.id), custom_id="q-7").data
    assert later["line"] == 7 and later["custom_id"] == "q-7"


def test_a_cursor_is_a_position_lines_finishing_behind_it_show_on_a_new_walk(
    world: StageWorld,
) -> None:
    world.configure(results_part_size=2, prefix_slots=0, max_requests_per_shard=100)
    record = world.create([chat_request(f"q-{n}", f"hello {n}") for n in range(1, 7)])
    (task,) = world.drain()
    pages = ResultPages(world.stages.results)
    engine = Backwards(MODEL, max_model_len=64)  # lines 6 and 5 finish first
    world.stages.runner.process_shard(task, engine, should_stop=lambda: True)

    page = pages.page(world.batch(record.id))
    assert ([x["line"] for x in page.data], page.has_more) == ([5, 6], False)
    world.stages.runner.process_shard(ShardTask(batch_id=record.id, shard_index=0), engine)

    after = pages.page(world.batch(record.id), after=page.data[-1]["id"])
    assert after.data == []  # lines 1-4 finished behind the cursor
    assert [x["line"] for x in pages.page(world.batch(record.id)).data] == [1, 2, 3, 4, 5, 6]


def test_a_crash_between_a_part_and_its_index_is_recovered(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(results_part_size=2, prefix_slots=0, max_requests_per_shard=100)
    record = world.create([chat_request(f"q-{n}", f"hello {n}") for n in range(1, 6)])
    (task,) = world.drain()
    engine = FakeEngine(MODEL, max_model_len=64)
    write_chunks = result_index.write_chunks

    def crash(*args: Any) -> None:
        raise RuntimeError("the worker died here")

    monkeypatch.setattr(result_index, "write_chunks", crash)
    with pytest.raises(RuntimeError):
        world.stages.runner.process_shard(task, engine)
    monkeypatch.setattr(result_index, "write_chunks", write_chunks)
    pages = ResultPages(world.stages.results)
    part = s3keys.results_prefix(record.id, 0) + s3keys.part_name(0)
    assert world.store.exists(part)  # written, not indexed, not counted
    assert pages.page(world.batch(record.id)).data == []

    world.clock.advance(600)  # the lease lapses; the message comes back
    run = world.stages.runner.process_shard(task, engine)

    assert run.outcome == "done"
    seen = walk(pages, record, limit=2)
    assert [(x["line"], x["custom_id"]) for x in seen] == [(n, f"q-{n}") for n in range(1, 6)]
    assert world.batch(record.id).request_completed == 5  # the first part counted once


def test_never_ran_lines_take_their_places(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0, max_requests_per_shard=100)
    record = world.create([chat_request(f"q-{n}", f"hello {n}") for n in range(1, 6)])
    (task,) = world.drain()
    engine = Backwards(MODEL, max_model_len=64)
    world.stages.runner.process_shard(task, engine, should_stop=lambda: True)  # 5 and 4 ran

    world.stages.ending.cancel(record.id)
    shard = world.table.shards.get_shard(record.id, 0)
    assert shard is not None
    world.stages.results.close_unfinished(shard, "batch_cancelled", "cancelled")

    page = ResultPages(world.stages.results).page(world.batch(record.id))
    codes = [(x["line"], (x["error"] or {}).get("code")) for x in page.data]
    assert codes == [
        (1, "batch_cancelled"),
        (2, "batch_cancelled"),
        (3, "batch_cancelled"),
        (4, None),
        (5, None),
    ]
    (never,) = ResultPages(world.stages.results).page(world.batch(record.id), custom_id="q-2").data
    assert never["error"]["code"] == "batch_cancelled"


def test_a_deleted_file_hides_its_lines_and_the_index_goes_with_the_last_file(
    world: StageWorld,
) -> None:
    record = mixed_batch(world, count=24)
    ended = world.run_to_end(record, FakeEngine(MODEL, max_model_len=64))
    pages = ResultPages(world.stages.results)
    assert ended.output_file_id and ended.error_file_id

    world.stages.files.delete(ended.tenant, ended.output_file_id)

    left = walk(pages, record, limit=100)
    assert [x["line"] for x in left] == [5, 10, 23]  # the error lines only
    assert world.store.list_keys(s3keys.index_prefix(record.id))  # the error File still reads it
    world.stages.files.delete(ended.tenant, ended.error_file_id)
    assert pages.page(world.batch(record.id)).data == []
    assert world.store.list_keys(s3keys.index_prefix(record.id)) == []


def test_bad_cursors_limits_and_custom_ids_are_refused_and_tenants_kept_apart(
    world: StageWorld,
) -> None:
    world.configure(prefix_slots=0)
    record = world.create([chat_request(f"q-{n}") for n in range(1, 4)])
    other = world.create([chat_request(f"q-{n}") for n in range(1, 4)], tenant="tenant-b")
    engine = FakeEngine(MODEL, max_model_len=64)
    world.run_to_end(record, engine)
    world.run_to_end(other, engine)
    batches = world.stages.batches
    foreign = batches.result_page("tenant-b", other.id).data[0]["id"]

    for after in ("nonsense", "batch_req_" + "g" * 32, foreign, "batch_req_" + "0" * 32):
        with pytest.raises(InvalidRequestError) as refused:
            batches.result_page("tenant-a", record.id, after=after)
        assert refused.value.param == "after"
    for limit in (0, 1001, -1):
        with pytest.raises(InvalidRequestError) as refused:
            batches.result_page("tenant-a", record.id, limit=limit)
        assert refused.value.param == "limit"
    for custom_id in ("", "x" * 513):
        with pytest.raises(InvalidRequestError) as refused:
            batches.result_page("tenant-a", record.id, custom_id=custom_id)
        assert refused.value.param == "custom_id"
    with pytest.raises(NotFoundError):
        batches.result_page("tenant-b", record.id)
    with pytest.raises(NotFoundError):
        batches.result_page("tenant-b", record.id, custom_id="q-1")
    assert len(batches.result_page("tenant-a", record.id, limit=1000).data) == 3


def test_a_custom_id_a_rejected_duplicate_shares_returns_both_lines_in_order(
    world: StageWorld,
) -> None:
    world.configure(prefix_slots=0)
    record = world.create(
        [chat_request("same"), chat_request("other"), chat_request("same")], invalid_lines="skip"
    )
    world.run_to_end(record, FakeEngine(MODEL, max_model_len=64))
    pages = ResultPages(world.stages.results)

    both = pages.page(world.batch(record.id), custom_id="same")
    one = pages.page(world.batch(record.id), custom_id="same", limit=1)
    rest = pages.page(world.batch(record.id), custom_id="same", after=one.data[0]["id"])

    assert [(x["line"], x["custom_id"]) for x in both.data] == [(1, "same"), (3, "same")]
    assert both.data[1]["response"]["body"]["error"]["code"] == "duplicate_custom_id"
    assert (len(one.data), one.has_more) == (1, True)
    assert [x["line"] for x in rest.data] == [3]


def test_ids_carry_their_line_and_placing_is_stable() -> None:
    placed = result_index.placed_id("batch_req_" + "ab" * 16, 1234)
    assert result_index.line_of(placed) == 1234
    assert result_index.placed_id(placed, 1234) == placed  # written again: the same id
    assert result_index.same_line_id(placed, "batch_req_" + "ab" * 16)
    odd = result_index.placed_id("batch_req_x", 3)
    assert result_index.line_of(odd) == 3 and len(odd) == len(placed)
    assert result_index.line_of("batch_req_short") is None
    assert result_index.line_of(placed.upper()) is None


def test_hostile_custom_ids_and_cursors(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    odd = ["tab\there", "new\nline", "ünï/../../x", "%2F..%00", "🙂" * 100, "x" * 600]
    record = world.create([chat_request(custom_id) for custom_id in odd])
    world.run_to_end(record, FakeEngine(MODEL, max_model_len=64))
    pages = ResultPages(world.stages.results)
    batch = world.batch(record.id)

    for number, custom_id in enumerate(odd[:-1], start=1):
        (found,) = pages.page(batch, custom_id=custom_id).data
        assert (found["custom_id"], found["line"]) == (custom_id, number)
    assert [x["custom_id"] for x in pages.page(batch).data] == odd  # a long one pages too
    assert pages.page(batch, custom_id="tab").data == []
    for after in (
        "batch_req_ffffffffff" + "0" * 22,  # a line past any there is
        "batch_req_" + "0" * 31 + "\t",
        "batch_req_" + "a" * 10_000,
        "",
    ):
        with pytest.raises(InvalidRequestError):
            pages.page(batch, after=after)


def test_a_settled_shard_is_read_through_one_compacted_index(world: StageWorld) -> None:
    world.configure(results_part_size=2, prefix_slots=0, max_requests_per_shard=100)
    record = world.create([chat_request(f"q-{n}", f"hello {n}") for n in range(1, 12)])
    world.run_to_end(record, Backwards(MODEL, max_model_len=64))

    every = [
        chunk
        for key in world.store.list_keys(s3keys.line_index_prefix(record.id))
        if (chunk := result_index.parse_chunk_key(key)) is not None
    ]
    read = result_index.list_chunks(world.store, record.id)

    assert len({c.name for c in every}) == 7  # six parts and their compaction
    assert [(c.name, c.first, c.last) for c in read] == [("upto-00005", 1, 11)]
    pages = ResultPages(world.stages.results)
    assert [x["line"] for x in walk(pages, record, limit=4)] == list(range(1, 12))


def test_parts_after_a_compaction_and_partial_compactions_still_read() -> None:
    def chunk(name: str, number: int = 0) -> result_index.Chunk:
        return result_index.Chunk(f"k/{name}.{number}", "00000", name, number, 1, 9)

    chunks = [
        chunk("part-00000"),
        chunk("part-00001"),
        chunk("upto-00001"),
        chunk("part-00002"),  # written after the compaction (never expected; still read)
        chunk("never-ran"),
        chunk("upto-00002", 1),  # a compaction a crash cut short: no chunk 0
    ]

    names = [c.name for c in result_index.current(chunks)]

    assert names == ["upto-00001", "part-00002", "never-ran"]


def test_index_keys_stay_far_within_s3s_key_limit() -> None:
    batch_id = "batch_" + "f" * 32
    longest = result_index.chunk_key(
        batch_id, result_index.REJECTED, result_index.compact_name(99_999), 9_999, 16**10, 16**10
    )
    assert len(longest.encode()) < s3keys.MAX_KEY_BYTES // 4
    chunk = result_index.parse_chunk_key(longest)
    assert chunk is not None and (chunk.first, chunk.number) == (16**10, 9_999)


class Answers(FakeEngine):
    """Answers each request with a long run of one character (to measure a page as sent)."""

    def __init__(self, text: str) -> None:
        super().__init__(MODEL)
        self.text = text

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        for result in super().run(requests):
            if result.status_code == 200:
                result.body["choices"][0]["message"]["content"] = self.text
            yield result


def test_a_page_stops_within_lambdas_answer_as_sent_not_as_stored(world: StageWorld) -> None:
    """CJK text is 3 bytes a character stored but 7 as sent (`\\u4e2d`, escaped again in
    Lambda's envelope): 40 lines of 40,000 characters are 4.8 MB stored, within a page's
    reading, but 11 MB as sent: the page stops short of Lambda's 6 MB with `has_more`, and
    the walk still reads every line."""
    world.configure(max_requests_per_shard=10, results_part_size=10)
    record = world.create([chat_request(f"c-{n}", f"question {n}") for n in range(40)])
    world.run_to_end(record, Answers("中" * 40_000))
    pages = ResultPages(world.stages.results)

    first = pages.page(world.batch(record.id), after=None, limit=1000)

    sent = sum(len(json.dumps(json.dumps(line))) for line in first.data)
    assert first.has_more and 0 < len(first.data) < 40
    assert sent <= 5 * 1024 * 1024
    assert [line["custom_id"] for line in walk(pages, record, 1000)] == [
        f"c-{n}" for n in range(40)
    ]


def test_a_line_too_large_to_send_is_refused_pointing_at_the_parts(world: StageWorld) -> None:
    record = world.create([chat_request("huge", "question")])
    world.run_to_end(record, Answers("中" * 800_000))  # 2.4 MB stored, 5.6 MB as sent

    with pytest.raises(InvalidRequestError) as refused:
        ResultPages(world.stages.results).page(world.batch(record.id), after=None, limit=10)

    assert refused.value.code == "result_line_too_large"
    assert "/result_parts" in str(refused.value)
