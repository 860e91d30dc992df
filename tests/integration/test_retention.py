"""Retention as OpenAI has it: every File carries `expires_at` (30 days unless the request's
`expires_after` / `output_expires_after` says otherwise, within one hour to 30 days); past
it the File answers 404 at once, and the expiry sweep deletes its bytes and its record."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch, FileObject, Upload

from batch_core import wiring
from batch_core.retention import DEFAULT_FILE_RETENTION_SECONDS
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from handlers import expire
from tests.conftest import MODEL, chat_request, expire_file_now, load_event, serve_api
from tests.integration.test_handlers import CONTEXT

KEY = "sk-test-keep-0123456789"
HOUR = 3600
LINES = b"".join(json.dumps(chat_request(f"k{i}")).encode() + b"\n" for i in range(3))


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "keeper"}) as running:
        yield running


@pytest.fixture
def client(local_api: tuple[LocalStack, ApiServer]) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)


def strict_file(raw: Any) -> FileObject:
    return FileObject.model_validate(raw.http_response.json())


def stored(stack: LocalStack, key: str) -> bool:
    listed = stack.session.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=key)
    return any(entry["Key"] == key for entry in listed.get("Contents", []))


def test_every_file_expires_after_30_days_by_default(client: openai.OpenAI) -> None:
    created = strict_file(
        client.files.with_raw_response.create(file=("d.jsonl", LINES), purpose="batch")
    )
    assert created.expires_at == created.created_at + DEFAULT_FILE_RETENTION_SECONDS
    assert client.files.retrieve(created.id).expires_at == created.expires_at


def test_expires_after_anchor_alone_keeps_the_default(client: openai.OpenAI) -> None:
    created = client.files.create(
        file=("a.jsonl", LINES),
        purpose="batch",
        expires_after={"anchor": "created_at"},  # type: ignore[typeddict-item]
    )
    assert created.expires_at == created.created_at + DEFAULT_FILE_RETENTION_SECONDS


def test_expires_after_sets_a_files_expiry(client: openai.OpenAI) -> None:
    created = strict_file(
        client.files.with_raw_response.create(
            file=("h.jsonl", LINES),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 2 * HOUR},
        )
    )
    assert created.expires_at == created.created_at + 2 * HOUR


def test_an_uploads_expires_after_is_its_files(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=len(LINES),
        filename="u.jsonl",
        mime_type="application/jsonl",
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 5 * HOUR},
    )
    part = client.uploads.parts.create(upload.id, data=LINES)
    raw = client.uploads.with_raw_response.complete(upload.id, part_ids=[part.id])
    completed = Upload.model_validate(raw.http_response.json())
    assert completed.file is not None
    assert completed.file.expires_at == completed.file.created_at + 5 * HOUR
    assert client.files.retrieve(completed.file.id).expires_at == completed.file.expires_at


@pytest.mark.parametrize(
    ("policy", "param"),
    [
        ({"anchor": "created_at", "seconds": HOUR - 1}, "expires_after[seconds]"),
        ({"anchor": "created_at", "seconds": 30 * 24 * HOUR + 1}, "expires_after[seconds]"),
        ({"anchor": "last_active_at", "seconds": HOUR}, "expires_after[anchor]"),
    ],
)
def test_a_file_expiry_out_of_openais_bounds_is_a_400(
    client: openai.OpenAI, policy: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=("b.jsonl", LINES), purpose="batch", expires_after=policy)  # type: ignore[arg-type]
    assert excinfo.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize(
    "policy", [{"anchor": "created_at", "seconds": 60}, {"anchor": "created_at", "seconds": "x"}]
)
def test_an_output_expiry_out_of_bounds_is_a_400(
    client: openai.OpenAI, policy: dict[str, Any]
) -> None:
    file_id = client.files.create(file=("o.jsonl", LINES), purpose="batch").id
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after=policy,  # type: ignore[arg-type]
        )
    assert excinfo.value.body["param"] == "output_expires_after.seconds"  # type: ignore[index]


def test_output_expires_after_sets_the_result_files_expiry(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("r.jsonl", LINES), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3 * HOUR},
    )
    deadline = time.monotonic() + 60
    while batch.status not in {"completed", "failed"}:
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.2)
        batch = Batch.model_validate(
            client.batches.with_raw_response.retrieve(batch.id).http_response.json()
        )
    assert batch.status == "completed" and batch.output_file_id
    result = client.files.retrieve(batch.output_file_id)
    assert result.expires_at == result.created_at + 3 * HOUR


def test_an_expired_file_is_gone_at_once_and_its_bytes_deleted_by_the_sweep(
    client: openai.OpenAI, local_api: tuple[LocalStack, ApiServer]
) -> None:
    stack = local_api[0]
    kept = client.files.create(file=("kept.jsonl", LINES), purpose="batch").id
    gone = client.files.create(file=("gone.jsonl", LINES), purpose="batch").id
    key = wiring.default_stages().files.repository.files.get_file(gone)
    assert key is not None and stored(stack, key.s3_key)
    expire_file_now(stack, gone)

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(gone)
    with pytest.raises(openai.NotFoundError):
        client.files.content(gone)
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.batches.create(
            input_file_id=gone, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert excinfo.value.body["param"] == "input_file_id"  # type: ignore[index]
    listed = {f.id for f in client.files.list()}
    assert kept in listed and gone not in listed

    result = expire.handler(load_event("expire_schedule.json"), CONTEXT)
    assert gone in result["deleted_files"] and kept not in result["deleted_files"]
    assert not stored(stack, key.s3_key)
    assert wiring.default_stages().files.repository.files.get_file(gone) is None
    assert client.files.retrieve(kept).id == kept
    # The sweep found it through the index: the next run has nothing more to delete.
    assert gone not in expire.handler(load_event("expire_schedule.json"), CONTEXT)["deleted_files"]
