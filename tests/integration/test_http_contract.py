"""What reaches the API over the wire, whatever the client: bodies of any framing, bytes that
are not UTF-8, odd methods and encoded paths, and many clients at once.

Driven with raw HTTP (http.client) where the SDKs would hide the case, and with the SDK
where a user's own call is the point.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import openai
import pytest

from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, serve_api

KEY = "sk-test-wire-0123456789"
OTHER_KEY = "sk-test-wire-other-0123456789"
LATIN1_JSONL = '{"custom_id": "caf\u00e9"}\n'.encode("latin-1")  # not UTF-8: 0xe9 alone


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    engine = FakeEngine(MODEL, max_model_len=64, seconds_per_request=0.01)
    with serve_api(engine, {KEY: "wire", OTHER_KEY: "wire-other"}) as running:
        yield running


@pytest.fixture
def address(local_api: tuple[LocalStack, ApiServer]) -> tuple[str, int]:
    url = urlsplit(local_api[1].base_url)
    assert url.hostname and url.port
    return url.hostname, url.port


def call(
    address: tuple[str, int],
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    chunk: int = 0,
    key: str = KEY,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request; with `chunk`, the body goes as chunked transfer encoding."""
    connection = http.client.HTTPConnection(*address, timeout=20)
    all_headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    if chunk:
        connection.putrequest(method, path)
        for name, value in all_headers.items():
            connection.putheader(name, value)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.send(b"0\r\n\r\n")
    else:
        connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def multipart(filename: str, data: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def error_of(data: bytes) -> dict[str, Any]:
    body = json.loads(data)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_a_chunked_multipart_upload_is_read_whole(address: tuple[str, int]) -> None:
    data = b"".join(json.dumps(chat_request(f"c{i}")).encode() + b"\n" for i in range(20))
    body, content_type = multipart("chunked.jsonl", data)
    status, _, answer = call(
        address, "POST", "/v1/files", body, {"Content-Type": content_type}, chunk=1000
    )
    assert status == 200, answer
    file_id = json.loads(answer)["id"]
    assert json.loads(answer)["bytes"] == len(data)
    status, _, content = call(address, "GET", f"/v1/files/{file_id}/content")
    assert (status, content) == (200, data)


def test_a_chunked_json_body_is_read_whole(address: tuple[str, int]) -> None:
    body = json.dumps({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"})
    status, _, answer = call(
        address,
        "POST",
        "/v1/batches",
        body.encode(),
        {"Content-Type": "application/json"},
        chunk=5,
    )
    assert status == 404  # the body was read: the unknown file is what is refused
    assert error_of(answer)["param"] == "input_file_id"


def test_a_non_utf8_file_downloads_byte_for_byte(
    address: tuple[str, int], local_api: tuple[LocalStack, ApiServer]
) -> None:
    body, content_type = multipart("latin1.jsonl", LATIN1_JSONL)
    status, _, answer = call(address, "POST", "/v1/files", body, {"Content-Type": content_type})
    assert status == 200, answer
    file_id = json.loads(answer)["id"]
    status, headers, content = call(address, "GET", f"/v1/files/{file_id}/content")
    assert status == 200
    assert content == LATIN1_JSONL
    assert headers["content-type"] == "application/jsonl"
    client = openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)
    assert client.files.content(file_id).read() == LATIN1_JSONL


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/uploads", "/v1/uploads/upload-x/complete"])
def test_a_non_utf8_json_body_is_a_400(address: tuple[str, int], path: str) -> None:
    body = '{"input_file_id": "caf\u00e9"}'.encode("latin-1")
    status, _, answer = call(address, "POST", path, body, {"Content-Type": "application/json"})
    assert status == 400
    assert error_of(answer)["code"] == "invalid_encoding"


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b'{"input_file_id": ', "invalid_json", "could not parse the JSON body"),
        (b"", "invalid_body", "must be a JSON object"),
        (b"null", "invalid_body", "must be a JSON object"),
        (b"[1, 2]", "invalid_body", "must be a JSON object"),
    ],
)
def test_a_body_that_is_no_json_object_is_named_so(
    address: tuple[str, int], body: bytes, code: str, words: str
) -> None:
    status, _, answer = call(
        address, "POST", "/v1/batches", body, {"Content-Type": "application/json"}
    )
    assert status == 400
    error = error_of(answer)
    assert (error["code"], error["param"]) == (code, None)
    assert words in error["message"]


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "PUT", "PATCH", "DELETE"])
def test_another_method_on_a_known_path_is_a_405_naming_the_allowed(
    address: tuple[str, int], method: str
) -> None:
    status, headers, answer = call(address, method, "/v1/batches")
    assert status == 405 and headers["content-type"] == "application/json"
    assert headers["allow"] == "GET, POST"
    assert error_of(answer)["code"] == "method_not_allowed"


def test_an_unknown_path_is_the_apis_own_404(address: tuple[str, int]) -> None:
    status, _, answer = call(address, "TRACE", "/v1/nothing/here")
    assert status == 404
    assert error_of(answer)["code"] == "unknown_url"


def test_head_gets_headers_and_no_body(address: tuple[str, int]) -> None:
    status, headers, answer = call(address, "HEAD", "/v1/files/file-x")
    assert (status, answer) == (405, b"")
    assert headers["allow"] == "DELETE, GET" and int(headers["content-length"]) > 0


def test_percent_encoded_ids_are_decoded(address: tuple[str, int]) -> None:
    body, content_type = multipart("enc.jsonl", b'{"a": 1}\n')
    file_id = json.loads(
        call(address, "POST", "/v1/files", body, {"Content-Type": content_type})[2]
    )["id"]
    encoded = "".join(f"%{ord(char):02X}" for char in file_id)
    status, _, answer = call(address, "GET", f"/v1/files/{encoded}")
    assert status == 200 and json.loads(answer)["id"] == file_id


@pytest.mark.parametrize("length", ["-1", "abc", "1e3"])
def test_a_bad_content_length_is_a_400_and_closes(address: tuple[str, int], length: str) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(
            f"POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Length: {length}\r\nContent-Type: application/json\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes: no thread is held
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert error_of(body)["code"] == "invalid_body"


def test_a_chunked_body_over_the_limit_is_a_413(address: tuple[str, int]) -> None:
    body, content_type = multipart("huge.jsonl", b"x" * 5_000_000)
    status, _, answer = call(
        address, "POST", "/v1/files", body, {"Content-Type": content_type}, chunk=1 << 20
    )
    assert status == 413
    assert error_of(answer)["code"] == "payload_too_large"


def test_sixteen_concurrent_clients_of_two_tenants_each_get_their_own_answers(
    local_api: tuple[LocalStack, ApiServer],
) -> None:
    base = local_api[1].base_url
    failures: list[str] = []

    def one_client(number: int) -> None:
        key = KEY if number % 2 else OTHER_KEY
        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        try:
            for round_ in range(4):
                name = f"c{number}-r{round_}.jsonl"
                data = json.dumps(chat_request(name)).encode() + b"\n"
                created = client.files.create(file=(name, data), purpose="batch")
                again = client.files.retrieve(created.id)
                if (again.id, again.filename) != (created.id, name):
                    failures.append(f"{name}: got {again.id} {again.filename}")
                if client.files.content(created.id).read() != data:
                    failures.append(f"{name}: other content")
                listed = {f.id for f in client.files.list(limit=100)}
                if created.id not in listed:
                    failures.append(f"{name}: not in its tenant's list")
                other_key = OTHER_KEY if key == KEY else KEY
                stranger = openai.OpenAI(base_url=base, api_key=other_key, max_retries=0)
                try:
                    stranger.files.retrieve(created.id)
                    failures.append(f"{name}: seen by the other tenant")
                except openai.NotFoundError:
                    pass
        except Exception as error:  # every failure is collected, not just the first
            failures.append(f"client {number}: {error!r}")

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(16)]
    # Switch threads far more often than the default 5 ms, so that two requests interleave
    # inside one handler call if anything lets them.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not [t for t in threads if t.is_alive()]
    assert failures == []


def test_a_name_outside_latin1_downloads_with_an_encoded_disposition(
    address: tuple[str, int], local_api: tuple[LocalStack, ApiServer]
) -> None:
    name = "données-日本語-😀.jsonl"
    client = openai.OpenAI(base_url=local_api[1].base_url, api_key=KEY, max_retries=0)
    created = client.files.create(file=(name, b'{"a": 1}\n'), purpose="batch")
    assert client.files.retrieve(created.id).filename == name
    status, headers, content = call(address, "GET", f"/v1/files/{created.id}/content")
    assert (status, content) == (200, b'{"a": 1}\n')
    disposition = headers["content-disposition"]
    assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition
    assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition
