"""Hostile input on the local stack: poison lines end as errors, never as a stuck batch or a
dead worker, and the next tenant's batch still completes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core import s3keys
from batch_core.messaging import ShardTask
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, drop_requests, lines_of

DEPTHS = (62, 63, 64, 199, 200, 254, 255, 900, 1000, 1024, 1025, 5000)


def poison_lines() -> list[bytes]:
    """Every depth boundary, huge numbers, invalid UTF-8 in each field, NUL bytes."""
    good = json.dumps(chat_request("x")).encode()
    lines: list[bytes] = []
    for depth in DEPTHS:
        value = b"[" * depth + b"]" * depth
        lines.append(
            good.replace(b'"x"', f'"deep{depth}"'.encode(), 1)[:-2]
            + b', "metadata": '
            + value
            + b"}}"
        )
    for number in (b"9223372036854775808", b"18446744073709551616", b"1" + b"0" * 40, b"9" * 4301):
        lines.append(
            good.replace(b'"x"', b'"num' + number[:5] + b'"', 1).replace(
                b'"max_tokens": 8', b'"max_tokens": ' + number
            )
        )
    for index, field in enumerate((b'"custom_id"', b'"model"', b'"content"', b'"role"')):
        lines.append(
            good.replace(b'"x"', f'"utf{index}"'.encode(), 1).replace(
                field, field[:-1] + b'\xff\xfe"', 1
            )
        )
    lines.append(good.replace(b'"x"', b'"nul"', 1).replace(b"Say hello.", b"Say\x00hello."))
    lines.append(good.replace(b'"x"', b'"escaped-nul"', 1).replace(b"Say hello.", b"Say\\u0000"))
    return lines  # fmt: skip


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(FakeEngine(MODEL), shard_size=4, part_size=3) as local:
        yield local


def test_a_poison_file_fails_with_every_bad_line_named_and_the_next_batch_runs(
    stack: LocalStack, tmp_path: Path
) -> None:
    poison = poison_lines()
    good = [json.dumps(chat_request(f"ok{i}")).encode() for i in range(3)]
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b"\n".join(good + poison) + b"\n")
    final = stack.wait_for_outbox(stack.drop(path), timeout=60)
    assert final.status == "failed"
    assert final.errors is not None
    errors = {error.line: error.code for error in final.errors.data or []}
    # Depths are the line's own two levels plus the metadata value's.
    expected_deep = {4 + i for i, depth in enumerate(DEPTHS) if depth + 2 > 64}
    assert {line for line, code in errors.items() if code == "json_too_deep"} == expected_deep
    numbers = {line for line, code in errors.items() if code == "number_out_of_range"}
    assert numbers == set(range(16, 20))
    assert all(errors.get(line) == "invalid_encoding" for line in range(20, 24))
    assert errors.get(24) == "invalid_json_line"  # a raw control character in a string
    assert 25 not in errors and 4 not in errors  # an escaped NUL is text; depth 64 is allowed

    # Workers and intake are untouched: another tenant's ordinary batch completes.
    after = stack.wait_for_outbox(drop_requests(stack, tmp_path, 5, "after"), timeout=60)
    assert after.status == "completed" and after.request_counts.completed == 5
    assert stack.handler_errors == []


def test_skip_mode_runs_around_poison_lines(stack: LocalStack, tmp_path: Path) -> None:
    poison = poison_lines()
    good = [json.dumps(chat_request(f"ok{i}")).encode() for i in range(6)]
    path = tmp_path / "skip.jsonl"
    path.write_bytes(b"\n".join(good[:3] + poison + good[3:]) + b"\n")
    name = stack.drop(path, metadata={"invalid-lines": "skip"})
    final = stack.wait_for_outbox(name, timeout=60)
    assert final.status == "completed"
    paths = stack.download_outbox(name, tmp_path / "out")
    output = lines_of(paths["output.jsonl"])
    assert sorted(line["custom_id"] for line in output) == sorted(
        [f"ok{i}" for i in range(6)] + ["deep62", "escaped-nul"]  # the poison that is valid
    )
    rejected = lines_of(paths["errors.jsonl"])
    assert len(rejected) == len(poison) - 2
    assert final.request_counts.failed == len(rejected)
    assert stack.handler_errors == []


def _damage(stack: LocalStack, batch_id: str, index: int, replace: dict[int, bytes]) -> None:
    """Overwrite lines of a stored shard: data at rest can be damaged, whatever intake wrote."""
    key = s3keys.shard_key(batch_id, index)
    lines = stack.stages.store.read(key).splitlines()
    for number, raw in replace.items():
        lines[number] = raw
    stack.stages.store.put(key, b"\n".join(lines) + b"\n")


def _wait_in_progress(stack: LocalStack, name: str) -> str:
    deadline = time.monotonic() + 30
    while (batch := stack.outbox_batch(name)) is None or batch.status != "in_progress":
        assert time.monotonic() < deadline, "intake did not finish"
        time.sleep(0.05)
    return batch.id


def test_an_unreadable_shard_line_is_its_own_error_line_and_the_worker_stays_up(
    tmp_path: Path,
) -> None:
    with LocalStack(FakeEngine(MODEL), worker_count=0, shard_size=4, part_size=3) as stack:
        name = drop_requests(stack, tmp_path, 8, "damaged")
        batch_id = _wait_in_progress(stack, name)
        deep = b'{"line":2,"url":"/v1/chat/completions","request":{"custom_id":"r1","body":{'
        deep += b'"model":"demo-model","messages":[],"metadata":' + b"[" * 500 + b"]" * 500
        _damage(stack, batch_id, 0, {1: deep + b"}}}", 2: b"\xff\xfe\x00 not a line"})
        worker = stack.start_worker()
        final = stack.wait_for_outbox(name, timeout=60)
        assert final.status == "completed"
        counts = final.request_counts
        assert (counts.total, counts.completed, counts.failed) == (8, 6, 2)
        paths = stack.download_outbox(name, tmp_path / "out")
        errors = lines_of(paths["errors.jsonl"])
        assert sorted(str(line["custom_id"]) for line in errors) == ["None", "r1"]
        assert {line["response"]["body"]["error"]["code"] for line in errors} == {
            "unreadable_request"
        }
        # The same worker takes the next batch.
        after = stack.wait_for_outbox(drop_requests(stack, tmp_path, 3, "next"), timeout=60)
        assert after.status == "completed"
        assert not worker.stop.is_set() and stack.handler_errors == []


def test_the_dead_shard_path_and_the_ending_read_damaged_shards(tmp_path: Path) -> None:
    with LocalStack(None, served_models=[MODEL], shard_size=4, part_size=3) as stack:
        name = drop_requests(stack, tmp_path, 8, "dead")
        batch_id = _wait_in_progress(stack, name)
        deep = b'{"line":1,"url":"/v1/chat/completions","request":{"custom_id":"r0","body":'
        _damage(stack, batch_id, 0, {0: deep + b"[" * 300 + b"]" * 300 + b"}}"})
        _damage(stack, batch_id, 1, {3: b"{not json"})
        assert stack.stages.ending.fail_shard(ShardTask(batch_id=batch_id, shard_index=0))
        stack.stages.ending.cancel(batch_id)  # the ending closes shard 1 with batch_cancelled lines
        final = stack.wait_for_outbox(name, timeout=60)
        assert final.status == "cancelled"
        counts = final.request_counts
        assert (counts.total, counts.completed, counts.failed) == (8, 0, 8)
        paths = stack.download_outbox(name, tmp_path / "out")
        errors = lines_of(paths["errors.jsonl"])
        assert len(errors) == 8
        codes = sorted(
            line["error"]["code"] if line["error"] else line["response"]["body"]["error"]["code"]
            for line in errors
        )
        assert codes == ["batch_cancelled"] * 3 + ["shard_failed"] * 3 + ["unreadable_request"] * 2
        assert stack.handler_errors == []


def test_a_message_that_names_no_shard_is_dropped_and_the_worker_stays_up(
    stack: LocalStack, tmp_path: Path
) -> None:
    sqs = stack.session.client("sqs")
    sqs.send_message(QueueUrl=stack.physical_id("ShardQueue"), MessageBody='{"nope": [[[[')
    final = stack.wait_for_outbox(drop_requests(stack, tmp_path, 3, "after"), timeout=60)
    assert final.status == "completed"
    assert stack.handler_errors == []
    assert all(not worker.stop.is_set() for worker in stack.workers)


def test_the_worker_refuses_an_internal_media_url_that_reached_a_shard(tmp_path: Path) -> None:
    with LocalStack(FakeEngine(MODEL), worker_count=0, shard_size=4, part_size=3) as stack:
        name = drop_requests(stack, tmp_path, 4, "media")
        batch_id = _wait_in_progress(stack, name)
        part = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/"}}
        request = chat_request("r3")
        request["body"]["messages"][0]["content"] = [part]
        shard_line = {"line": 4, "url": "/v1/chat/completions", "request": request}
        _damage(stack, batch_id, 0, {3: json.dumps(shard_line).encode()})
        stack.start_worker()
        final = stack.wait_for_outbox(name, timeout=60)
        assert (final.request_counts.completed, final.request_counts.failed) == (3, 1)
        (error,) = lines_of(stack.download_outbox(name, tmp_path / "out")["errors.jsonl"])
        assert error["custom_id"] == "r3"
        assert error["response"]["body"]["error"]["code"] == "media_url_refused"
