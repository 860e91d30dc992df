"""Batches take turns within a tier: at most SHARDS_AHEAD of a batch's shards are queued or
running, and each settled shard lets the next one in behind what other batches queued
meanwhile. So a second tenant's batch starts while the first tenant's backlog remains, on any
queue (SQS fair queues, by the tenant as MessageGroupId, add to this in AWS; moto ignores
the group). With SHARDS_AHEAD=0 every shard is queued at once, first in first out, and the
second tenant waits for the whole backlog: the same test then fails."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from batch_core import s3keys
from batch_core.messaging import ShardTask
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api, store_batch
from tests.queues import drain

FIRST = "sk-first-tenant-0123456789"
SECOND = "sk-second-tenant-0123456789"


@pytest.fixture(params=[4, 0], ids=["turns", "fifo"])
def two_tenants(request: pytest.FixtureRequest) -> Iterator[tuple[LocalStack, ApiServer, int]]:
    engine = FakeEngine(MODEL, seconds_per_request=0.02)
    keys = {FIRST: "first", SECOND: "second"}
    with serve_api(engine, keys, shard_size=10, shards_ahead=request.param) as running:
        yield running[0], running[1], request.param


def submit(server: ApiServer, key: str, count: int, stem: str) -> tuple[openai.OpenAI, str]:
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    data = b"".join(json.dumps(chat_request(f"{stem}{i}")).encode() + b"\n" for i in range(count))
    uploaded = client.files.create(file=(f"{stem}.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return client, batch.id


def test_a_second_tenants_batch_starts_while_the_first_tenants_backlog_remains(
    two_tenants: tuple[LocalStack, ApiServer, int],
) -> None:
    stack, server, ahead = two_tenants
    # 40 shards of 10 requests, 8 s of work for the one worker: the first tenant's backlog.
    first, backlog = submit(server, FIRST, 400, "a")
    deadline = time.monotonic() + 60
    while first.batches.retrieve(backlog).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second, small = submit(server, SECOND, 20, "b")  # the same window, so the same tier
    deadline = time.monotonic() + 90
    while (done := second.batches.retrieve(small)).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    backlog_now = first.batches.retrieve(backlog)
    assert done.request_counts is not None and done.request_counts.completed == 20
    assert backlog_now.request_counts is not None
    if ahead == 0:
        # Every shard queued at once: the second tenant waited for the first's whole backlog.
        assert backlog_now.request_counts.completed == 400, backlog_now.request_counts
        return
    assert backlog_now.status == "in_progress"
    assert backlog_now.request_counts.completed < 300
    held = stack.stages.batches.get_batch(backlog)
    assert held is not None and held.shards_released is not None
    assert held.shards_released < held.shards_total  # some of its shards are still held back
    deadline = time.monotonic() + 90
    while first.batches.retrieve(backlog).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert first.batches.retrieve(backlog).request_counts.completed == 400  # type: ignore[union-attr]


def test_the_sweep_lets_in_the_shards_a_crash_kept_out(bare_stack: LocalStack) -> None:
    """A worker that died between settling a shard and letting the next in leaves its batch
    with fewer shards queued or running than SHARDS_AHEAD: the five-minute sweep sends them."""
    stages = bare_stack.stages
    ahead = stages.settings.shards_ahead
    assert ahead >= 2  # the template's default
    # 10 shards, the first `ahead` let in, one of them settled with nothing let in after it.
    store_batch(bare_stack, "batch_held", "in_progress", shards_total=10, shards_pending=9,
                shards_released=ahead, shards_queued=True, tier="normal")  # fmt: skip
    assert stages.turns.top_up_shards() == {"batch_held": 1}
    assert stages.batches.get_batch("batch_held").shards_released == ahead + 1  # type: ignore[union-attr]
    message = drain(bare_stack.session.client("sqs"), stages.shard_queue.urls["normal"])
    assert [ShardTask.model_validate_json(m["Body"]).shard_index for m in message] == [ahead]
    assert stages.turns.top_up_shards() == {}  # the window is full again


def test_a_shard_let_in_twice_is_counted_once(bare_stack: LocalStack) -> None:
    """Two workers settling shards of one batch at once both send the next shard; only one
    counts it, and the other sends the one after (each settled shard lets exactly one in)."""
    stages = bare_stack.stages
    store_batch(bare_stack, "batch_race", "in_progress", shards_total=4, shards_pending=4,
                shards_released=1, shards_queued=True)  # fmt: skip
    stale = stages.batches.get_batch("batch_race")
    assert stages.turns.let_next_shard_in(stale) == 1
    assert stages.turns.let_next_shard_in(stale) == 1  # read again after the refused count
    assert stages.batches.get_batch("batch_race").shards_released == 3  # type: ignore[union-attr]
    indexes = [
        ShardTask.model_validate_json(m["Body"]).shard_index
        for m in drain(bare_stack.session.client("sqs"), stages.shard_queue.urls["normal"])
    ]
    assert sorted(indexes) == [1, 1, 2]  # the copy of 1 is skipped by whoever takes it
    store_batch(bare_stack, "batch_gone", "cancelling", shards_total=4, shards_released=1)
    assert stages.turns.let_next_shard_in(stages.batches.get_batch("batch_gone")) == 0


def test_intake_queues_the_first_shards_after_recording_how_many(
    bare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count is written with the move to in_progress, before any message: a worker that
    settles the first shard at once still finds the batch holding shards back."""
    from batch_core.messaging import ShardQueue
    from handlers import validate
    from tests.conftest import load_event
    from tests.integration.test_handlers import CONTEXT, put_input, queued

    stages = bare_stack.stages
    seen: list[int | None] = []
    send = ShardQueue.send

    def watching(self: ShardQueue, tasks: Any, *args: Any, **kwargs: Any) -> None:
        tasks = list(tasks)
        batch = stages.batches.get_batch(tasks[0].batch_id)
        seen.append(batch.shards_released if batch else -1)
        send(self, tasks, *args, **kwargs)

    monkeypatch.setattr(ShardQueue, "send", watching)
    put_input(bare_stack, 40)  # 10 shards of 4
    validate.handler(load_event("intake_s3_object_created.json"), CONTEXT)
    ahead = stages.settings.shards_ahead
    assert seen == [ahead]
    indexes = sorted(ShardTask.model_validate_json(m["Body"]).shard_index
                     for m in queued(bare_stack, "ShardQueue"))  # fmt: skip
    assert indexes == list(range(ahead))


def test_a_shard_that_failed_for_good_lets_the_next_one_in(bare_stack: LocalStack) -> None:
    """A poison shard settles through the dead-shard function: its batch must not be left a
    shard short, or the held ones would wait for the sweep."""
    from batch_core.records import ShardRecord

    stages = bare_stack.stages
    store_batch(bare_stack, "batch_poison", "in_progress", shards_total=3, shards_pending=3,
                shards_released=1, shards_queued=True, request_total=3)  # fmt: skip
    stages.table.shards.put_shards(
        "batch_poison",
        [ShardRecord(batch_id="batch_poison", index=i, request_count=1) for i in range(3)],
    )
    for i in range(3):
        line = json.dumps(chat_request(f"p{i}")).encode() + b"\n"
        stages.store.put(s3keys.shard_key("batch_poison", i), line)
    assert stages.ending.fail_shard(ShardTask(batch_id="batch_poison", shard_index=0))
    batch = stages.batches.get_batch("batch_poison")
    assert batch is not None and (batch.shards_released, batch.shards_pending) == (2, 2)
    (message,) = drain(bare_stack.session.client("sqs"), stages.shard_queue.urls["normal"])
    assert ShardTask.model_validate_json(message["Body"]).shard_index == 1
