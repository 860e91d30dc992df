"""The HTTP API through the local server, driven by the real openai SDK.

Every object is checked against the SDK's own pydantic types from the raw JSON (the SDK
itself builds its objects without validating them).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai.types import Batch, FileDeleted, FileObject, Upload
from openai.types.uploads import UploadPart
from pydantic import BaseModel

from batch_core import wiring
from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, empty_buckets, serve_api

KEY = "sk-test-acme-0123456789"
OTHER_KEY = "sk-test-other-0123456789"
LIMITED_KEY = "sk-test-limited-0123456789"  # a tenant of its own, for its request rate
Model = TypeVar("Model", bound=BaseModel)


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    keys = {KEY: "acme", OTHER_KEY: "other", LIMITED_KEY: "limited"}
    with serve_api(engine, keys, shard_size=4, part_size=2) as running:
        yield running


@pytest.fixture
def client(local_api: tuple[LocalStack, ApiServer]) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)


@pytest.fixture
def other(local_api: tuple[LocalStack, ApiServer]) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_api[1].base_url, api_key=OTHER_KEY, max_retries=0)


def strict(raw: Any, model: type[Model]) -> Model:
    """The response's JSON, validated by the SDK's type."""
    return model.model_validate(raw.http_response.json())


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(client: openai.OpenAI, lines: list[dict[str, Any]], name: str = "in.jsonl") -> str:
    raw = client.files.with_raw_response.create(file=(name, jsonl(lines)), purpose="batch")
    return strict(raw, FileObject).id


def big_file(directory: Path, *, lines: int, prompt_chars: int) -> tuple[Path, bytes]:
    """A JSONL file of `lines` chat requests whose prompt is `prompt_chars` long."""
    line = chat_request("x", "y" * prompt_chars)
    data = jsonl([{**line, "custom_id": f"big{i}"} for i in range(lines)])
    path = directory / "big.jsonl"
    path.write_bytes(data)
    return path, data


def wait_for(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = strict(client.batches.with_raw_response.retrieve(batch_id), Batch)
        if batch.status in {"completed", "failed", "expired", "cancelled"}:
            return batch
        assert time.monotonic() < deadline, f"{batch_id} still {batch.status}"
        time.sleep(0.2)


def error_of(excinfo: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = excinfo.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


# -- files and uploads -----------------------------------------------------------------


def test_files_create_list_retrieve_content_delete(client: openai.OpenAI) -> None:
    data = jsonl([chat_request("a"), chat_request("b")])
    created = strict(
        client.files.with_raw_response.create(file=("two.jsonl", data), purpose="batch"),
        FileObject,
    )
    assert (created.bytes, created.filename, created.purpose) == (len(data), "two.jsonl", "batch")
    assert strict(client.files.with_raw_response.retrieve(created.id), FileObject) == created
    listed = [f.id for f in client.files.list(purpose="batch")]
    assert created.id in listed
    assert client.files.content(created.id).read() == data

    deleted = strict(client.files.with_raw_response.delete(created.id), FileDeleted)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.files.retrieve(created.id)
    assert error_of(excinfo)["param"] == "file_id"
    assert created.id not in [f.id for f in client.files.list()]


def test_files_list_pages_in_order(client: openai.OpenAI) -> None:
    ids = [upload(client, [chat_request("x")], f"p{i}.jsonl") for i in range(3)]
    first = client.files.list(limit=2, order="asc", extra_query={"after": ids[0]})
    assert [f.id for f in first.data] == ids[1:3]
    newest = client.files.list(limit=2)
    assert newest.has_more
    assert [f.id for f in newest.data] == [ids[2], ids[1]]


def test_large_content_is_served_by_redirect_to_a_presigned_url(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = jsonl([chat_request(f"r{i}") for i in range(50)])
    file_id = upload(client, [chat_request(f"r{i}") for i in range(50)])
    files = wiring.default_stages().files
    monkeypatch.setattr(
        files, "settings", files.settings.model_copy(update={"max_inline_content_bytes": 100})
    )
    raw = httpx.get(
        f"{client.base_url}files/{file_id}/content",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert raw.status_code == 302 and "X-Amz-Signature" in raw.headers["location"]
    assert client.files.content(file_id).read() == data  # the SDK follows the redirect


def test_uploads_round_trip_joins_parts_in_order(client: openai.OpenAI) -> None:
    data = jsonl([chat_request(f"u{i}") for i in range(40)])
    pieces = [data[:1000], data[1000:2500], data[2500:]]
    created = strict(
        client.uploads.with_raw_response.create(
            bytes=len(data), filename="big.jsonl", mime_type="application/jsonl", purpose="batch"
        ),
        Upload,
    )
    assert created.status == "pending"
    parts = [
        strict(client.uploads.parts.with_raw_response.create(created.id, data=piece), UploadPart)
        for piece in pieces
    ]
    assert all(p.upload_id == created.id for p in parts)
    with pytest.raises(openai.ConflictError) as excinfo:  # wrong MD5: nothing is created
        client.uploads.complete(created.id, part_ids=[p.id for p in parts], md5="0" * 32)
    assert error_of(excinfo)["param"] == "md5"
    done = strict(
        client.uploads.with_raw_response.complete(
            created.id,
            part_ids=[p.id for p in parts],
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        ),
        Upload,
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == len(data)
    assert client.files.content(done.file.id).read() == data

    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(created.id, data=b"more")


def test_an_upload_checks_the_size_and_can_be_cancelled(client: openai.OpenAI) -> None:
    created = client.uploads.create(
        bytes=10, filename="f.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    part = client.uploads.parts.create(created.id, data=b"12345")
    with pytest.raises(openai.ConflictError) as excinfo:
        client.uploads.complete(created.id, part_ids=[part.id])
    assert error_of(excinfo)["param"] == "part_ids"
    cancelled = strict(client.uploads.with_raw_response.cancel(created.id), Upload)
    assert cancelled.status == "cancelled"


def test_a_body_over_the_lambda_limit_gets_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as excinfo:
        client.files.create(
            file=("huge.jsonl", io.BytesIO(b"x" * (7 * 1024 * 1024))), purpose="batch"
        )
    assert excinfo.value.status_code == 413
    assert error_of(excinfo)["code"] == "payload_too_large"


# -- batches ---------------------------------------------------------------------------


def test_a_batch_runs_to_completion_and_its_output_downloads(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request(f"r{i}") for i in range(6)])
    created = strict(
        client.batches.with_raw_response.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"project": "api-test"},
        ),
        Batch,
    )
    assert created.status == "validating" and created.metadata == {"project": "api-test"}
    final = wait_for(client, created.id)
    assert final.status == "completed"
    assert final.request_counts is not None and final.request_counts.completed == 6
    assert final.output_file_id and final.error_file_id is None
    output_file = strict(client.files.with_raw_response.retrieve(final.output_file_id), FileObject)
    assert output_file.purpose == "batch_output"
    lines = [
        json.loads(line) for line in client.files.content(final.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in lines) == [f"r{i}" for i in range(6)]
    assert all(line["response"]["status_code"] == 200 for line in lines)


def test_batches_list_pages_newest_first(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request("only")])
    ids = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    page = client.batches.list(limit=2)
    raw = client.batches.with_raw_response.list(limit=2).http_response.json()
    assert raw["object"] == "list" and raw["has_more"] is True
    assert raw["first_id"] == ids[2] and raw["last_id"] == ids[1]
    for item in raw["data"]:
        Batch.model_validate(item)
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    everything = [b.id for b in client.batches.list(limit=2)]  # the SDK follows `after`
    assert everything[:3] == ids[::-1]
    assert len(everything) == len(set(everything))


def test_an_idempotency_key_makes_a_retried_create_return_the_same_batch(
    client: openai.OpenAI,
) -> None:
    file_id = upload(client, [chat_request("i")])
    first, second = (
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_headers={"Idempotency-Key": "create-once-42"},
        )
        for _ in range(2)
    )
    assert first.id == second.id

    with pytest.raises(openai.BadRequestError) as excinfo:  # the same key, other parameters
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"other": "params"},
            extra_headers={"Idempotency-Key": "create-once-42"},
        )
    error = error_of(excinfo)
    assert (error["code"], error["param"]) == ("idempotency_key_reused", "Idempotency-Key")


def test_cancel_keeps_finished_results(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request(f"c{i}") for i in range(400)])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = strict(client.batches.with_raw_response.cancel(batch.id), Batch)
    assert cancelling.status in {"cancelling", "cancelled"}
    final = wait_for(client, batch.id)
    assert final.status == "cancelled"
    counts = final.request_counts
    assert counts is not None and counts.completed + counts.failed == 400
    assert counts.failed > 0
    with pytest.raises(openai.ConflictError) as excinfo:
        _cancel_completed(client)
    assert "completed" in error_of(excinfo)["message"]


def _cancel_completed(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request("done")])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_for(client, batch.id).status == "completed"
    client.batches.cancel(batch.id)


def test_retry_creates_a_child_of_exactly_the_failed_lines(
    client: openai.OpenAI, local_api: tuple[LocalStack, ApiServer]
) -> None:
    long = "word " * 100  # over the fake engine's 64-token context: a 400 line
    lines = [chat_request(f"ok{i}") for i in range(5)] + [
        chat_request(f"bad{i}", long) for i in range(3)
    ]
    file_id = upload(client, lines)
    parent = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, parent.id)
    assert done.request_counts is not None and done.request_counts.failed == 3
    raw = client.post(f"/batches/{parent.id}/retry", cast_to=httpx.Response, body={})
    child = Batch.model_validate(raw.json())
    assert child.metadata == {"retry_of": parent.id}
    assert client.batches.retrieve(parent.id).metadata == {"retried_by": child.id}
    again = client.post(f"/batches/{parent.id}/retry", cast_to=httpx.Response, body={})
    assert again.json()["id"] == child.id  # retrying twice: the same child
    deadline = time.monotonic() + 30  # the child's input is written by an intake job
    while client.files.retrieve(child.input_file_id).status == "uploaded":
        assert time.monotonic() < deadline, "the retry's input was never built"
        time.sleep(0.1)
    child_input = client.files.content(child.input_file_id).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in child_input) == [
        "bad0",
        "bad1",
        "bad2",
    ]
    assert [json.loads(line) for line in child_input] == [
        line for line in lines if line["custom_id"].startswith("bad")
    ]
    finished = wait_for(client, child.id)
    assert finished.request_counts is not None and finished.request_counts.total == 3


def test_partial_results_are_readable_while_the_batch_runs(client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request(f"p{i}") for i in range(300)])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while True:
        parts = client.get(f"/batches/{batch.id}/result_parts", cast_to=httpx.Response).json()
        if parts["data"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    seen = []
    for part in parts["data"]:
        assert part["kind"] == "output"
        seen += [json.loads(line)["custom_id"] for line in httpx.get(part["url"]).text.splitlines()]
    assert seen and set(seen) <= {f"p{i}" for i in range(300)}
    client.batches.cancel(batch.id)


# -- errors and tenants ----------------------------------------------------------------


def test_a_missing_or_wrong_key_is_401_in_openai_shape(
    local_api: tuple[LocalStack, ApiServer],
) -> None:
    response = httpx.get(f"{local_api[1].base_url}/batches")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=local_api[1].base_url, api_key="sk-wrong-key-123", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as excinfo:
        wrong.batches.list()
    error = error_of(excinfo)
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"


@pytest.fixture
def own_clock(local_api: tuple[LocalStack, ApiServer]) -> Iterator[None]:
    """For a test that runs the limiter on a clock of its own: the buckets it leaves in that
    clock's future would refuse the module's later tests, so they go after it."""
    yield
    empty_buckets(local_api[0], "limited", "other")


@pytest.mark.usefixtures("own_clock")
def test_a_tenant_over_its_rate_gets_a_429_the_sdk_waits_out(
    local_api: tuple[LocalStack, ApiServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = wiring.default_rate_limiter()  # the one the server admits requests with
    # One write a second and a bucket of one second: four reads, or one write.
    monkeypatch.setattr(limiter, "per_second", 1)
    monkeypatch.setattr(limiter, "burst_seconds", 1)
    # The bucket's clock stands still (past what earlier requests took) until a test thaws
    # it: no answer depends on how fast this machine sends the requests.
    clock: dict[str, float] = {
        "at": float(int(time.time()) + 60),
        "thawed_at": 0.0,
        "thaw_on_429": 0.0,
    }
    monkeypatch.setattr(
        limiter,
        "_clock",
        lambda: clock["at"] + (time.time() - clock["thawed_at"] if clock["thawed_at"] else 0),
    )
    statuses: list[int] = []
    waits: list[str] = []  # each 429's retry-after-ms

    def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 429:
            waits.append(response.headers["retry-after-ms"])
            if clock["thaw_on_429"]:  # from the refusal on, the bucket's time runs
                clock["thawed_at"] = time.time()

    def limited(retries: int) -> openai.OpenAI:
        counting = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
        return openai.OpenAI(
            base_url=local_api[1].base_url,
            api_key=LIMITED_KEY,
            max_retries=retries,
            http_client=counting,
        )

    impatient = limited(0)
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(10):
            impatient.files.list()
    assert statuses == [200] * 4 + [429]  # the bucket's four reads
    error = refused.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after-ms"] == "250"  # a read's worth
    assert error.response.headers["retry-after"] == "1"

    # A write needs the whole bucket: refused with a second to wait; the SDK waits what
    # retry-after-ms says (rather than its own shorter backoff) and succeeds. The bucket's
    # clock runs from that refusal on, from where it stood.
    statuses.clear()
    waits.clear()
    clock["thaw_on_429"] = 1.0
    patient = limited(2)
    started = time.monotonic()
    created = patient.files.create(file=("after.jsonl", b"{}\n"), purpose="batch")
    assert created.bytes == 3
    assert statuses == [429, 200]
    assert waits == ["1000"]
    assert time.monotonic() - started >= 1.0
    # Another tenant has its own bucket.
    assert openai.OpenAI(
        base_url=local_api[1].base_url, api_key=OTHER_KEY, max_retries=0
    ).files.list()


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/images"}, "endpoint"),
        ({"completion_window": "30d"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"input_file_id": ""}, "input_file_id"),
    ],
)
def test_bad_batch_parameters_are_400_with_param(
    client: openai.OpenAI, changes: dict[str, Any], param: str
) -> None:
    file_id = upload(client, [chat_request("e")])
    params: dict[str, Any] = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **changes,
    }
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.batches.create(**params)
    assert error_of(excinfo)["param"] == param


def test_an_unknown_file_or_batch_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert error_of(excinfo)["param"] == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")


def test_tenants_see_only_their_own_objects(client: openai.OpenAI, other: openai.OpenAI) -> None:
    file_id = upload(client, [chat_request("t")])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    calls = [
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
        lambda: other.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
        lambda: other.post(f"/batches/{batch.id}/retry", cast_to=httpx.Response, body={}),
        lambda: other.get(f"/batches/{batch.id}/results", cast_to=httpx.Response),
        lambda: other.get(
            f"/batches/{batch.id}/results",
            cast_to=httpx.Response,
            options={"params": {"custom_id": "a"}},
        ),
        lambda: other.get(f"/batches/{batch.id}/result_parts", cast_to=httpx.Response),
    ]
    upload_id = client.uploads.create(
        bytes=3, filename="u.jsonl", mime_type="application/jsonl", purpose="batch"
    ).id
    part_id = client.uploads.parts.create(upload_id, data=b"abc").id
    calls += [
        lambda: other.uploads.parts.create(upload_id, data=b"abc"),
        lambda: other.uploads.complete(upload_id, part_ids=[part_id]),
        lambda: other.uploads.cancel(upload_id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError) as excinfo:  # a cursor must be one's own
        other.files.list(extra_query={"after": file_id})
    assert error_of(excinfo)["param"] == "after"
    assert client.uploads.complete(upload_id, part_ids=[part_id]).status == "completed"
    other_file = upload(other, [chat_request("mine")])
    assert [f.id for f in other.files.list()] == [other_file]
    assert other.batches.list().data == []
    assert file_id in [f.id for f in client.files.list()]
    assert other_file not in [f.id for f in client.files.list()]
    assert client.files.retrieve(file_id).id == file_id  # the owner still sees it


def test_the_openapi_document_is_served_and_checked_in(
    local_api: tuple[LocalStack, ApiServer],
) -> None:
    served = httpx.get(local_api[1].base_url.removesuffix("/v1") + "/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert {"/v1/files", "/v1/batches", "/v1/uploads", "/v1/batches/{batch_id}/cancel"} <= set(
        document["paths"]
    )
    checked_in = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert checked_in == document, "run `make openapi` and commit docs/openapi.json"


# -- batchctl against the local server ------------------------------------------------


def test_batchctl_submit_list_status_results_retry_and_keys(
    local_api: tuple[LocalStack, ApiServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    connection = ["--base-url", local_api[1].base_url, "--api-key", KEY]
    source = tmp_path / "mixed.jsonl"
    lines = [chat_request(f"ok{i}") for i in range(3)] + [chat_request("bad", "word " * 100)]
    source.write_bytes(jsonl(lines))
    out = tmp_path / "out"
    assert main(["submit", str(source), "--wait", "--out", str(out), *connection]) == 0
    printed = capsys.readouterr().out
    batch_id = printed.split()[0]
    assert batch_id.startswith("batch_") and "4/4 done, 1 failed" in printed
    assert len((out / "output.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "errors.jsonl").read_text())["custom_id"] == "bad"

    assert main(["list", *connection]) == 0
    assert batch_id in capsys.readouterr().out
    assert main(["status", batch_id, *connection]) == 0
    assert Batch.model_validate_json(capsys.readouterr().out).status == "completed"
    again = tmp_path / "again"
    assert main(["results", batch_id, "--out", str(again), *connection]) == 0
    assert (again / "output.jsonl").read_bytes() == (out / "output.jsonl").read_bytes()
    assert main(["results", batch_id, "--partial", "--out", str(again), *connection]) == 0
    assert "3 results and 1 errors so far" in capsys.readouterr().out

    assert main(["retry", batch_id, "--wait", *connection]) == 0
    child_id = capsys.readouterr().out.split()[0]
    client = openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY)
    child = client.batches.retrieve(child_id)
    assert child.request_counts is not None and child.request_counts.total == 1

    assert main(["keys", "create", "--tenant", "newcomer"]) == 0
    key = capsys.readouterr().out.strip()
    newcomer = openai.OpenAI(base_url=local_api[1].base_url, api_key=key, max_retries=0)
    assert newcomer.batches.list().data == []
    assert main(["keys", "revoke", key]) == 0
    with pytest.raises(openai.AuthenticationError):
        newcomer.batches.list()
    assert main(["keys", "revoke", key]) == 1


def test_batchctl_reports_api_errors_without_a_trace(
    local_api: tuple[LocalStack, ApiServer], capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    connection = ["--base-url", local_api[1].base_url, "--api-key", KEY]
    assert main(["status", "batch_missing", *connection]) == 2
    assert "404" in capsys.readouterr().err
    assert main(["cancel", "batch_missing", "--base-url", local_api[1].base_url]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_the_sdk_uploads_a_large_file_in_parts_and_reads_it_back(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """Over what one request carries: the SDK's chunked upload, then content by redirect."""
    path, data = big_file(tmp_path, lines=6500, prompt_chars=1000)
    assert len(data) > 6 * 1024 * 1024
    done = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=4 * 1024 * 1024
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == len(data)
    assert client.files.content(done.file.id).read() == data


def test_batchctl_submits_a_file_over_one_request_in_parts(
    local_api: tuple[LocalStack, ApiServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl.cli import main

    # 250 prompts of 20,000 characters (5 MB); the fake engine counts them as one word each.
    source, data = big_file(tmp_path, lines=250, prompt_chars=20_000)
    assert len(data) > 4 * 1024 * 1024
    connection = ["--base-url", local_api[1].base_url, "--api-key", KEY]
    assert main(["submit", str(source), *connection]) == 0
    batch_id = capsys.readouterr().out.split()[0]
    client = openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY)
    batch = wait_for(client, batch_id, timeout=120)
    assert client.files.retrieve(batch.input_file_id).bytes == len(data)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 250
