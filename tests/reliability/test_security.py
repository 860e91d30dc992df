"""Security: every route with another tenant's ids answers 404 (the isolation matrix), API
keys never reach the logs, internal media URLs and header-injecting filenames are refused."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from batch_core import wiring
from batch_core.errors import InvalidRequestError
from batch_core.media_urls import MediaPolicy
from batchctl.local import LocalLambdaContext, LocalStack
from batchctl.server import api_gateway_event
from handlers import api
from tests.conftest import MODEL, chat_request
from tests.reliability.conftest import record
from tests.unit.test_media_urls import INTERNAL

pytestmark = pytest.mark.reliability
OWNER = "sk-owner-0123456789abcdef"
INTRUDER = "sk-intruder-0123456789ab"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(None, served_models=[MODEL], route_events=False) as local:
        wiring.default_api_keys().register(OWNER, "owner")
        wiring.default_api_keys().register(INTRUDER, "intruder")
        yield local


def call(method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    event = api_gateway_event(method, path, headers, data)
    response = api.handler(event, LocalLambdaContext(function_name="api", aws_request_id="r"))
    text = response.get("body") or ""
    try:
        return int(response["statusCode"]), json.loads(text)
    except ValueError:
        return int(response["statusCode"]), text


def test_isolation_matrix_and_no_key_in_the_logs(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    files = wiring.default_stages().files
    data = (json.dumps(chat_request("s1")) + "\n").encode()
    file = files.create("owner", filename="s.jsonl", purpose="batch", data=data)
    upload = files.create_upload(
        "owner", filename="u.jsonl", purpose="batch", size=10, mime_type="text/plain"
    )
    create = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}
    status, batch = call("POST", "/v1/batches", OWNER, {**create, "input_file_id": file.id})
    assert status == 200, batch
    foreign = [
        ("GET", f"/v1/files/{file.id}", None),
        ("DELETE", f"/v1/files/{file.id}", None),
        ("GET", f"/v1/files/{file.id}/content", None),
        ("POST", f"/v1/uploads/{upload.id}/complete", {"part_ids": ["x"]}),
        ("POST", f"/v1/uploads/{upload.id}/cancel", None),
        ("GET", f"/v1/batches/{batch['id']}", None),
        ("POST", f"/v1/batches/{batch['id']}/cancel", None),
        ("POST", f"/v1/batches/{batch['id']}/retry", None),
        ("GET", f"/v1/batches/{batch['id']}/results", None),
        ("GET", f"/v1/batches/{batch['id']}/results?custom_id=a", None),
        ("GET", f"/v1/batches/{batch['id']}/result_parts", None),
        (
            "POST",
            "/v1/batches",
            {
                "input_file_id": file.id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ),
    ]
    answers = [call(method, path, INTRUDER, body) for method, path, body in foreign]
    not_found = sum(status == 404 for status, _ in answers)
    listed = (
        call("GET", "/v1/batches", INTRUDER)[1]["data"]
        + call("GET", "/v1/files", INTRUDER)[1]["data"]
    )
    # A wrong key too, and an error path, so the keys pass through every logger we have.
    call("GET", "/v1/batches", "sk-wrong-but-long-enough")
    call("GET", "/v1/batches/nope", OWNER)
    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    leaked = [key for key in (OWNER, INTRUDER, "sk-wrong-but-long-enough") if key in logs]
    record("security", "foreign ids x routes answering 404", f"{not_found}/{len(foreign)}",
           not_found == len(foreign))  # fmt: skip
    record("security", "other tenants' objects in lists", len(listed), not listed)
    record("security", "API keys found in the logs", len(leaked), not leaked)
    assert [status for status, _ in answers] == [404] * len(foreign), answers
    assert listed == [] and leaked == []


def test_internal_media_urls_and_injecting_filenames_are_refused(stack: LocalStack) -> None:
    policy = MediaPolicy.of(["images.example.com"])
    refused = sum(policy.refusal(url) is not None for url in INTERNAL)
    names = ["a\r\nSet-Cookie: s=1.jsonl", "b\nLocation: http://evil/.jsonl", "c\x00.jsonl"]
    files = wiring.default_stages().files
    blocked = 0
    for name in names:
        with pytest.raises(InvalidRequestError):
            files.create("owner", filename=name, purpose="batch", data=b"{}\n")
        blocked += 1
    record("security", "SSRF media URLs refused", f"{refused}/{len(INTERNAL)}",
           refused == len(INTERNAL))  # fmt: skip
    record("security", "header-injecting filenames refused", f"{blocked}/{len(names)}",
           blocked == len(names))  # fmt: skip
    assert refused == len(INTERNAL)
