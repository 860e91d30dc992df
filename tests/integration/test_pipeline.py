"""The whole pipeline on moto: drop a file, the real ASL tracks it, results come out."""

from __future__ import annotations

import json
import time
from pathlib import Path

from openai.types import Batch as OpenAIBatch
from openai.types.chat import ChatCompletion

from batch_core import s3keys
from batchctl.local import LocalStack
from tests.conftest import EXAMPLES, chat_request, lines_of, write_jsonl


def test_dropped_file_completes_through_the_real_state_machine(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    name = fake_stack.drop(EXAMPLES / "chat.jsonl")
    batch = fake_stack.wait_for_outbox(name, timeout=120)
    paths = fake_stack.download_outbox(name, tmp_path)

    parsed = OpenAIBatch.model_validate_json(paths["batch.json"].read_text())
    assert parsed.status == "completed"
    assert parsed.request_counts is not None
    assert (
        parsed.request_counts.total,
        parsed.request_counts.completed,
        parsed.request_counts.failed,
    ) == (20, 20, 0)
    assert parsed.output_file_id and parsed.error_file_id is None
    assert parsed.completed_at and parsed.finalizing_at and parsed.in_progress_at
    assert parsed.usage is not None and parsed.usage.output_tokens > 0

    output = lines_of(paths["output.jsonl"])
    assert sorted(line["custom_id"] for line in output) == sorted(
        f"request-{i}" for i in range(1, 21)
    )
    for line in output:
        assert str(line["id"]).startswith("batch_req_")
        assert line["error"] is None
        ChatCompletion.model_validate(line["response"]["body"])
    assert paths["errors.jsonl"].read_text() == ""

    # The tracker's execution is the real ASL, run by moto to its end.
    sfn = fake_stack.session.client("stepfunctions")
    arn = fake_stack.physical_id("BatchTracker")
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert execution["name"] == batch.id
    assert execution["status"] == "SUCCEEDED"
    # 20 requests at 4 per shard: five shards, each settled once.
    record = fake_stack.stages.batches.get_batch(batch.id)
    assert record is not None and (record.shards_total, record.shards_pending) == (5, 0)


def test_a_bad_line_fails_the_batch_with_its_line_number(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [chat_request("a"), chat_request("b"), '{"custom_id": "c", "body": ', chat_request("d")],
    )
    batch = fake_stack.wait_for_outbox(fake_stack.drop(path), timeout=60)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 3)]
    # Nothing is left behind: no shard objects, no shard messages.
    store = fake_stack.stages.store
    assert store.list_keys(s3keys.shard_prefix(batch.id)) == []
    sqs = fake_stack.session.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=fake_stack.physical_id("ShardQueue"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


def test_a_model_no_worker_serves_is_model_not_found(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "other.jsonl", [chat_request("a", model="gpt-4o")])
    batch = fake_stack.wait_for_outbox(fake_stack.drop(path), timeout=60)
    assert batch.status == "failed"
    assert batch.errors is not None
    assert [(e.code, e.line, e.param) for e in batch.errors.data] == [
        ("model_not_found", 1, "body.model")
    ]


def test_a_request_the_engine_rejects_fails_alone(fake_stack: LocalStack, tmp_path: Path) -> None:
    too_long = " ".join(["word"] * 100)  # the fake engine's context is 64 tokens
    lines = [chat_request(f"ok-{i}") for i in range(5)] + [chat_request("too-long", too_long)]
    name = fake_stack.drop(write_jsonl(tmp_path / "mixed.jsonl", lines))
    batch = fake_stack.wait_for_outbox(name, timeout=60)
    paths = fake_stack.download_outbox(name, tmp_path / "out")
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 1)
    assert batch.output_file_id and batch.error_file_id
    (error_line,) = lines_of(paths["errors.jsonl"])
    assert error_line["custom_id"] == "too-long"
    assert error_line["response"]["status_code"] == 400
    assert error_line["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert len(lines_of(paths["output.jsonl"])) == 5


def test_when_nothing_succeeds_output_file_id_is_null(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    too_long = " ".join(["word"] * 100)
    name = fake_stack.drop(
        write_jsonl(
            tmp_path / "all-bad.jsonl", [chat_request("x", too_long), chat_request("y", too_long)]
        )
    )
    batch = fake_stack.wait_for_outbox(name, timeout=60)
    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.error_file_id is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)


def test_two_uploads_of_the_same_key_are_two_batches_with_their_own_outboxes(
    fake_stack: LocalStack, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "again.jsonl", [chat_request("a")])
    first = fake_stack.wait_for_outbox(fake_stack.drop(path), timeout=60)
    path.write_text(json.dumps(chat_request("b")) + "\n" + json.dumps(chat_request("c")) + "\n")
    fake_stack.drop(path)
    s3 = fake_stack.session.client("s3")
    deadline = time.monotonic() + 30
    while True:  # the second upload's outbox: `again~<8 characters of its batch id>`
        listing = s3.list_objects_v2(Bucket=fake_stack.bucket, Prefix="outbox/again~")
        names = {item["Key"].split("/")[1] for item in listing.get("Contents", [])}
        if names:
            break
        assert time.monotonic() < deadline, "no outbox for the second upload"
        time.sleep(0.1)
    (name,) = names
    second = fake_stack.wait_for_outbox(name, timeout=60)
    assert second.id != first.id and name == f"again~{second.id.removeprefix('batch_')[:8]}"
    assert second.request_counts.total == 2
    kept = fake_stack.outbox_batch("again")  # the first batch's outbox is left as it was
    assert kept is not None and kept.id == first.id and kept.request_counts.total == 1
