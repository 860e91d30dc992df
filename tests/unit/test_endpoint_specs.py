"""An endpoint family is one spec (`batch_core.endpoints`): validation, drops, usage and the
engines' dispatch read it, so a family registered here, in a test, is served without an
edit anywhere else."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from batch_core import endpoints
from batch_core.api_models import BatchCreateParams
from batch_core.batch_params import BatchParams, checked
from batch_core.drop_options import drop_options, parse_endpoint
from batch_core.endpoints import ENDPOINTS, EndpointSpec, spec_for
from batch_core.endpoints.chat import SPEC as CHAT
from batch_core.endpoints.spec import ServingEntry, UsageReader
from batch_core.errors import InvalidRequestError, LineError
from batch_core.fast_lines import decode_fast
from batch_core.models import SUPPORTED_ENDPOINTS
from batch_core.protocol import EngineRequest, usage_of
from batch_core.validation import BatchValidator, ValidLine, iter_lines
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.engines.vllm_engine import serving_routes

# A body each family accepts, for the checks below that need a valid line.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        "max_tokens": 5,
        "n": 2,
    },
    "/v1/completions": {"prompt": "Once upon", "max_tokens": 7, "n": 3},
    "/v1/embeddings": {"input": ["one", "two"]},
    "/v1/responses": {"input": "Tell me about rivers.", "max_output_tokens": 9},
    "/v1/score": {"queries": "a cat", "documents": ["a dog", "a cat"]},
    "/v1/rerank": {"query": "a cat", "documents": ["a dog", "a cat"]},
}


def line(custom_id: str, url: str | None, body: dict[str, Any]) -> bytes:
    request: dict[str, Any] = {"custom_id": custom_id, "body": {"model": "m", **body}}
    if url is not None:
        request["url"] = url
    return json.dumps(request).encode()


def validate(*lines: bytes, endpoint: str | None = None) -> tuple[list[ValidLine], Any]:
    validator = BatchValidator(endpoint=endpoint)
    valid = list(validator.validate(iter_lines([b"\n".join(lines) + b"\n"])))
    return valid, validator.report()


def family_specs() -> list[EndpointSpec]:
    """The `SPEC` of every module of the package (the family modules), found by walking it."""
    package = Path(endpoints.__file__).parent
    specs = []
    for module in pkgutil.iter_modules([str(package)]):
        spec = getattr(importlib.import_module(f"batch_core.endpoints.{module.name}"), "SPEC", None)
        if spec is not None:
            specs.append(spec)
    return specs


def test_every_family_module_is_registered_once_under_its_path() -> None:
    specs = family_specs()
    assert sorted(spec.path for spec in specs) == sorted(ENDPOINTS)
    assert all(ENDPOINTS[spec.path] is spec for spec in specs)


def test_validation_accepts_exactly_the_registered_paths() -> None:
    for path in ENDPOINTS:
        valid, report = validate(line("a", path, VALID_BODIES[path]))
        assert report.ok, (path, report.errors)
        assert [request.url for request in valid] == [path]
    _, report = validate(line("a", "/v1/images/generations", {"prompt": "x"}))
    assert [error.code for error in report.errors] == ["unsupported_endpoint"]


def test_every_alias_resolves_to_its_own_spec_and_no_other() -> None:
    seen: dict[str, str] = {}
    for spec in ENDPOINTS.values():
        assert parse_endpoint(spec.path) == spec.path
        for alias in spec.aliases:
            assert alias not in seen, f"{alias!r} names {seen.get(alias)} and {spec.path}"
            seen[alias] = spec.path
            assert parse_endpoint(f" {alias.upper()} ") == spec.path
            assert drop_options(f"inbox/endpoint={alias}/f.jsonl", {}).endpoint == spec.path
    with pytest.raises(InvalidRequestError):
        parse_endpoint("images")


def facts_of(request: ValidLine) -> tuple[int, int, int | None, int]:
    return request.prompt_chars, request.prefix, request.output_tokens, request.choices


@pytest.mark.parametrize("path", list(VALID_BODIES))
def test_a_fast_decoder_finds_what_the_dict_checks_find(path: str) -> None:
    """The second line of a batch takes its family's fast path (the first names the model):
    both must come out alike. (Completions once read a limit its bodies cannot have.)"""
    body = VALID_BODIES[path]
    valid, report = validate(line("a", path, body), line("b", path, body), endpoint=path)
    assert report.ok, report.errors
    slow, fast = valid
    assert (fast.url, facts_of(fast)) == (slow.url, facts_of(slow))
    spec = ENDPOINTS[path]
    if spec.fast is not None:
        facts = decode_fast(line("b", path, body), path)
        assert facts is not None
        assert facts[2:] == facts_of(slow)
    if spec.pooling:
        assert slow.output_tokens == 0


OUT_OF_RANGE = {
    "max_tokens": 0,
    "max_completion_tokens": 0,
    "max_output_tokens": 0,
    "top_logprobs": 21,
    "top_n": -1,
    "n": 0,
    "temperature": 3,
    "top_p": 2,
    "presence_penalty": 3,
    "frequency_penalty": -3,
    "seed": "x",
    "stop": 5,
    "response_format": {"type": "nope"},
}
"""A value the dict checks refuse, for every field they range-check."""


@pytest.mark.parametrize(
    "path",
    [path for path, spec in ENDPOINTS.items() if spec.fast and OUT_OF_RANGE.keys() & spec.fields],
)
def test_the_fast_path_refuses_every_range_the_dict_checks_refuse(path: str) -> None:
    """A line past the first takes the fast path: a value out of range there must still be
    refused, as the first line's dict checks refuse it (top_logprobs 50 once slipped by)."""
    body = VALID_BODIES[path]
    fields = sorted(OUT_OF_RANGE.keys() & ENDPOINTS[path].fields)
    lines = [line("first", path, body)] + [
        line(field, path, {**body, field: OUT_OF_RANGE[field]}) for field in fields
    ]
    valid, report = validate(*lines, endpoint=path)
    assert [request.custom_id for request in valid] == ["first"]
    assert sorted(error.param or "" for error in report.errors) == sorted(
        "body.response_format.type" if field == "response_format" else f"body.{field}"
        for field in fields
    )


def test_usage_is_read_by_the_reader_of_the_family_that_wrote_it() -> None:
    for reader in {spec.usage for spec in ENDPOINTS.values()}:
        usage = {reader.input: 3, reader.output: 5, reader.details: {"cached_tokens": 2}}
        assert usage_of({"usage": usage}) == (3, 2, 5)


# A family of our own: it exists only in this module.
class EchoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    text: str
    max_tokens: int | None = None


def check_echo(body: dict[str, Any]) -> tuple[int, int]:
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise LineError.invalid("body.text must be a non-empty string.", "body.text")
    return len(text), 0


ECHO = EndpointSpec(
    path="/v1/echo",
    aliases=("echo",),
    fields=frozenset({"model", "text", "max_tokens"}),
    check=check_echo,
    serving=ServingEntry("serving_echo", "create_echo", f"{__name__}:EchoRequest"),
    usage=UsageReader("echoed_in", "echoed_out", "echoed_details"),
)


class EchoServing:
    """What vLLM's app state would hold for the family (a serving object)."""

    async def create_echo(self, request: EchoRequest) -> dict[str, Any]:
        return {"echo": request.text, "usage": {"echoed_in": 1, "echoed_out": 1}}


@pytest.fixture
def echo_family(monkeypatch: pytest.MonkeyPatch) -> Iterator[EndpointSpec]:
    monkeypatch.setitem(ENDPOINTS, ECHO.path, ECHO)
    yield ECHO


def test_an_unregistered_family_is_not_served() -> None:
    assert spec_for(ECHO.path) is None
    _, report = validate(line("a", ECHO.path, {"text": "hi"}))
    assert [error.code for error in report.errors] == ["unsupported_endpoint"]
    with pytest.raises(InvalidRequestError):
        parse_endpoint("echo")
    assert ECHO.path not in serving_routes(SimpleNamespace(serving_echo=EchoServing()))


def test_a_registered_family_is_validated_by_its_spec(echo_family: EndpointSpec) -> None:
    valid, report = validate(
        line("a", ECHO.path, {"text": "hello", "max_tokens": 4}),
        line("b", None, {"text": "again"}),
        line("c", ECHO.path, {"text": ""}),
        line("d", ECHO.path, {"text": "x", "temprature": 1}),
        line("e", ECHO.path, {"text": "x", "max_tokens": 0}),
    )
    assert [(r.custom_id, r.url, r.prompt_chars, r.output_tokens) for r in valid] == [
        ("a", ECHO.path, 5, 4),
        ("b", ECHO.path, 5, None),
    ]
    assert report.endpoint == ECHO.path
    assert [(error.code, error.line, error.param) for error in report.errors] == [
        ("invalid_request", 3, "body.text"),  # its own check
        ("invalid_request", 4, "body.temprature"),  # its field list
        ("invalid_request", 5, "body.max_tokens"),  # the ranges every family shares
    ]


def test_a_registered_family_is_a_batch_endpoint_for_the_api_and_drops(
    echo_family: EndpointSpec,
) -> None:
    # The API's body and a drop's options take the same `Endpoint` type: the registry's.
    assert BatchCreateParams(input_file_id="file-1", endpoint=ECHO.path).endpoint == ECHO.path
    assert BatchParams(endpoint=ECHO.path).endpoint == ECHO.path
    with pytest.raises(InvalidRequestError) as refused:
        checked(BatchParams, {"endpoint": "/v1/images/generations"})
    assert refused.value.param == "endpoint"
    assert f"'{ECHO.path}'" in str(refused.value)  # the refusal lists what is served


def test_an_unregistered_family_is_no_batch_endpoint() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        checked(BatchParams, {"endpoint": ECHO.path})
    assert str(refused.value) == (
        "Invalid value for 'endpoint': Input should be "
        + ", ".join(repr(path) for path in SUPPORTED_ENDPOINTS[:-1])
        + f" or {SUPPORTED_ENDPOINTS[-1]!r}."
    )


def test_a_registered_family_has_its_alias_and_usage(echo_family: EndpointSpec) -> None:
    assert parse_endpoint("echo") == ECHO.path
    assert usage_of({"usage": {"echoed_in": 4, "echoed_out": 6}}) == (4, 0, 6)
    assert usage_of({"usage": {"prompt_tokens": 4, "completion_tokens": 6}}) == (4, 0, 6)


def test_the_vllm_engine_routes_a_registered_family_to_its_serving_object(
    echo_family: EndpointSpec,
) -> None:
    serving = EchoServing()
    routes = serving_routes(SimpleNamespace(serving_echo=serving))
    assert list(routes) == [ECHO.path]  # the state holds no other family's serving object
    adapter, handler = routes[ECHO.path]
    assert handler == serving.create_echo
    parsed = adapter.validate_python({"model": "m", "text": "hi"})
    assert isinstance(parsed, EchoRequest)
    assert asyncio.run(handler(parsed))["echo"] == "hi"
    assert serving_routes(SimpleNamespace()) == {}  # a model without the task: not served


def test_the_fake_engine_serves_a_family_by_its_serving_entry(
    monkeypatch: pytest.MonkeyPatch, echo_family: EndpointSpec
) -> None:
    engine = FakeEngine("m")
    echo = engine.answer(EngineRequest(custom_id="e", url=ECHO.path, body={"model": "m"}))
    assert (echo.status_code, echo.body["error"]["code"]) == (400, "unsupported_endpoint")
    # A family that chat's serving object runs is answered as chat is.
    alias = EndpointSpec(
        path="/v2/chat", aliases=(), fields=CHAT.fields, check=CHAT.check, serving=CHAT.serving
    )
    monkeypatch.setitem(ENDPOINTS, alias.path, alias)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    chat = engine.answer(EngineRequest(custom_id="c", url=alias.path, body=body))
    assert chat.status_code == 200 and chat.body["object"] == "chat.completion"


def test_every_serving_entry_names_what_vllm_has() -> None:
    """The names the specs hold for vLLM: its request models, and the app-state attributes
    its serving objects are set on."""
    found = importlib.util.find_spec("vllm")
    if found is None or not found.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    from pydantic import TypeAdapter

    from gpu_worker.engines.vllm_engine import request_model

    sources = Path(found.submodule_search_locations[0], "entrypoints")
    text = "".join(path.read_text() for path in sources.rglob("*.py"))
    for spec in ENDPOINTS.values():
        entry = spec.serving
        assert f"state.{entry.state} =" in text, spec.path
        TypeAdapter(request_model(entry.request))  # a model, or a union of them
