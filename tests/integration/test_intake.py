"""Intake on moto: drop options, the skip mode, shard planning, and nothing left on failure."""

from __future__ import annotations

import json
from pathlib import Path

from openai.types import Batch as OpenAIBatch

from batch_core import s3keys
from batch_core.protocol import ShardRequest
from batch_core.service import DroppedObject
from batchctl.local import LocalStack
from handlers.s3_notification import dropped_objects
from tests.conftest import MODEL, chat_request, lines_of, write_jsonl


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
    assert fake_stack.service.store.list_keys(s3keys.errors_prefix(batch.id)) == []


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
    record = bare_stack.service.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "in_progress"
    store = bare_stack.service.store
    groups: list[list[str]] = []
    for index in range(record.shards_total):
        shard = bare_stack.service.repository.get_shard(record.id, index)
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
    record = bare_stack.service.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert record is not None and record.status == "failed"
    assert record.errors is not None
    assert [(e.code, e.line, e.param) for e in record.errors] == [("missing_body", 11, "body")]
    assert bare_stack.service.store.list_keys(s3keys.shard_prefix(record.id)) == []
    assert bare_stack.service.repository.get_shard(record.id, 0) is None
    assert shard_messages(bare_stack) == 0


def test_a_file_over_the_size_limit_fails_without_being_read(
    bare_stack: LocalStack, tmp_path: Path
) -> None:
    service = bare_stack.service
    service.settings = service.settings.model_copy(update={"max_batch_bytes": 100})
    path = write_jsonl(tmp_path / "big.jsonl", [chat_request(f"r{i}") for i in range(3)])
    key = s3keys.INBOX_PREFIX + "big.jsonl"
    bare_stack.session.client("s3").upload_file(str(path), bare_stack.bucket, key)
    record = service.ingest_dropped_object(DroppedObject(key=key, etag="1"))
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
    url = bare_stack.physical_id("IntakeQueue")
    bodies: list[str] = []
    while len(bodies) < 2:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert messages, "S3 sent no events"
        bodies += [m["Body"] for m in messages]
    batches = [
        bare_stack.service.ingest_dropped_object(dropped)
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
