"""A batch's results over a bare moto world: parts written and counted once, recovered after
a crash, the lines of requests that never ran, merged into Files at the end, listed while it
runs, and the failed custom_ids a retry takes (never a line validation rejected)."""

from __future__ import annotations

from batch_core import s3keys
from batch_core.protocol import BatchRequestOutput, BatchResponse
from batch_core.records import BatchRecord, ShardRecord
from batch_core.results import NEVER_RAN, PendingPart, jsonl, refused_line
from tests.conftest import chat_request
from tests.stage_world import StageWorld

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1}}


def answer(custom_id: str) -> BatchRequestOutput:
    return BatchRequestOutput(
        id=f"batch_req_{custom_id}",
        custom_id=custom_id,
        response=BatchResponse(
            status_code=200, request_id=f"req_{custom_id}", body={"usage": USAGE}
        ),
    )


def refused(custom_id: str) -> BatchRequestOutput:
    return refused_line(custom_id, custom_id, message="no", code="bad")


def one_shard(world: StageWorld, custom_ids: list[str]) -> tuple[BatchRecord, ShardRecord]:
    """A running batch of one planned shard holding requests `custom_ids`."""
    world.configure(prefix_slots=0)
    record = world.ingest("r.jsonl", [chat_request(c, f"hello {c}") for c in custom_ids])
    world.drain()
    now = world.clock()
    shard = world.table.shards.begin_shard_attempt(
        record.id, 0, owner="w", lease_until=now + 60, now=now
    )
    assert shard is not None
    return record, shard


def test_a_part_is_stored_and_counted_once_on_its_shard_and_batch(world: StageWorld) -> None:
    record, shard = one_shard(world, ["a", "b", "c"])
    results = world.stages.results
    part = PendingPart(succeeded=[answer("a"), answer("b")], failed=[refused("c")])

    counts = results.write(shard, 0, part)
    results.write(shard, 0, part)  # a retried commit of the same part

    assert (counts.completed, counts.failed, counts.input_tokens, counts.cached_tokens) == (
        2,
        1,
        6,
        2,
    )
    assert (
        world.lines(s3keys.results_prefix(record.id, 0) + s3keys.part_name(0))[0]["custom_id"]
        == "a"
    )
    batch = world.batch(record.id)
    assert (batch.request_completed, batch.request_failed, batch.output_tokens) == (2, 1, 4)
    assert batch.shards_pending == 1  # not settled: not its last part


def test_a_part_written_but_not_counted_is_recovered_and_counted_once(world: StageWorld) -> None:
    record, shard = one_shard(world, ["a", "b", "c"])
    results = world.stages.results
    # A crash between the part's upload and its count.
    world.store.put(s3keys.results_prefix(record.id, 0) + s3keys.part_name(0), jsonl([answer("a")]))

    finished, next_part = results.recover(shard)
    again, _ = results.recover(world.table.shards.get_shard(record.id, 0) or shard)

    assert (finished.custom_ids, next_part) == ({"a"}, 1)
    assert again.custom_ids == {"a"}
    assert world.batch(record.id).request_completed == 1
    unfinished = [r.custom_id for r in results.unfinished(shard, finished)]
    assert unfinished == ["b", "c"]


def test_requests_that_never_ran_are_closed_with_their_code_once(world: StageWorld) -> None:
    record, shard = one_shard(world, ["a", "b", "c"])
    results = world.stages.results
    results.write(shard, 0, PendingPart(succeeded=[answer("a")]))

    results.close_unfinished(shard, "batch_cancelled", "cancelled")
    results.close_unfinished(shard, "batch_cancelled", "cancelled")

    lines = world.lines(s3keys.errors_prefix(record.id, 0) + NEVER_RAN)
    assert [(x["custom_id"], x["error"]["code"], x["response"]) for x in lines] == [
        ("b", "batch_cancelled", None),
        ("c", "batch_cancelled", None),
    ]
    batch = world.batch(record.id)
    assert (batch.request_completed, batch.request_failed, batch.shards_pending) == (1, 2, 0)
    assert results.failed_custom_ids(record.id) == {"b", "c"}


def test_parts_merge_into_one_file_each_kept_as_the_batch_asks(world: StageWorld) -> None:
    record, shard = one_shard(world, ["a", "b", "c"])
    results = world.stages.results
    results.write(shard, 0, PendingPart(succeeded=[answer("a")], failed=[refused("b")]))
    results.write(shard, 1, PendingPart(succeeded=[answer("c")]))
    keeping = record.model_copy(update={"output_expires_after_seconds": 7200})

    output = results.merge(keeping, "output")
    error = results.merge(keeping, "error")

    assert output is not None and output == results.merge(keeping, "output")  # the same File
    assert [x["custom_id"] for x in world.file_lines(output)] == ["a", "c"]
    assert [x["custom_id"] for x in world.file_lines(error)] == ["b"]
    file = world.table.files.get_file(output)
    assert file is not None and file.file.purpose == "batch_output"
    assert file.file.expires_at == int(world.clock()) + 7200
    assert (file.batch_id, file.tenant) == (record.id, record.tenant)
    assert results.merge(world.store_batch("batch_empty"), "output") is None


def test_parts_are_listed_while_running_and_not_once_their_file_is_gone(
    world: StageWorld,
) -> None:
    record, shard = one_shard(world, ["a", "b"])
    results = world.stages.results
    results.write(shard, 0, PendingPart(succeeded=[answer("a")], failed=[refused("b")]))

    assert sorted(p.kind for p in results.parts(record)) == ["error", "output"]

    output = results.merge(record, "output")
    assert output is not None
    world.table.files.delete_file(output)
    ended = record.model_copy(update={"status": "completed", "output_file_id": output})
    assert [p.kind for p in results.parts(ended)] == []  # no error File: nothing to read either


def test_failed_ids_leave_out_the_lines_validation_rejected(world: StageWorld) -> None:
    lines = [chat_request("a"), {"custom_id": "bad", "method": "POST", "url": "/v1/x", "body": {}}]
    record = world.ingest("skip.jsonl", lines, {"invalid-lines": "skip"})
    assert world.store.exists(s3keys.rejected_lines_key(record.id))
    shard = world.table.shards.get_shard(record.id, 0)
    assert shard is not None

    world.stages.results.write(shard, 0, PendingPart(failed=[refused("a")]))

    assert world.stages.results.failed_custom_ids(record.id) == {"a"}
