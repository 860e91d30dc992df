"""Results reused across a tenant's batches (issue 28), opted in per batch: deterministic
requests only, within the results' retention, never another tenant's, even when the tenants'
cache partitions meet."""

from __future__ import annotations

from typing import Any

import pytest

from batch_core import table_reuse
from batch_core.drop_options import drop_options
from batch_core.errors import InvalidRequestError
from batch_core.reuse import deterministic
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request
from tests.stage_world import StageWorld

OPT_IN = {"reuse_results": "true"}


def questions(count: int, **body: Any) -> list[dict[str, Any]]:
    lines = [chat_request(f"q{i}", f"question {i}") for i in range(count)]
    for line in lines:
        line["body"].update(body)
    return lines


def run(
    world: StageWorld, lines: list[dict[str, Any]], tenant: str = "acme", **params: Any
) -> tuple[Any, FakeEngine]:
    """A batch created through `Batches` and run to its end on a fresh fake engine."""
    engine = FakeEngine(MODEL)
    record = world.run_to_end(world.create(lines, tenant=tenant, **params), engine)
    return record, engine


def bodies(world: StageWorld, record: Any) -> dict[str, Any]:
    return {line["custom_id"]: line["response"] for line in world.file_lines(record.output_file_id)}


def test_an_opted_in_batch_reuses_an_earlier_batchs_deterministic_results(
    world: StageWorld,
) -> None:
    world.configure(prefix_slots=0)
    first, engine = run(world, questions(5, temperature=0), metadata=OPT_IN)
    assert engine.calls == 5 and first.request_reused == 0

    second, engine = run(world, questions(5, temperature=0), metadata=OPT_IN)

    assert engine.calls == 0
    batch = second.to_batch()
    assert (batch.status, batch.reused_requests, batch.request_counts.completed) == (
        "completed",
        5,
        5,
    )
    assert batch.usage is not None and batch.usage.total_tokens == 0  # counted once: first's
    assert bodies(world, second) == bodies(world, first)
    ids = {line["id"] for line in world.file_lines(second.output_file_id)}
    assert not ids & {line["id"] for line in world.file_lines(first.output_file_id)}


def test_a_seed_makes_a_sampled_request_deterministic_and_repeats_in_it_still_count_once(
    world: StageWorld,
) -> None:
    world.configure(prefix_slots=0)
    run(world, questions(3, temperature=0.7, seed=7), metadata=OPT_IN)
    lines = questions(3, temperature=0.7, seed=7) + [
        {**line, "custom_id": f"again-{line['custom_id']}"}
        for line in questions(3, temperature=0.7, seed=7)
    ]

    second, engine = run(world, lines, metadata=OPT_IN)

    assert engine.calls == 0
    assert (second.request_completed, second.request_reused) == (6, 6)


def test_without_opting_in_or_with_sampling_the_requests_run_again(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    run(world, questions(3, temperature=0), metadata=OPT_IN)
    run(world, questions(3, temperature=0.5), metadata=OPT_IN)
    run(world, questions(3), metadata=OPT_IN)  # no temperature: 1, sampled

    not_opted, engine = run(world, questions(3, temperature=0))
    assert (engine.calls, not_opted.request_reused) == (3, 0)
    opted_out, engine = run(world, questions(3, temperature=0), metadata={"reuse_results": "false"})
    assert (engine.calls, opted_out.request_reused) == (3, 0)
    sampled, engine = run(world, questions(3, temperature=0.5), metadata=OPT_IN)
    assert (engine.calls, sampled.request_reused) == (3, 0)
    default, engine = run(world, questions(3), metadata=OPT_IN)
    assert (engine.calls, default.request_reused) == (3, 0)


def test_a_batch_that_did_not_opt_in_adds_nothing_to_the_cache(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    run(world, questions(3, temperature=0))

    later, engine = run(world, questions(3, temperature=0), metadata=OPT_IN)

    assert (engine.calls, later.request_reused) == (3, 0)


def test_another_tenant_never_reuses_results(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    run(world, questions(3, temperature=0), tenant="acme", metadata=OPT_IN)

    other, engine = run(world, questions(3, temperature=0), tenant="globex", metadata=OPT_IN)

    assert (engine.calls, other.request_reused) == (3, 0)


def test_tenants_whose_cache_partitions_meet_still_never_share(
    world: StageWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hash collision of two tenants' partitions: the item names its tenant."""
    monkeypatch.setattr(table_reuse, "reuse_pk", lambda tenant: "REUSE#same-for-everyone")
    world.configure(prefix_slots=0)
    run(world, questions(3, temperature=0), tenant="acme", metadata=OPT_IN)

    other, engine = run(world, questions(3, temperature=0), tenant="globex", metadata=OPT_IN)
    mine, mine_engine = run(world, questions(3, temperature=0), tenant="acme", metadata=OPT_IN)

    assert (engine.calls, other.request_reused) == (3, 0)
    # globex overwrote the shared keys: acme, finding globex's items, runs again too.
    assert (mine_engine.calls, mine.request_reused) == (3, 0)


def test_results_past_their_retention_are_not_reused(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    run(
        world,
        questions(2, temperature=0),
        metadata=OPT_IN,
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    world.clock.advance(3599)
    within, engine = run(world, questions(1, temperature=0), metadata=OPT_IN)
    assert (engine.calls, within.request_reused) == (0, 1)

    world.clock.advance(2)
    past, engine = run(world, questions(2, temperature=0), metadata=OPT_IN)

    # Both kept results lapsed with the first batch's output (a reuse does not extend them).
    assert (engine.calls, past.request_reused) == (2, 0)


def test_embeddings_are_always_deterministic(world: StageWorld) -> None:
    world.configure(prefix_slots=0)

    def embeddings(count: int) -> list[dict[str, Any]]:
        return [
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": MODEL, "input": f"text {i}"},
            }
            for i in range(count)
        ]

    run(world, embeddings(3), metadata=OPT_IN, endpoint="/v1/embeddings")
    second, engine = run(world, embeddings(3), metadata=OPT_IN, endpoint="/v1/embeddings")

    assert (engine.calls, second.request_reused) == (0, 3)


def test_failures_are_not_kept_for_later_batches(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    wrong = questions(2, temperature=0)
    # Longer than the fake engine's context: it answers 400.
    wrong[0]["body"]["messages"][0]["content"] = " ".join(["word"] * 3000)
    first, _ = run(world, wrong, metadata=OPT_IN)
    assert first.request_failed == 1

    second, engine = run(world, wrong, metadata=OPT_IN)

    assert (engine.calls, second.request_reused, second.request_failed) == (1, 1, 1)


def test_deterministic_by_endpoint_family() -> None:
    chat, completions, responses = "/v1/chat/completions", "/v1/completions", "/v1/responses"
    for url in (chat, completions, responses):
        assert deterministic(url, {"temperature": 0})
        assert deterministic(url, {"temperature": 0.0, "seed": None})
        assert deterministic(url, {"temperature": 0.9, "seed": 3})
        assert not deterministic(url, {})
        assert not deterministic(url, {"temperature": 0.2})
        assert not deterministic(url, {"temperature": False})
        assert not deterministic(url, {"seed": True})
        assert not deterministic(url, {"seed": "3"})
    for url in ("/v1/embeddings", "/v1/score", "/v1/rerank"):
        assert deterministic(url, {"temperature": 2})
    assert not deterministic("/v1/unknown", {"temperature": 0})


def test_the_option_takes_true_or_false_only(world: StageWorld) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        world.create(questions(1), metadata={"reuse_results": "yes"})
    assert refused.value.param == "metadata.reuse_results"
    assert drop_options("inbox/reuse-results=true/f.jsonl", {}).metadata == OPT_IN
    assert drop_options("inbox/f.jsonl", {"reuse-results": "TRUE"}).metadata == OPT_IN
    assert drop_options("inbox/f.jsonl", {"metadata-reuse_results": "false"}).metadata == {
        "reuse_results": "false"
    }
    with pytest.raises(InvalidRequestError) as bad_drop:
        drop_options("inbox/f.jsonl", {"reuse-results": "maybe"})
    assert (bad_drop.value.param, bad_drop.value.code) == ("reuse-results", "invalid_option")


def test_a_dropped_file_opts_in_with_its_option(world: StageWorld) -> None:
    world.configure(prefix_slots=0)
    engine = FakeEngine(MODEL)
    first = world.ingest("one.jsonl", questions(2, temperature=0), {"reuse-results": "true"})
    world.run_to_end(first, engine)
    assert first.metadata == OPT_IN

    again = world.ingest("two.jsonl", questions(2, temperature=0), {"reuse-results": "true"})
    ended = world.run_to_end(again, engine)

    assert (engine.calls, ended.request_reused) == (2, 2)


def test_a_deleted_output_file_is_never_answered_from(world: StageWorld) -> None:
    """The cache points at output lines and copies none: deleting the output File deletes
    its parts, and what they said is gone from the cache too."""
    world.configure(prefix_slots=0)
    first, _ = run(world, questions(3, temperature=0), metadata=OPT_IN)
    table = world.table.access
    items = table.db.scan(TableName=table.name)["Items"]
    cached = [i for i in items if i["pk"]["S"].startswith("REUSE#")]
    assert len(cached) == 3
    answers = {line["custom_id"]: line for line in world.file_lines(first.output_file_id)}
    for item in cached:  # a place, never the answer itself
        assert set(item) == {"pk", "sk", "tenant", "key", "offset", "length", "expires_at", "ttl"}
        assert not any(a["response"]["body"]["id"] in str(item) for a in answers.values())

    assert first.output_file_id is not None
    world.stages.files.delete(first.tenant, first.output_file_id)
    again, engine = run(world, questions(3, temperature=0), metadata=OPT_IN)

    assert (engine.calls, again.request_reused) == (3, 0)
    assert again.to_batch().request_counts.completed == 3
