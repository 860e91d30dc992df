from __future__ import annotations

import json
from typing import Any

from batch_core import s3keys
from batch_core.protocol import ShardRequest
from batch_core.sharding import PlannedShard, ShardBounds, ShardPlanner, estimate_work
from batch_core.validation import ValidLine


def request(
    i: int, size: int = 10, *, prefix: int = 0, max_tokens: int | None = None, n: int = 1
) -> ValidLine:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "y" * size}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    line = json.dumps({"custom_id": f"r{i}", "body": body}).encode()
    output = None if max_tokens is None else max_tokens * n
    return ValidLine(f"r{i}", "/v1/chat/completions", i + 1, size, prefix, output, n, line)


def plan(requests: list[ValidLine], **bounds: int) -> list[tuple[PlannedShard, list[str]]]:
    """Each planned shard with the custom_ids its data held when it was emitted."""
    shards: list[tuple[PlannedShard, list[str]]] = []

    def emit(shard: PlannedShard) -> None:
        lines = [ShardRequest.model_validate_json(x) for x in shard.data.read().splitlines()]
        assert len(lines) == shard.request_count
        shards.append((shard, [line.custom_id for line in lines]))

    planner = ShardPlanner(emit, ShardBounds(**bounds))
    planner.add_all(requests)
    assert planner.close() == len(shards)
    return shards


def test_shards_close_at_the_request_bound_and_keep_order() -> None:
    shards = plan([request(i) for i in range(10)], max_requests=4)
    assert [s.request_count for s, _ in shards] == [4, 4, 2]
    assert [i for _, ids in shards for i in ids] == [f"r{i}" for i in range(10)]
    assert [s.index for s, _ in shards] == [0, 1, 2]


def test_shards_close_at_the_byte_bound() -> None:
    shards = plan([request(i, size=100) for i in range(6)], max_bytes=400)
    assert all(s.byte_count <= 400 for s, _ in shards)
    assert sum(s.request_count for s, _ in shards) == 6
    assert len(shards) > 1


def test_a_request_larger_than_the_byte_bound_still_gets_a_shard() -> None:
    shards = plan([request(0, size=1000)], max_bytes=100)
    assert [s.request_count for s, _ in shards] == [1]


def test_shards_are_sized_by_estimated_work_not_only_by_count() -> None:
    # 400 prompt characters ~ 100 tokens, plus max_tokens: heavy requests fill a shard sooner.
    light = [request(i, size=40, max_tokens=10) for i in range(20)]  # 20 tokens each
    heavy = [request(i, size=400, max_tokens=900) for i in range(20, 26)]  # 1000 each
    shards = plan(light + heavy, max_work_tokens=2000)
    counts = [s.request_count for s, _ in shards]
    assert counts == [21, 2, 2, 1], counts
    assert all(s.work_tokens <= 2000 for s, _ in shards)
    assert estimate_work(heavy[0], 256) == 100 + 900


def test_work_estimate_uses_the_default_budget_and_n() -> None:
    assert estimate_work(request(0, size=8), 256) == 2 + 256
    assert estimate_work(request(0, size=8, n=3), 256) == 2 + 3 * 256
    assert estimate_work(request(0, size=8, max_tokens=5, n=2), 256) == 2 + 10
    embedding = ValidLine("e", "/v1/embeddings", 1, 40, 0, 0, 1, b"{}")
    assert estimate_work(embedding, 256) == 10


def test_requests_sharing_leading_messages_stay_together_in_order() -> None:
    # Two preambles interleaved with requests that have none: each preamble's requests land
    # in one shard, in file order, and the others stay in their own stream.
    lines = [request(i, prefix=[0, 111, 222][i % 3]) for i in range(30)]
    shards = plan(lines, prefix_slots=4)
    by_slot: dict[int, list[str]] = {}
    for shard, ids in shards:
        by_slot.setdefault(shard.slot, []).extend(ids)
    groups = sorted(by_slot.values())
    expected = sorted([[f"r{i}" for i in range(30) if i % 3 == k] for k in range(3)])
    assert groups == expected
    assert len(shards) == 3


def test_without_prefix_slots_every_request_shares_one_stream() -> None:
    lines = [request(i, prefix=i + 1) for i in range(6)]
    shards = plan(lines, prefix_slots=0, max_requests=4)
    assert [ids for _, ids in shards] == [["r0", "r1", "r2", "r3"], ["r4", "r5"]]


def test_shard_lines_are_shard_requests_with_their_input_line() -> None:
    line = ShardRequest.model_validate_json(request(4).shard_line())
    assert (line.line, line.url, line.custom_id) == (5, "/v1/chat/completions", "r4")
    assert line.body == json.loads(request(4).request_json)["body"]


def test_outbox_name_of_inbox_keys() -> None:
    assert s3keys.outbox_name("inbox/prompts.jsonl") == "prompts"
    assert s3keys.outbox_name("inbox/team/a b.jsonl") == "team/a b"
    assert s3keys.outbox_name("batches/x/input.jsonl") is None
    assert s3keys.outbox_name("inbox/") is None


def test_part_keys_sort_in_order_and_parse_back() -> None:
    keys = [s3keys.results_prefix("b", 1) + s3keys.part_name(i) for i in (10, 2, 0)]
    assert [s3keys.part_index_of(k) for k in sorted(keys)] == [0, 2, 10]
    assert s3keys.shard_key("b", 3) == "batches/b/shards/00003.jsonl"
    assert s3keys.rejected_lines_key("b").startswith(s3keys.errors_prefix("b"))


def test_an_outbox_name_keeps_every_outbox_key_within_s3s_limit() -> None:
    """An inbox key may take all of S3's 1,024 bytes; the outbox name of it once did too, so
    every outbox key (`outbox/<name>/batch.json`) was refused. Cut at a character, with a
    hash of the whole key: two long names that share their beginning stay apart."""
    stem = "inbox/" + "ü" * 400
    first, second = (f"{stem}{tail}.jsonl" for tail in ("a" * 200, "b" * 200))
    assert all(len(key.encode()) <= 1024 for key in (first, second))
    names = [s3keys.outbox_name(key) for key in (first, second)]
    assert names[0] != names[1]
    for name in names:
        assert name is not None
        name.encode().decode()  # whole characters only
        for filename in ("batch.json", "output.jsonl", "errors.jsonl"):
            unique = s3keys.unique_outbox_name(name, "batch_0123456789abcdef")
            assert len(s3keys.outbox_key(unique, filename).encode()) <= 1024
    assert s3keys.outbox_name("inbox/team/short.jsonl") == "team/short"  # unchanged
