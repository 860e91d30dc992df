"""Bounded intake (issue 25, findings 3 and 4): what one tenant's lines quote or declare cannot
make its batch too large to store or list, nor weigh on the estimate every tenant's
scheduling shares.

- a 500 KB field name: the batch fails at once with a bounded error (it once passed
  DynamoDB's 400 KB item, failed intake for hours and ended `intake_failed`);
- batches whose errors quote a 300 KB custom_id: a list page stays small (twenty of them once
  made a page over Lambda's 6 MB response);
- a file of many errors: the batch keeps the first within its budget, its error file all;
- `max_tokens` x `n` as declared (20,000 x 128, and 2**63-1): the work estimate stays within
  the model's context window per request (once 51 M tokens, DeadlinePressure 7.1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batch_core import s3keys, wiring
from batch_core.intake_jobs import DroppedObject
from batch_core.json_bounds import MAX_JSON_INTEGER
from batch_core.models import BatchErrors
from batch_core.records import BatchRecord
from batch_core.validation import STORED_ERRORS_BYTES
from batchctl.local import LocalLambdaContext, LocalStack
from batchctl.server import api_gateway_event
from handlers import api
from tests.conftest import MODEL, chat_request
from tests.dynamodb_item import ITEM_LIMIT_BYTES, batch_item_bytes
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
KEY = "sk-bounded-0123456789abcd"
TENANT = "bounded"
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("API_REQUESTS_PER_SECOND", "0")  # the rate limit is tested on its own
        with LocalStack(None, served_models=[MODEL], route_events=False) as local:
            wiring.default_api_keys().register(KEY, TENANT)
            yield local


def call(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    event = api_gateway_event(method, path, headers, data)
    response = api.handler(event, LocalLambdaContext(function_name="api", aws_request_id="r"))
    return int(response["statusCode"]), (response.get("body") or "").encode()


def drop(stack: LocalStack, name: str, lines: list[Any]) -> BatchRecord:
    """Intake of `lines` dropped at inbox/<name>.jsonl, run here as its event would run it."""
    data = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    key = f"{s3keys.INBOX_PREFIX}{name}.jsonl"
    stack.session.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data)
    batch = stack.stages.intake.ingest_dropped_object(DroppedObject(key=key, etag="1"))
    assert batch is not None
    return batch


def test_a_500_kb_field_name_fails_the_batch_at_once_with_bounded_errors(
    stack: LocalStack,
) -> None:
    wide = {**chat_request("a"), "f" * (500 * 1024): 1}
    started = time.monotonic()
    batch = drop(stack, "wide", [chat_request("ok"), wide])
    seconds = time.monotonic() - started
    errors = batch.errors or []
    codes = [e.code for e in errors]
    error_bytes = max(len(e.model_dump_json()) for e in errors) if errors else 0
    size = batch_item_bytes(stack, batch.id)
    held = batch.status == "failed" and codes == ["invalid_request"] and error_bytes < 2048
    record("bounded intake", "500 KB field name: batch failed with bounded errors, item bytes",
           f"{batch.status} in {seconds:.1f} s, error {error_bytes} B, item {size:,} B "
           f"(limit {ITEM_LIMIT_BYTES:,})", held and size < ITEM_LIMIT_BYTES)  # fmt: skip
    assert held, (batch.status, codes, error_bytes)
    assert size < STORED_ERRORS_BYTES + 4096


def test_many_errors_keep_to_the_budget_on_the_batch_and_all_go_to_the_error_file(
    stack: LocalStack,
) -> None:
    count = scale(400, 5000)
    lines = [{**chat_request(f"r{i}"), "g" * 300 + str(i): 1} for i in range(count)]
    batch = drop(stack, "noisy", lines)
    stored = len(BatchErrors(data=batch.errors or []).model_dump_json())
    assert batch.error_file_id is not None
    content = stack.stages.store.read(s3keys.file_key(batch.error_file_id))
    in_file = len(content.splitlines())
    held = stored <= STORED_ERRORS_BYTES and in_file == count
    record("bounded intake", f"{count} bad lines: errors on the batch / in its error file",
           f"{len(batch.errors or []) - 1} ({stored:,} B) / {in_file}", held)  # fmt: skip
    assert held, (stored, in_file)


def test_a_list_page_of_batches_quoting_300_kb_custom_ids_stays_small(
    stack: LocalStack,
) -> None:
    files = wiring.default_stages().files
    long_id = "c" * (300 * 1024)
    data = (json.dumps(chat_request(long_id)) + "\n").encode() * 2  # a duplicate custom_id
    for i in range(20):
        file = files.create(TENANT, filename=f"dup{i}.jsonl", purpose="batch", data=data)
        body = {"input_file_id": file.id, "endpoint": "/v1/chat/completions",
                "completion_window": "24h"}  # fmt: skip
        status, answer = call("POST", "/v1/batches", body)
        assert status == 200, answer
        batch_id = json.loads(answer)["id"]
        ingested = stack.stages.intake.ingest_dropped_object(
            DroppedObject(key=s3keys.batch_input_key(batch_id), etag="1")
        )
        assert ingested is not None and ingested.status == "failed"
    status, page = call("GET", "/v1/batches?limit=100")
    listed = json.loads(page)["data"]
    codes = [b["errors"]["data"][0]["code"] for b in listed if b["errors"]]
    quoting = [code for code in codes if code == "duplicate_custom_id"]
    held = status == 200 and len(quoting) == 20 and len(page) < LAMBDA_RESPONSE_BYTES // 20
    record("bounded intake", "20 batches quoting a 300 KB custom_id: list page bytes",
           f"{len(page):,} B (Lambda's limit {LAMBDA_RESPONSE_BYTES:,})", held)  # fmt: skip
    assert held, (status, len(quoting), len(page))


@pytest.mark.parametrize(
    ("label", "greedy"),
    [
        ("max_tokens 20,000 x n 128", {"max_tokens": 20_000, "n": 128}),
        ("max_tokens 2**63-1 x n 128", {"max_tokens": MAX_JSON_INTEGER, "n": 128}),
    ],
)
def test_huge_max_tokens_x_n_is_estimated_within_the_models_context(
    stack: LocalStack, label: str, greedy: dict[str, int]
) -> None:
    stages = stack.stages
    lines = [{**chat_request(f"r{i}"), "body": {**chat_request(f"r{i}")["body"], **greedy}}
             for i in range(20)]  # fmt: skip
    name = "window=1h/greedy-" + str(len(str(greedy["max_tokens"])))
    batch = drop(stack, name, lines)
    assert batch.status == "in_progress", batch.errors
    declared = 20 * greedy["max_tokens"] * greedy["n"]
    bound = 20 * stages.settings.model_context_tokens
    # The sweep's hour and a minute: a batch due in exactly an hour from now counts.
    pressure = stages.turns.deadline_pressures(3660, running=[batch])[MODEL]
    at_risk = stages.turns.flag_at_risk(running=[batch])
    held = batch.estimated_tokens <= bound and pressure < 0.5 and not at_risk
    record("bounded intake", f"huge {label}: estimated tokens vs bound",
           f"{batch.estimated_tokens:,} <= {bound:,} (declared {declared:.2g}); "
           f"pressure {pressure:.2f}", held)  # fmt: skip
    assert held, (batch.estimated_tokens, bound, pressure, at_risk)
