"""Uploads are joined off the request path when large: the File stays `uploaded` until the
intake job has joined it, a batch created on it meanwhile waits and then runs, a wrong MD5
ends the File `error` (and its batch `failed`), and parts S3 can copy are joined server-side.
The size an upload was created for bounds its parts as they arrive."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator

import pytest

from batch_core import wiring
from batch_core.batch_params import BatchParams
from batch_core.errors import ConflictError, InvalidRequestError
from batch_core.files import FileService
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request

TENANT = "uploads"


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(FakeEngine(MODEL), shard_size=4, part_size=3) as local:
        yield local


def async_files() -> FileService:
    """The deployment's file service with every upload joined by the intake job."""
    files = wiring.default_stages().files
    files.settings = files.settings.model_copy(update={"inline_join_bytes": 0})
    return files


def data_of(count: int) -> bytes:
    return b"".join(json.dumps(chat_request(f"j{i}")).encode() + b"\n" for i in range(count))


def upload(files: FileService, data: bytes, cuts: list[int]) -> tuple[str, list[str]]:
    created = files.create_upload(
        TENANT, filename="big.jsonl", purpose="batch", size=len(data), mime_type="text/plain"
    )
    edges = [0, *cuts, len(data)]
    parts = [
        files.add_upload_part(TENANT, created.id, data[start:end]).id
        for start, end in itertools.pairwise(edges)
    ]
    return created.id, parts


def wait_file(files: FileService, file_id: str) -> str:
    deadline = time.monotonic() + 30
    while (status := files.get(TENANT, file_id).file.status) == "uploaded":
        assert time.monotonic() < deadline, "the join never finished"
        time.sleep(0.1)
    return status


def wait_batch(stack: LocalStack, batch_id: str) -> str:
    deadline = time.monotonic() + 60
    while (status := stack.stages.batches.get_for(TENANT, batch_id).status) not in {
        "completed",
        "failed",
    }:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def test_a_large_upload_is_joined_by_a_job_and_a_batch_on_it_waits_then_runs(
    stack: LocalStack,
) -> None:
    files = async_files()
    data = data_of(30)
    upload_id, parts = upload(files, data, [700, 2100])
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    done = files.complete_upload(TENANT, upload_id, part_ids=parts, md5=md5)
    assert done.file is not None and done.file.status == "uploaded"
    batch = stack.stages.batches.create_batch(
        TENANT,
        BatchParams(endpoint="/v1/chat/completions", completion_window="24h"),
        input_file_id=done.file.id,
    )
    assert wait_file(files, done.file.id) == "processed"
    assert files.content(TENANT, done.file.id).data == data
    assert wait_batch(stack, batch.id) == "completed"
    assert stack.stages.batches.get_for(TENANT, batch.id).request_completed == 30


def test_a_wrong_md5_ends_the_file_in_error_and_fails_its_batch(stack: LocalStack) -> None:
    files = async_files()
    upload_id, parts = upload(files, data_of(5), [100])
    done = files.complete_upload(TENANT, upload_id, part_ids=parts, md5="0" * 32)
    assert done.file is not None
    batch = stack.stages.batches.create_batch(
        TENANT,
        BatchParams(endpoint="/v1/chat/completions", completion_window="24h"),
        input_file_id=done.file.id,
    )
    assert wait_file(files, done.file.id) == "error"
    record = files.get(TENANT, done.file.id)
    assert "MD5" in (record.file.status_details or "")
    assert wait_batch(stack, batch.id) == "failed"
    failed = stack.stages.batches.get_for(TENANT, batch.id)
    assert failed.errors is not None and failed.errors[0].code == "invalid_input_file"
    with pytest.raises(InvalidRequestError, match="could not be assembled"):
        stack.stages.batches.create_batch(
            TENANT,
            BatchParams(endpoint="/v1/chat/completions", completion_window="24h"),
            input_file_id=done.file.id,
        )


def test_parts_s3_can_copy_are_joined_server_side(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = async_files()
    line = json.dumps(chat_request("x", "y" * 1000)).encode() + b"\n"
    data = b"".join(line.replace(b'"x"', f'"s{i}"'.encode()) for i in range(11_000))
    assert len(data) > 10 * 1024**2
    streamed: list[str] = []
    original = files.store.stream

    def recording(key: str, *args: object, **kwargs: object) -> Iterator[bytes]:
        streamed.append(key)
        return original(key)

    monkeypatch.setattr(files.store, "stream", recording)
    upload_id, parts = upload(files, data, [5 * 1024**2 + 7])
    done = files.complete_upload(TENANT, upload_id, part_ids=parts)
    assert done.file is not None
    assert wait_file(files, done.file.id) == "processed"
    assert not [key for key in streamed if key.startswith("uploads/")]  # joined by S3 itself
    assert stack.stages.store.read(files.get(TENANT, done.file.id).s3_key) == data


def test_parts_cannot_exceed_the_size_the_upload_was_created_for(stack: LocalStack) -> None:
    files = wiring.default_stages().files
    created = files.create_upload(
        TENANT, filename="f.jsonl", purpose="batch", size=10, mime_type="text/plain"
    )
    files.add_upload_part(TENANT, created.id, b"123456")
    with pytest.raises(ConflictError, match="past the 10 bytes"):
        files.add_upload_part(TENANT, created.id, b"x" * 1024**2)
    files.add_upload_part(TENANT, created.id, b"7890")  # exactly the rest still fits
    with pytest.raises(ConflictError, match="past the 10 bytes"):
        files.add_upload_part(TENANT, created.id, b"!")


def test_unknown_part_ids_are_not_echoed_back_whole(stack: LocalStack) -> None:
    files = wiring.default_stages().files
    created = files.create_upload(
        TENANT, filename="f.jsonl", purpose="batch", size=10, mime_type="text/plain"
    )
    with pytest.raises(ConflictError) as excinfo:
        files.complete_upload(TENANT, created.id, part_ids=["p" * 10_000] * 500)
    assert len(str(excinfo.value)) < 400 and "497 more" in str(excinfo.value)


@pytest.mark.parametrize("name", ["a\r\nSet-Cookie: x=1.jsonl", "x" * 256 + ".jsonl", "tab\t"])
def test_filenames_that_could_break_a_header_or_an_item_are_refused(
    stack: LocalStack, name: str
) -> None:
    files = wiring.default_stages().files
    with pytest.raises(InvalidRequestError) as excinfo:
        files.create(TENANT, filename=name, purpose="batch", data=b"{}\n")
    assert excinfo.value.param == "filename"
    with pytest.raises(InvalidRequestError):
        files.create_upload(TENANT, filename=name, purpose="batch", size=3, mime_type="x")
