"""The API's gate: the key is checked before any body is parsed, hostile bodies get a 4xx in
OpenAI's shape (never a 5xx), and one tenant over its rate cannot cost another anything."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from batch_core import wiring
from batchctl.local import LocalStack
from batchctl.server import ApiServer, serve_locally
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, empty_buckets

KEY = "sk-test-gate-0123456789"
OTHER_KEY = "sk-test-gate-other-0123"

DEEP = b'{"input_file_id": "f", "metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
HUGE = b'{"input_file_id": "f", "endpoint": "/v1/chat/completions", "completion_window": ' + (
    b"9" * 5000 + b"}"
)
NOT_UTF8 = b'{"input_file_id": "\xff\xfe", "endpoint": "/v1/chat/completions"}'
JSON = {"Content-Type": "application/json"}
NO_BOUNDARY = {"Content-Type": "multipart/form-data"}

HOSTILE = [
    ("POST", "/batches", DEEP, JSON, "json_too_deep"),
    ("POST", "/batches", HUGE, JSON, "number_out_of_range"),
    ("POST", "/batches", NOT_UTF8, JSON, "invalid_encoding"),
    ("POST", "/uploads", DEEP, JSON, "json_too_deep"),
    ("POST", "/uploads/upload_x/complete", NOT_UTF8, JSON, "invalid_encoding"),
    ("POST", "/files", b"--x\r\n\r\n", NO_BOUNDARY, "invalid_value"),
]


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[LocalStack, ApiServer]]:
    with serve_locally(
        FakeEngine(MODEL), api_keys={KEY: "gate", OTHER_KEY: "gate-other"}, shard_size=4
    ) as running:
        yield running


def call(
    api: tuple[LocalStack, ApiServer],
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = KEY,
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(
        method, api[1].base_url + path, content=body, headers={**auth, **(headers or {})}
    )


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code


Hostile = tuple[str, str, bytes, dict[str, str], str]


@pytest.mark.parametrize("case", HOSTILE)
def test_without_a_key_every_hostile_body_is_a_401_before_it_is_parsed(
    api: tuple[LocalStack, ApiServer], case: Hostile
) -> None:
    method, path, body, headers, _ = case
    assert_openai_error(call(api, method, path, body, headers, key=None), 401, None)
    assert_openai_error(call(api, method, path, body, headers, key="sk-wrong-123456"), 401, None)


@pytest.mark.parametrize("case", HOSTILE)
def test_with_a_key_every_hostile_body_is_a_specific_400(
    api: tuple[LocalStack, ApiServer], case: Hostile
) -> None:
    method, path, body, headers, code = case
    assert_openai_error(call(api, method, path, body, headers), 400, code)


@pytest.fixture
def own_clock(api: tuple[LocalStack, ApiServer]) -> Iterator[None]:
    """For a test that runs the limiter on a clock of its own: the buckets it leaves in that
    clock's future are removed after it, for the module's other tests."""
    yield
    empty_buckets(api[0], "gate", "gate-other")


@pytest.mark.usefixtures("own_clock")
def test_a_tenant_over_its_rate_gets_429_with_retry_after_and_another_tenant_does_not(
    api: tuple[LocalStack, ApiServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = wiring.default_rate_limiter()
    # 5 writes a second, a bucket of 1 s: 5 writes, or 20 reads (a quarter each).
    monkeypatch.setattr(limiter, "per_second", 5)
    monkeypatch.setattr(limiter, "burst_seconds", 1)
    # Frozen, past what the module's other tests took (their buckets are full again by then).
    start = float(int(time.time()) + 60)
    monkeypatch.setattr(limiter, "_clock", lambda: start)
    statuses = [call(api, "GET", "/batches").status_code for _ in range(22)]
    assert statuses == [200] * 20 + [429] * 2
    refused = call(api, "GET", "/batches")
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    # What the SDKs wait for: a read refills in 50 ms (a write's 200 ms over four).
    assert refused.headers["retry-after-ms"] == "50"
    assert refused.headers["retry-after"] == "1"
    assert call(api, "GET", "/batches", key=OTHER_KEY).status_code == 200
    monkeypatch.setattr(limiter, "_clock", lambda: start + 0.2)  # a write's worth later
    assert call(api, "POST", "/batches", b"{}", JSON).status_code == 400  # admitted: a 400
    write = call(api, "POST", "/batches", b"{}", JSON)
    assert_openai_error(write, 429, "rate_limit_exceeded")
    assert write.headers["retry-after-ms"] == "200"
    monkeypatch.setattr(limiter, "_clock", lambda: start + 1.2)  # a second on: full again
    assert [call(api, "GET", "/batches").status_code for _ in range(20)] == [200] * 20


@pytest.mark.usefixtures("own_clock")
def test_concurrent_clients_of_one_tenant_never_take_more_than_its_bucket(
    api: tuple[LocalStack, ApiServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limiter = wiring.default_rate_limiter()
    monkeypatch.setattr(limiter, "per_second", 5)  # a bucket of 1 s: five writes
    monkeypatch.setattr(limiter, "burst_seconds", 1)
    start = float(int(time.time()) + 120)  # frozen, past what the module's other tests took
    monkeypatch.setattr(limiter, "_clock", lambda: start)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: call(api, "POST", "/batches", b"{}", JSON), range(32)))
    statuses = sorted(answer.status_code for answer in answers)
    # Each admitted write is a 400 (an empty body); the bucket's conditional writes let
    # exactly five through, whatever order the clients race in.
    assert statuses == [400] * 5 + [429] * 27
    assert all(int(a.headers["retry-after-ms"]) > 0 for a in answers if a.status_code == 429)
