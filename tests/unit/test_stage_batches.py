"""Batches through the API's stage, over a bare moto world: create from `BatchParams`, an
Idempotency-Key replayed or reused with other parameters, the input File's checks, a tenant's
limit at create, reading and listing only the tenant's own batches, and parts while it runs."""

from __future__ import annotations

import pytest

from batch_core import s3keys
from batch_core.batch_params import BatchParams
from batch_core.errors import InvalidRequestError, NotFoundError, RateLimitError
from batch_core.records import FileRecord
from batch_core.retention import ExpiresAfter, new_file_object
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld, jsonl_bytes

CHAT = BatchParams(endpoint="/v1/chat/completions")
DATA = jsonl_bytes([chat_request("a"), chat_request("b")])


def upload(world: StageWorld, tenant: str = "acme") -> str:
    return world.stages.files.create(tenant, filename="in.jsonl", purpose="batch", data=DATA).id


def test_create_records_the_params_and_copies_the_input_for_intake(world: StageWorld) -> None:
    file_id = upload(world)
    params = BatchParams(
        endpoint="/v1/chat/completions",
        completion_window="48h",
        metadata={"project": "alpha"},
        invalid_lines="skip",
        output_expires_after=ExpiresAfter(anchor="created_at", seconds=7200),
    )

    record = world.stages.batches.create_batch("acme", params, input_file_id=file_id)

    now = int(world.clock())
    assert (record.status, record.tenant, record.input_file_id) == ("validating", "acme", file_id)
    assert (record.created_at, record.expires_at) == (now, now + 48 * 3600)
    assert (record.metadata, record.invalid_lines) == ({"project": "alpha"}, "skip")
    assert record.output_expires_after_seconds == 7200
    assert record.input_key == s3keys.batch_input_key(record.id)
    assert world.store.read(record.input_key) == DATA
    assert world.stages.batches.get_for("acme", record.id) == record


def test_an_idempotency_key_replays_its_batch_and_refuses_other_params(
    world: StageWorld,
) -> None:
    file_id = upload(world)
    batches = world.stages.batches
    first = batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k-1")

    assert batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k-1") == first
    with pytest.raises(InvalidRequestError) as reused:
        batches.create_batch(
            "acme",
            BatchParams(endpoint="/v1/chat/completions", completion_window="1h"),
            input_file_id=file_id,
            idempotency_key="k-1",
        )
    assert (reused.value.code, reused.value.param) == ("idempotency_key_reused", "Idempotency-Key")
    # Without a key, or with another, each create is a batch of its own.
    other = batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k-2")
    plain = batches.create_batch("acme", CHAT, input_file_id=file_id)
    assert len({first.id, other.id, plain.id}) == 3
    with pytest.raises(InvalidRequestError) as control:
        batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k\n1")
    assert control.value.code == "invalid_idempotency_key"


def test_the_same_key_of_another_tenant_is_another_batch(world: StageWorld) -> None:
    batches = world.stages.batches
    mine = batches.create_batch("acme", CHAT, input_file_id=upload(world), idempotency_key="k")
    theirs = batches.create_batch(
        "other", CHAT, input_file_id=upload(world, "other"), idempotency_key="k"
    )

    assert mine.id != theirs.id
    with pytest.raises(NotFoundError):
        batches.get_for("other", mine.id)
    with pytest.raises(NotFoundError):
        batches.cancel("other", mine.id)
    assert world.batch(mine.id).status == "validating"


def test_the_input_must_be_the_tenants_unexpired_batch_file(world: StageWorld) -> None:
    batches = world.stages.batches
    with pytest.raises(NotFoundError):
        batches.create_batch("acme", CHAT, input_file_id=upload(world, "other"))
    output = new_file_object(
        "file-out",
        size=1,
        created_at=0,
        filename="out.jsonl",
        expires_at=2**40,
        purpose="batch_output",
    )
    world.table.files.put_file(FileRecord(file=output, s3_key="files/file-out", tenant="acme"))
    with pytest.raises(InvalidRequestError) as purpose:  # a batch's output is no input
        batches.create_batch("acme", CHAT, input_file_id="file-out")
    assert (purpose.value.param, purpose.value.code) == ("input_file_id", "invalid_value")
    file_id = upload(world)
    world.clock.advance(world.deps.settings.file_retention_seconds)
    with pytest.raises(NotFoundError):
        batches.create_batch("acme", CHAT, input_file_id=file_id)


def test_a_tenant_at_its_limit_is_refused_but_a_replay_takes_no_slot(world: StageWorld) -> None:
    world.configure(tenant_max_active_batches=1)
    batches = world.stages.batches
    file_id = upload(world)
    first = batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k")

    with pytest.raises(RateLimitError):
        batches.create_batch("acme", CHAT, input_file_id=file_id)
    assert batches.create_batch("acme", CHAT, input_file_id=file_id, idempotency_key="k") == first
    assert batches.create_batch("zeta", CHAT, input_file_id=upload(world, "zeta")).tenant == "zeta"


def test_a_tenants_batches_are_listed_newest_first_in_pages(world: StageWorld) -> None:
    batches = world.stages.batches
    file_id = upload(world)
    made = []
    for _ in range(3):
        made.append(batches.create_batch("acme", CHAT, input_file_id=file_id).id)
        world.clock.advance(1)
    batches.create_batch("other", CHAT, input_file_id=upload(world, "other"))

    page = batches.list_batches("acme", limit=2)
    rest = batches.list_batches("acme", after=page.items[-1].id, limit=2)

    assert [b.id for b in page.items] == made[::-1][:2] and page.has_more
    assert [b.id for b in rest.items] == made[:1] and not rest.has_more
    with pytest.raises(NotFoundError):
        batches.list_batches("acme", after="batch_unknown")


def test_a_running_batchs_parts_can_be_read_before_it_ends(world: StageWorld) -> None:
    record = world.create([chat_request("a"), chat_request("b")], tenant="acme")
    assert world.stages.batches.result_parts("acme", record.id) == []

    world.run_queued(FakeEngine(MODEL))

    (part,) = world.stages.batches.result_parts("acme", record.id)
    assert part.kind == "output" and part.bytes > 0
    assert s3keys.results_prefix(record.id) in part.url
