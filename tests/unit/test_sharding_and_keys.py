from __future__ import annotations

import json

from batch_core import s3keys
from batch_core.protocol import ShardRequest
from batch_core.sharding import PlannedShard, ShardPlanner


def request(i: int, size: int = 10) -> ShardRequest:
    return ShardRequest(
        custom_id=f"r{i}", url="/v1/chat/completions", body={"x": "y" * size}, line=i + 1
    )


def plan(requests: list[ShardRequest], **bounds: int) -> list[PlannedShard]:
    shards: list[PlannedShard] = []
    planner = ShardPlanner(shards.append, **bounds)
    planner.add_all(requests)
    assert planner.close() == len(shards)
    return shards


def test_shards_close_at_the_request_bound_and_keep_order() -> None:
    shards = plan([request(i) for i in range(10)], max_requests=4, max_bytes=10**6)
    assert [s.request_count for s in shards] == [4, 4, 2]
    ids = [json.loads(line)["custom_id"] for s in shards for line in s.body.splitlines()]
    assert ids == [f"r{i}" for i in range(10)]
    assert [s.index for s in shards] == [0, 1, 2]


def test_shards_close_at_the_byte_bound() -> None:
    shards = plan([request(i, size=100) for i in range(6)], max_requests=100, max_bytes=400)
    assert all(len(s.body) <= 400 for s in shards)
    assert sum(s.request_count for s in shards) == 6
    assert len(shards) > 1


def test_a_request_larger_than_the_byte_bound_still_gets_a_shard() -> None:
    shards = plan([request(0, size=1000)], max_requests=100, max_bytes=100)
    assert [s.request_count for s in shards] == [1]


def test_outbox_name_of_inbox_keys() -> None:
    assert s3keys.outbox_name("inbox/prompts.jsonl") == "prompts"
    assert s3keys.outbox_name("inbox/team/a b.jsonl") == "team/a b"
    assert s3keys.outbox_name("batches/x/input.jsonl") is None
    assert s3keys.outbox_name("inbox/") is None


def test_part_keys_sort_in_order_and_parse_back() -> None:
    keys = [s3keys.results_prefix("b", 1) + s3keys.part_name(i) for i in (10, 2, 0)]
    assert [s3keys.part_index_of(k) for k in sorted(keys)] == [0, 2, 10]
    assert s3keys.shard_key("b", 3) == "batches/b/shards/00003.jsonl"
