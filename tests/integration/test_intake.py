"""Intake on moto: drop options, the skip mode, shard planning, and nothing left on failure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from openai.types import Batch as OpenAIBatch

from batch_core import s3keys
from batch_core.api_models import BatchList
from batch_core.intake_jobs import DroppedObject
from batch_core.models import BatchErrors
from batch_core.protocol import ShardRequest
from batch_core.records import DEFAULT_TENANT, BatchRecord, ServedModel
from batch_core.stages import Stages
from batch_core.validation import STORED_ERRORS_BYTES
from batchctl.local import LocalStack
from handlers.s3_notification import dropped_objects
from tests.conftest import MODEL, chat_request, lines_of, write_jsonl
from tests.dynamodb_item import batch_item_bytes
from tests.queues import drain


def shard_messages(stack: LocalStack) -> int:
    attributes = stack.session.client("sqs").get_queue_attributes(
        QueueUrl=stack.physical_id("ShardQueue"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_skip_mode_runs_the_valid_lines_and_reports_the_bad_ones(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    bad_model = chat_request("c", model="other-model")  # no worker serves it
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [chat_request("a"), "{oops", chat_request("b"), bad_model, chat_request("a"), ""],
    )
    name = fake_stack.drop(path, metadata={"invalid-lines": "skip", "metadata-run": "7"})
    batch = fake_stack.wait_for_outbox(name, timeout=120)
    paths = fake_stack.download_outbox(name, tmp_path / "out")

    OpenAIBatch.model_validate_json(paths["batch.json"].read_text())
    assert batch.status == "completed"
    assert batch.metadata == {"run": "7"}
    assert batch.request_counts is not None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (5, 2, 3)
    assert sorted(line["custom_id"] for line in lines_of(paths["output.jsonl"])) == ["a", "b"]
    errors = {
        line["response"]["body"]["error"]["code"]: line for line in lines_of(paths["errors.jsonl"])
    }
    assert sorted(errors) == ["duplicate_custom_id", "invalid_json_line", "model_not_found"]
    mismatch = errors["model_not_found"]
    assert mismatch["custom_id"] == "c"
    assert mismatch["response"]["status_code"] == 400
    assert mismatch["error"] is None
    assert mismatch["response"]["body"]["error"]["param"] == "body.model"
    assert mismatch["response"]["body"]["error"]["message"].startswith("Line 4: ")
    assert errors["invalid_json_line"]["custom_id"] is None
    assert errors["duplicate_custom_id"]["custom_id"] == "a"


def test_skip_mode_still_fails_a_file_with_no_valid_line(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "junk.jsonl", ["{", "[]"])
    batch = fake_stack.wait_for_outbox(
        fake_stack.drop(path, metadata={"invalid-lines": "skip"}), timeout=60
    )
    assert batch.status == "failed"
    assert batch.errors is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 1),
        ("invalid_json_line", 2),
    ]
    assert fake_stack.stages.store.list_keys(s3keys.errors_prefix(batch.id)) == []


def test_options_from_key_folders_choose_endpoint_window_and_metadata(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    embedding = {"custom_id": "e1", "body": {"model": MODEL, "input": "hello"}}  # no url
    path = write_jsonl(tmp_path / "emb.jsonl", [embedding])
    name = fake_stack.drop(path, "endpoint=embeddings/window=72h/team=search/emb")
    batch = fake_stack.wait_for_outbox(name, timeout=120)
    assert batch.status == "completed", batch.errors
    assert batch.endpoint == "/v1/embeddings"
    assert batch.completion_window == "72h"
    assert batch.expires_at == batch.created_at + 72 * 3600
    assert batch.metadata == {"team": "search"}
    (line,) = lines_of(fake_stack.download_outbox(name, tmp_path / "out")["output.jsonl"])
    assert line["response"]["body"]["object"] == "list"


def test_an_unusable_option_fails_the_batch_naming_it(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "w.jsonl", [chat_request("a")])
    batch = fake_stack.wait_for_outbox(
        fake_stack.drop(path, metadata={"completion-window": "30d"}), timeout=60
    )
    assert batch.status == "failed"
    assert batch.errors is not None
    ((error),) = batch.errors.data
    assert (error.code, error.param) == ("invalid_option", "completion_window")
    assert "between 1h and 7d" in (error.message or "")


def test_shards_keep_shared_preambles_together_and_record_the_plan(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    preambles = ["You translate to French.", "You translate to German."]
    lines = []
    for i in range(12):
        request = chat_request(f"r{i}", f"sentence {i}")
        if i % 3:
            system = {"role": "system", "content": preambles[i % 3 - 1]}
            request["body"]["messages"].insert(0, system)
        lines.append(request)
    path = write_jsonl(tmp_path / "p.jsonl", lines)
    key = s3keys.INBOX_PREFIX + "p.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    record = bare_stack.stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "in_progress"
    store = bare_stack.stages.store
    groups: list[list[str]] = []
    for index in range(record.shards_total):
        shard = bare_stack.stages.table.shards.get_shard(record.id, index)
        assert shard is not None and shard.estimated_tokens > 0
        data = store.read(s3keys.shard_key(record.id, index))
        groups.append([ShardRequest.model_validate_json(x).custom_id for x in data.splitlines()])
    # shard_size is 4: each preamble's four requests fill one shard, in file order.
    assert sorted(groups) == sorted([[f"r{i}" for i in range(12) if i % 3 == k] for k in range(3)])
    assert shard_messages(bare_stack) == record.shards_total


def test_a_failed_batch_leaves_no_shards_messages_or_items(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    # Enough valid lines to write shards before the bad last line is seen.
    lines = [chat_request(f"r{i}") for i in range(10)] + [json.dumps({"custom_id": "x"})]
    path = write_jsonl(tmp_path / "late.jsonl", lines)
    key = s3keys.INBOX_PREFIX + "late.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    record = bare_stack.stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "failed"
    assert record.errors is not None
    assert [(e.code, e.line, e.param) for e in record.errors] == [("missing_body", 11, "body")]
    assert bare_stack.stages.store.list_keys(s3keys.shard_prefix(record.id)) == []
    assert bare_stack.stages.table.shards.get_shard(record.id, 0) is None
    assert shard_messages(bare_stack) == 0


def test_a_file_over_the_size_limit_fails_without_being_read(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    base = bare_stack.stages
    settings = base.settings.model_copy(update={"max_batch_bytes": 100})
    stages = Stages(dataclasses.replace(base.deps, settings=settings), base.channels)
    path = write_jsonl(tmp_path / "big.jsonl", [chat_request(f"r{i}") for i in range(3)])
    key = s3keys.INBOX_PREFIX + "big.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    record = stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "failed"
    assert record.errors is not None
    ((error),) = record.errors
    assert (error.code, error.line) == ("file_too_large", None)
    assert str(path.stat().st_size) in (error.message or "")
    assert shard_messages(bare_stack) == 0


def test_a_key_overwritten_before_intake_runs_each_upload_as_it_was(
    bare_stack: LocalStack,
) -> None:
    """Drop A (6 lines) then B (4) on one key before either event is handled: each event's
    batch runs exactly its own upload (the bucket is versioned; intake reads that version)."""
    s3 = bare_stack.session.client("s3")
    key = "inbox/same.jsonl"
    for stem, count in (("a", 6), ("b", 4)):
        body = "".join(json.dumps(chat_request(f"{stem}{i}")) + "\n" for i in range(count))
        s3.put_object(Bucket=bare_stack.bucket, Key=key, Body=body.encode())
    sqs = bare_stack.session.client("sqs")
    messages = drain(sqs, bare_stack.physical_id("IntakeQueue"), at_least=2)
    bodies = [m["Body"] for m in messages]
    assert len(bodies) >= 2, f"S3 sent {len(bodies)} events"
    batches = [
        bare_stack.stages.intake.ingest_dropped_object(dropped)
        for body in bodies
        for dropped in dropped_objects(body)
    ]
    totals = sorted(b.to_batch().request_counts.total for b in batches if b is not None)
    assert totals == [4, 6]
    names = sorted(b.outbox_name or "" for b in batches if b is not None)
    assert names[0] == "same" and names[1].startswith("same~")


def test_json_txt_and_jsonl_files_of_one_stem_keep_their_own_outboxes(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    names = []
    for index, suffix in enumerate((".jsonl", ".json", ".txt")):
        path = write_jsonl(tmp_path / f"x{index}.jsonl", [chat_request(f"c{index}")])
        fake_stack.session.client("s3").upload_file(
            str(path), fake_stack.bucket, f"inbox/x{suffix}"
        )
        names.append("x" if suffix == ".jsonl" else f"x{suffix}")
    for index, name in enumerate(names):
        batch = fake_stack.wait_for_outbox(name, timeout=60)
        assert batch.status == "completed" and batch.request_counts.total == 1
        paths = fake_stack.download_outbox(name, tmp_path / f"out{index}")
        assert [line["custom_id"] for line in lines_of(paths["output.jsonl"])] == [f"c{index}"]


# Issue 25, finding 3: what a line quotes cannot make its batch's item too large to store.


def drop_lines(stack: LocalStack, tmp_path: Path, stem: str, lines: list[Any]) -> BatchRecord:
    """Intake of `lines` dropped as inbox/<stem>.jsonl, run here (no routing)."""
    path = write_jsonl(tmp_path / f"{stem}.jsonl", lines)
    key = f"{s3keys.INBOX_PREFIX}{stem}.jsonl"
    stack.session.client("s3").upload_file(str(path), stack.bucket, key)
    record = stack.stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None
    return record


def test_a_500_kb_field_name_fails_the_batch_at_once_with_a_bounded_error(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    """It once made an error over DynamoDB's 400 KB item: intake failed on every attempt for
    hours and the batch ended `intake_failed`, the real error lost."""
    wide = {**chat_request("a"), "f" * (500 * 1024): 1}
    record = drop_lines(bare_stack, tmp_path, "wide", [chat_request("ok"), wide])
    assert record.status == "failed"
    assert record.errors is not None
    ((error),) = record.errors
    assert (error.code, error.line) == ("invalid_request", 2)
    assert error.message is not None and f"…({500 * 1024} bytes)" in error.message
    assert len(error.model_dump_json()) < 2048
    assert batch_item_bytes(bare_stack, record.id) < STORED_ERRORS_BYTES + 4096
    assert record.error_file_id is None  # nothing was left out of the list


def test_many_errors_keep_to_the_budget_on_the_batch_and_all_go_to_its_error_file(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    lines = [{**chat_request(f"r{i}"), "g" * 300 + str(i): 1} for i in range(400)]
    record = drop_lines(bare_stack, tmp_path, "noisy", lines)
    assert record.status == "failed" and record.errors is not None
    stored = BatchErrors(data=record.errors).model_dump_json()
    assert len(stored) <= STORED_ERRORS_BYTES
    *listed, summary = record.errors
    assert [e.line for e in listed] == list(range(1, len(listed) + 1))
    assert summary.code == "too_many_errors"
    assert summary.message is not None and summary.message.startswith("400 errors in all")
    assert batch_item_bytes(bare_stack, record.id) < STORED_ERRORS_BYTES + 4096
    # Every error, in the error file's format (as the skip mode writes them), kept as a File
    # of the batch's owner and mirrored to the outbox.
    assert record.error_file_id is not None
    stages = bare_stack.stages
    content = stages.store.read(s3keys.file_key(record.error_file_id))
    error_lines = [json.loads(x) for x in content.splitlines()]
    assert [x["custom_id"] for x in error_lines] == [f"r{i}" for i in range(400)]
    first = error_lines[0]["response"]["body"]["error"]
    assert first["code"] == "invalid_request" and first["message"].startswith("Line 1: ")
    file = stages.table.files.get_file(record.error_file_id)
    assert file is not None and file.batch_id == record.id and file.tenant == record.tenant
    assert record.outbox_name is not None
    outbox = s3keys.outbox_key(record.outbox_name, "errors.jsonl")
    assert stages.store.read(outbox) == content
    # A second delivery of the same event changes nothing.
    again = stages.intake.ingest_dropped_object(DroppedObject(key="inbox/noisy.jsonl", etag="1"))
    assert again is not None and again.error_file_id == record.error_file_id


def test_a_page_of_batches_with_300_kb_custom_ids_in_their_errors_stays_small(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    """Twenty such batches once made one list page over Lambda's 6 MB response limit."""
    long_id = "c" * (300 * 1024)
    for i in range(20):
        drop_lines(bare_stack, tmp_path, f"dup{i}", [chat_request(long_id), chat_request(long_id)])
    page = bare_stack.stages.batches.list_batches(DEFAULT_TENANT, limit=100)
    assert len(page.items) == 20 and all(b.status == "failed" for b in page.items)
    body = BatchList.of([r.to_batch() for r in page.items], page.has_more).model_dump_json()
    assert len(body.encode()) < 100 * 1024, len(body)  # 6 MB is the limit


# Issue 25, finding 4: declared max_tokens x n cannot inflate the shared work estimate.


def test_greedy_max_tokens_and_n_are_estimated_within_the_models_context(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    """20 lines of max_tokens 20,000 and n 128 in a 1 h window were estimated at 51 M tokens:
    DeadlinePressure 7.1 (scale-out starts at 0.5) and the batch flagged at risk at once."""
    stages = bare_stack.stages
    greedy = {"max_tokens": 20_000, "n": 128}
    lines = [{**chat_request(f"r{i}"), "body": {**chat_request(f"r{i}")["body"], **greedy}}
             for i in range(20)]  # fmt: skip
    path = write_jsonl(tmp_path / "greedy.jsonl", lines)
    key = f"{s3keys.INBOX_PREFIX}window=1h/greedy.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    record = stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "in_progress"
    context = stages.settings.model_context_tokens
    assert 20 * 20_000 <= record.estimated_tokens <= 20 * context
    assert stages.turns.deadline_pressures(3660)[MODEL] < 0.5  # due within the hour and a minute
    assert stages.turns.flag_at_risk() == []


def test_the_registrys_context_length_bounds_its_models_estimates(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    stages = bare_stack.stages
    stages.table.models.put_model(
        ServedModel(
            name="model-4k", queue_url=bare_stack.physical_id("ShardQueue"), context_length=4096
        )
    )
    stages.registry.forget()
    huge = {"model": "model-4k", "max_tokens": 2**63 - 1, "n": 128}
    lines = [{**chat_request(f"r{i}"), "body": {**chat_request(f"r{i}")["body"], **huge}}
             for i in range(3)]  # fmt: skip
    record = drop_lines(bare_stack, tmp_path, "huge", lines)
    assert record.status == "in_progress", record.errors
    assert record.estimated_tokens == 3 * 4096
