"""Per-tenant limits: a tenant at its most active batches, or with its most requests queued,
gets a 429 `rate_limit_exceeded` in OpenAI's shape for the next one (and a dropped file a
failed batch saying so); other tenants are not held back; ending a batch frees its slot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api, write_jsonl

BUSY = "sk-busy-tenant-0123456789"
OTHER = "sk-other-tenant-0123456789"


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, seconds_per_request=0.05)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENANT_MAX_ACTIVE_BATCHES", "2")
        patch.setenv("TENANT_MAX_QUEUED_REQUESTS", "50")
        with serve_api(engine, {BUSY: "busy", OTHER: "other"}, shard_size=10) as running:
            yield running


def client_for(limited: tuple[LocalStack, ApiServer], key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=limited[1].base_url, api_key=key, max_retries=0)


def submit(client: openai.OpenAI, count: int, stem: str) -> str:
    data = b"".join(json.dumps(chat_request(f"{stem}{i}")).encode() + b"\n" for i in range(count))
    uploaded = client.files.create(file=(f"{stem}.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def wait_for(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.batches.retrieve(batch_id).status
        if status in statuses:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{batch_id} did not reach {statuses}")


def load_becomes(limited: tuple[LocalStack, ApiServer], tenant: str, load: tuple[int, int]) -> bool:
    deadline = time.monotonic() + 10
    while limited[0].stages.table.tenants.tenant_load(tenant) != load:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def refusal(excinfo: pytest.ExceptionInfo[openai.RateLimitError]) -> dict[str, object]:
    body = excinfo.value.response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    return error


def test_the_third_active_batch_is_429_and_an_ended_one_frees_its_slot(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    busy = client_for(limited, BUSY)
    first, second = submit(busy, 48, "a"), submit(busy, 2, "b")  # 50: the queued limit
    with pytest.raises(openai.RateLimitError) as excinfo:
        submit(busy, 1, "c")
    error = refusal(excinfo)
    assert excinfo.value.status_code == 429
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "2 batches not yet ended, its limit is 2" in str(error["message"])
    # Another tenant's batches are not refused for this one's load.
    other = client_for(limited, OTHER)
    others = submit(other, 2, "o")
    # Once one of the busy tenant's batches has ended, it may create another.
    busy.batches.cancel(first)
    wait_for(busy, first, {"cancelled", "completed"})  # ended either way: its slot is free
    wait_for(busy, second, {"completed"})
    wait_for(other, others, {"completed"})
    third = submit(busy, 1, "d")
    assert wait_for(busy, third, {"completed"}) == "completed"
    assert load_becomes(limited, "busy", (0, 0))  # released when the end is announced


def test_a_tenant_holding_its_most_queued_requests_is_429_until_they_run(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    busy = client_for(limited, BUSY)
    big = submit(busy, 50, "q")  # exactly the limit: it runs, and holds all of it
    wait_for(busy, big, {"in_progress"})
    # Its requests are held before it moves to in_progress.
    assert load_becomes(limited, "busy", (1, 50))
    with pytest.raises(openai.RateLimitError) as excinfo:
        submit(busy, 1, "r")
    assert "50 requests queued in its batches, its limit is 50" in str(refusal(excinfo)["message"])
    busy.batches.cancel(big)
    wait_for(busy, big, {"cancelled"})
    assert load_becomes(limited, "busy", (0, 0))  # released when the end is announced
    wait_for(busy, submit(busy, 1, "s"), {"completed"})


def test_batches_created_at_once_cannot_together_pass_the_queued_limit(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    """Both are created before either is validated (nothing is queued yet, so both pass the
    create's check); each holds its requests before it runs, so only one of two 40-request
    batches fits a limit of 50, and the other fails saying why. A batch over the whole limit
    can never run, and fails too."""
    busy = client_for(limited, BUSY)
    first, second = submit(busy, 40, "ra"), submit(busy, 40, "rb")
    ends = {
        batch_id: wait_for(busy, batch_id, {"completed", "failed"}) for batch_id in (first, second)
    }
    assert sorted(ends.values()) == ["completed", "failed"], ends
    (loser,) = [busy.batches.retrieve(b) for b, status in ends.items() if status == "failed"]
    assert loser.errors is not None and loser.errors.data is not None
    (error,) = loser.errors.data
    assert error.code == "request_limit_exceeded"
    assert "40 requests" in (error.message or "") and "limit of 50" in (error.message or "")
    too_big = submit(busy, 60, "rc")
    assert wait_for(busy, too_big, {"completed", "failed"}) == "failed"
    retrieved = busy.batches.retrieve(too_big)
    assert retrieved.errors is not None and retrieved.errors.data is not None
    assert retrieved.errors.data[0].code == "request_limit_exceeded"
    assert load_becomes(limited, "busy", (0, 0))


def test_an_idempotent_replay_after_the_end_takes_no_slot(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    """A replayed Idempotency-Key answers with its batch; once that batch has ended, a
    replay once took a new slot that nothing released (three replays: locked out)."""
    busy = client_for(limited, BUSY)
    data = json.dumps(chat_request("i1")).encode() + b"\n"
    uploaded = busy.files.create(file=("i.jsonl", data), purpose="batch")
    create = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    headers = {"Idempotency-Key": "replay-after-end"}
    batch = busy.batches.create(**create, extra_headers=headers)  # type: ignore[arg-type]
    assert wait_for(busy, batch.id, {"completed"}) == "completed"
    assert load_becomes(limited, "busy", (0, 0))
    for _ in range(3):
        again = busy.batches.create(**create, extra_headers=headers)  # type: ignore[arg-type]
        assert (again.id, again.status) == (batch.id, "completed")
    assert limited[0].stages.table.tenants.tenant_load("busy") == (0, 0)
    wait_for(busy, submit(busy, 1, "after-replays"), {"completed"})


def test_an_idempotency_key_with_control_characters_is_400(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    busy = client_for(limited, BUSY)
    data = json.dumps(chat_request("k1")).encode() + b"\n"
    uploaded = busy.files.create(file=("k.jsonl", data), purpose="batch")
    with pytest.raises(openai.BadRequestError) as excinfo:
        busy.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_headers={"Idempotency-Key": "a\x01b"},
        )
    error = excinfo.value.response.json()["error"]
    assert (error["param"], error["code"]) == ("Idempotency-Key", "invalid_idempotency_key")


def test_a_dropped_file_over_the_limit_fails_saying_why(
    limited: tuple[LocalStack, ApiServer], tmp_path: Path
) -> None:
    stack = limited[0]
    repository = stack.stages.table
    # Two batches of the default tenant (drops) not yet ended hold both of its slots (held
    # here directly: batches that run would have to outlast the drop below).
    holders = ["batch_holder_one", "batch_holder_two"]
    for holder in holders:
        assert repository.tenants.reserve_batch_slot(
            "default", holder, expires_at=int(time.time()) + 3600, max_batches=2, max_requests=0
        )
    refused = stack.wait_for_outbox(
        stack.drop(write_jsonl(tmp_path / "over.jsonl", [chat_request("x")])), timeout=60
    )
    assert refused.status == "failed"
    assert refused.errors is not None and refused.errors.data is not None
    (error,) = refused.errors.data
    assert error.code == "rate_limit_exceeded"
    assert "its limit is 2" in (error.message or "")
    for holder in holders:
        repository.tenants.release_batch_slot("default", holder)
    assert load_becomes(limited, "default", (0, 0))


def test_a_slot_left_behind_by_a_crash_is_released_by_the_sweep(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    busy = client_for(limited, BUSY)
    batch_id = submit(busy, 1, "z")
    wait_for(busy, batch_id, {"completed"})
    repository = limited[0].stages.table
    # What a crash between a batch's end and its release leaves: the slot still counted.
    repository.tenants.reserve_batch_slot(
        "busy", batch_id, expires_at=int(time.time()) - 1, max_batches=0, max_requests=0
    )
    assert repository.tenants.tenant_load("busy")[0] == 1
    assert limited[0].stages.slots.release_ended() == [batch_id]
    assert repository.tenants.tenant_load("busy") == (0, 0)
    assert limited[0].stages.slots.release_ended() == []  # once


def test_a_tenants_first_batch_over_the_whole_limit_is_not_counted(
    limited: tuple[LocalStack, ApiServer],
) -> None:
    """The tenant's load has no queued requests yet before its first batch is counted: the
    limit holds for that one too."""
    repository = limited[0].stages.table
    expires = int(time.time()) + 3600
    assert repository.tenants.reserve_batch_slot(
        "fresh", "batch_fresh_one", expires_at=expires, max_batches=2, max_requests=50
    )
    assert not repository.tenants.count_slot_requests(
        "fresh", "batch_fresh_one", 51, max_requests=50
    )
    assert repository.tenants.tenant_load("fresh") == (1, 0)
    assert repository.tenants.count_slot_requests("fresh", "batch_fresh_one", 50, max_requests=50)
    assert repository.tenants.tenant_load("fresh") == (1, 50)
    repository.tenants.release_batch_slot("fresh", "batch_fresh_one")
    assert repository.tenants.tenant_load("fresh") == (0, 0)
