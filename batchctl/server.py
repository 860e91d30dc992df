"""The local HTTP server: API Gateway's part, played in-process.

Each HTTP request becomes an API Gateway REST (v1) proxy event for `handlers.api.handler`,
exactly as API Gateway would build it (binary bodies base64-encoded, as the template's
`BinaryMediaTypes: ["*/*"]` makes them), and the handler's answer becomes the HTTP response.
Bodies that would not fit Lambda's 6 MB payload once base64-encoded get a 413.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from batch_core import wiring
from batch_core.protocol import Engine
from batch_core.settings import MAX_REQUEST_BODY_BYTES
from batchctl.local import ACCOUNT, LocalLambdaContext, LocalStack
from batchctl.moto_server import start_moto_server, stop_moto_server

# Lambda takes at most 6 MB (6,291,456 bytes) of event, and API Gateway base64-encodes
# binary bodies: about 4.5 MB of body is what one request can carry.
LAMBDA_PAYLOAD_LIMIT = MAX_REQUEST_BODY_BYTES
# What the template's GatewayResponses answer for bodies API Gateway or Lambda refuse.
TOO_LARGE = {
    "error": {
        "message": "The request body is larger than one API request carries (about 4.5 MB); "
        "send large files in parts through /v1/uploads.",
        "type": "invalid_request_error",
        "param": None,
        "code": "payload_too_large",
    }
}


SERVER_ERROR = {
    "error": {
        "message": "The server had an error.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
logger = logging.getLogger(__name__)


def api_gateway_event(
    method: str, raw_path: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """The REST API proxy event API Gateway sends Lambda for one request."""
    url = urlsplit(raw_path)
    path = unquote(url.path)  # API Gateway hands a REST proxy the decoded path
    query = parse_qs(url.query, keep_blank_values=True)
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "httpMethod": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "resourcePath": "/{proxy+}",
            "stage": "local",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


_ONE_AT_A_TIME = threading.Lock()


class _BadBodyError(Exception):
    """A request whose body cannot be read as HTTP/1.1 frames it: answered 400, then closed."""


class _TooLargeError(Exception):
    """A body over what one API request carries: answered 413, then closed."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openbatch-local"

    def _handle(self) -> None:
        from handlers import api

        try:
            body = self._read_body()
        except _TooLargeError:
            self.close_connection = True
            self._send(413, {"Content-Type": "application/json"}, json.dumps(TOO_LARGE).encode())
            return
        except _BadBodyError as error:
            self.close_connection = True
            self._send(400, {"Content-Type": "application/json"}, _bad_request(str(error)))
            return
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in {"transfer-encoding", "content-length"}
        }
        if body:  # API Gateway hands Lambda the whole body, however it was framed
            headers["Content-Length"] = str(len(body))
        event = api_gateway_event(self.command, self.path, headers, body)
        context = LocalLambdaContext(function_name="api", aws_request_id=str(uuid.uuid4()))
        try:
            # One Lambda instance handles one request at a time, and the resolver keeps the
            # request (and its tenant) in module state: calls must not overlap here either.
            with _ONE_AT_A_TIME:
                result = api.handler(event, context)
        except Exception:  # what API Gateway answers when the function fails (DEFAULT_5XX)
            logger.exception("the API handler failed")
            self._send(502, {"Content-Type": "application/json"}, json.dumps(SERVER_ERROR).encode())
            return
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        response_headers = dict(result.get("headers") or {})
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response_headers[name] = ", ".join(values)
        self._send(int(result["statusCode"]), response_headers, data)

    def _read_body(self) -> bytes:
        """The request's body, framed by Content-Length or chunked transfer encoding (what
        the Node SDK sends for a stream), never more than one API request carries."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit():
            raise _BadBodyError(f"Invalid Content-Length header {raw[:40]!r}.")
        length = int(raw)
        if length > LAMBDA_PAYLOAD_LIMIT:
            self._discard(length)
            raise _TooLargeError
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _BadBodyError("The request body ended before its Content-Length.")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        too_large = False
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadBodyError("A chunk of the request body has no valid size line.") from None
            if chunk_size < 0:
                raise _BadBodyError("A chunk of the request body has a negative size.")
            if chunk_size == 0:
                while self.rfile.readline(1024) not in {b"\r\n", b"\n", b""}:
                    pass  # trailers
                break
            size += chunk_size
            data = self.rfile.read(chunk_size)
            if len(data) < chunk_size:
                raise _BadBodyError("The request body ended inside a chunk.")
            if size > LAMBDA_PAYLOAD_LIMIT:
                too_large = True  # keep reading, so the client is not cut off mid-send
                chunks.clear()
            else:
                chunks.append(data)
            self.rfile.readline(1024)  # the CRLF after each chunk
        if too_large:
            raise _TooLargeError
        return b"".join(chunks)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1024 * 1024))
            if not chunk:
                return
            length -= len(chunk)

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # http.server dispatches on these names: every method goes to the API, as API Gateway's
    # ANY method sends it, and unknown ones get the API's own 404.
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle  # noqa: N815
    do_HEAD = do_OPTIONS = do_TRACE = _handle  # noqa: N815

    def __getattr__(self, name: str) -> Any:
        """Any other method (QUERY, PROPFIND...) goes to the API too, never to 501."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged by the handler (Powertools)


def _bad_request(message: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_body",
            }
        }
    ).encode()


class ApiServer:
    """Serves the API on 127.0.0.1:`port` (0: any free port) in a background thread."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def serve_locally(
    engine: Engine | None,
    *,
    api_keys: dict[str, str],
    port: int = 0,
    **stack_options: Any,
) -> Iterator[tuple[LocalStack, ApiServer]]:
    """The whole local service: a moto server (so `aws --endpoint-url` and presigned URLs
    reach it), the local stack on it (event routing, a worker), the API keys given as
    {key: tenant}, and the HTTP API."""
    moto, url = start_moto_server()
    try:
        with LocalStack(engine, endpoint_url=url, **stack_options) as stack:
            keys = wiring.default_api_keys()
            for key, tenant in api_keys.items():
                keys.register(key, tenant, name="local")
            with ApiServer(port) as server:
                yield stack, server
    finally:
        stop_moto_server(moto)
