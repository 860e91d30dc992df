"""Generated requests into every API route: never a 5xx, every refusal a 4xx in OpenAI's error
shape. The handler gets the API Gateway events the deployed stage would send it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_core import wiring
from batchctl.local import LocalLambdaContext, LocalStack
from batchctl.server import api_gateway_event
from handlers import api
from tests.reliability.conftest import record, scale

pytestmark = pytest.mark.reliability
KEY = "sk-fuzz-0123456789abcdef"
EXAMPLES = scale(1_200, 10_000)
ROUTES = [
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/{id}"),
    ("DELETE", "/v1/files/{id}"),
    ("GET", "/v1/files/{id}/content"),
    ("POST", "/v1/uploads"),
    ("POST", "/v1/uploads/{id}/parts"),
    ("POST", "/v1/uploads/{id}/complete"),
    ("POST", "/v1/uploads/{id}/cancel"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{id}"),
    ("POST", "/v1/batches/{id}/cancel"),
    ("POST", "/v1/batches/{id}/retry"),
    ("GET", "/v1/batches/{id}/results"),
    ("GET", "/v1/batches/{id}/result_parts"),
    ("GET", "/openapi.json"),
]
seen: dict[str, int] = {"requests": 0, "5xx": 0, "not_openai_shape": 0}
statuses: dict[int, int] = {}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(None, served_models=["m"], route_events=False) as local:
        wiring.default_api_keys().register(KEY, "fuzz")
        limiter = wiring.default_rate_limiter()
        limiter.per_second = 0  # the limiter has its own test; here every request goes in
        yield local
    total = seen["requests"]
    record("API fuzz", "generated requests (every route)", total, total >= EXAMPLES)
    record("API fuzz", "answers 5xx", seen["5xx"], seen["5xx"] == 0)
    record("API fuzz", "refusals not in OpenAI's shape", seen["not_openai_shape"],
           seen["not_openai_shape"] == 0)  # fmt: skip
    record("API fuzz", "statuses seen", " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())))


ids = st.one_of(
    st.sampled_from(["file-abc", "batch_abc", "upload_abc", "x", "%2e%2e", "..", "a" * 300]),
    st.text(min_size=1, max_size=40).map(lambda t: t.replace("/", "_") or "_"),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
params = st.fixed_dictionaries(
    {},
    optional={
        "input_file_id": st.one_of(ids, json_values),
        "endpoint": st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v2/x", ""]),
        "completion_window": st.sampled_from(["24h", "1h", "7d", "", "99999999999h"]),
        "metadata": json_values,
        "filename": st.text(max_size=40),
        "purpose": st.sampled_from(["batch", "fine-tune", ""]),
        "bytes": st.integers(min_value=-5, max_value=2**65),
        "mime_type": st.text(max_size=20),
        "part_ids": st.lists(st.text(max_size=10), max_size=5),
        "md5": st.text(max_size=40),
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    params.map(lambda p: json.dumps(p).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda d: b'{"metadata":' + b"[" * d + b"]" * d + b"}"),
    st.integers(18, 5000).map(lambda n: b'{"bytes": ' + b"9" * n + b"}"),
    st.just(b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b--\r\n'),
)
headers = st.fixed_dictionaries(
    {
        "Authorization": st.sampled_from(
            [f"Bearer {KEY}"] * 12 + ["Bearer sk-nope-00000000", "Basic x", "", "Bearer"]
        ),
        "Content-Type": st.sampled_from(
            [
                "application/json",
                "multipart/form-data; boundary=b",
                "multipart/form-data",
                "text/plain",
                "application/json; charset=latin-1",
                "",
            ]
        ),
    },
    optional={"Idempotency-Key": st.text(max_size=30)},
)
queries = st.one_of(
    st.just(""),
    st.sampled_from(["?limit=0", "?limit=5", "?limit=x", "?after=batch_x", "?order=sideways"]),
    st.text(max_size=20).map(lambda t: "?" + t.replace("#", "")),
)


def check(response: dict[str, Any]) -> None:
    status = int(response["statusCode"])
    seen["requests"] += 1
    statuses[status] = statuses.get(status, 0) + 1
    if status >= 500:
        seen["5xx"] += 1
    if status >= 400:
        try:
            error = json.loads(response["body"])["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert isinstance(error["message"], str) and error["message"]
        except (AssertionError, KeyError, TypeError, ValueError):
            seen["not_openai_shape"] += 1
            raise
    assert status < 500, response


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]) | st.none(),
    identifier=ids,
    query=queries,
    header_values=headers,
    body=bodies,
)
def test_generated_requests_never_get_a_5xx(
    stack: LocalStack,
    route: tuple[str, str],
    method: str | None,
    identifier: str,
    query: str,
    header_values: dict[str, str],
    body: bytes | None,
) -> None:
    verb, template = route
    path = template.replace("{id}", identifier) + query
    event = api_gateway_event(method or verb, path, header_values, body or b"")
    context = LocalLambdaContext(function_name="api", aws_request_id=str(uuid.uuid4()))
    check(api.handler(event, context))
