"""Result lines in input order with a cursor (`GET /v1/batches/{id}/results`), through the
local server and the real openai SDK: its own cursor paging (`get_api_list` with
`SyncCursorPage`) over more than 100 lines, a custom_id found while the batch runs, and bad
cursors, limits and custom_ids answered 400 in OpenAI's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import BaseModel  # the SDK builds page items of its own BaseModel only
from openai.pagination import SyncCursorPage

from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api

KEY = "sk-test-pages-0123456789"
LINES = 250


class ResultLine(BaseModel):
    """What a client declares for a page's items (the output file's line, plus `line`)."""

    id: str
    custom_id: str | None
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    line: int


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "pages"}, shard_size=40, part_size=10) as running:
        yield running


@pytest.fixture
def client(local_api: tuple[LocalStack, ApiServer]) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)


def submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    file_id = client.files.create(file=("pages.jsonl", data), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def results(client: openai.OpenAI, batch_id: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = client.get(
        f"/batches/{batch_id}/results", cast_to=httpx.Response, options={"params": params}
    ).json()
    return page


def test_the_sdks_cursor_paging_walks_every_line_in_input_order(client: openai.OpenAI) -> None:
    lines = [chat_request(f"q-{n}", f"question {n}") for n in range(1, LINES + 1)]
    lines[41] = chat_request("q-42", " ".join(["word"] * 100))  # an engine error, in its place
    batch_id = submit(client, lines)

    # While it runs: one custom_id, found through the index before the batch ends.
    deadline = time.monotonic() + 60
    while not (found := results(client, batch_id, custom_id="q-3")["data"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    running = client.batches.retrieve(batch_id).status
    (line,) = found
    assert (line["custom_id"], line["line"], line["response"]["status_code"]) == ("q-3", 3, 200)

    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch_id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    first = client.get_api_list(
        f"/batches/{batch_id}/results",
        page=SyncCursorPage[ResultLine],
        model=ResultLine,
        options={"params": {"limit": 100}},
    )
    pages = list(first.iter_pages())
    walked = [item for item in first]

    assert [len(page.data) for page in pages] == [100, 100, 50]
    assert [item.line for item in walked] == list(range(1, LINES + 1))
    assert [item.custom_id for item in walked] == [line["custom_id"] for line in lines]
    assert len({item.id for item in walked}) == LINES
    assert walked[41].response is not None and walked[41].response["status_code"] == 400
    output = client.batches.retrieve(batch_id).output_file_id
    assert output is not None
    written = {json.loads(raw)["id"] for raw in client.files.content(output).text.splitlines()}
    assert written == {item.id for item in walked if item.custom_id != "q-42"}
    assert running in {"in_progress", "finalizing", "completed"}  # mid-run: the next test
    page = results(client, batch_id, limit=2)
    assert (page["first_id"], page["last_id"], page["has_more"]) == (
        walked[0].id,
        walked[1].id,
        True,
    )


def test_a_custom_id_is_read_mid_run_and_with_batchctl(
    local_api: tuple[LocalStack, ApiServer],
    client: openai.OpenAI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from batchctl.cli import main

    slow = [chat_request(f"s-{n}", f"slow {n}") for n in range(1, 1001)]  # 10 s of work
    batch_id = submit(client, slow)
    deadline = time.monotonic() + 60
    while not results(client, batch_id, custom_id="s-2")["data"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    connection = ["--base-url", local_api[1].base_url, "--api-key", KEY]

    assert main(["results", batch_id, "--custom-id", "s-2", *connection]) == 0
    (printed,) = capsys.readouterr().out.splitlines()
    assert (json.loads(printed)["custom_id"], json.loads(printed)["line"]) == ("s-2", 2)
    status = client.batches.retrieve(batch_id).status
    assert main(["results", batch_id, "--custom-id", "nobody", *connection]) == 1
    assert "no result" in capsys.readouterr().err
    client.batches.cancel(batch_id)
    assert status == "in_progress"  # found while it ran


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"after": "nonsense"}, "after"),
        ({"after": "batch_req_" + "0" * 32}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"custom_id": "x" * 513}, "custom_id"),
    ],
)
def test_bad_cursors_limits_and_custom_ids_are_400s_in_openais_shape(
    client: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    batch_id = submit(client, [chat_request("only")])
    with pytest.raises(openai.BadRequestError) as refused:
        client.get(
            f"/batches/{batch_id}/results", cast_to=httpx.Response, options={"params": params}
        )
    error = refused.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param or param in error["message"]
