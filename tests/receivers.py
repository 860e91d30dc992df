"""One HTTP receiver for the tests: webhook endpoints, CloudFormation's presigned response URL,
hostile peers. It listens on 127.0.0.1 (an ephemeral port), records every request (method,
path, headers, body, arrival) and answers a status per path, at once or dripped a byte at a
time; over TLS when given a server context. Use it as the `http_receiver` fixture
(tests/conftest.py) or as a context manager where a fixture cannot reach (module scope, a
second receiver, helpers outside pytest)."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # as sent, query included
    line: str  # the request line, e.g. "POST /in?x=1 HTTP/1.1"
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() when it was read


class HttpReceiver:
    """`status` answers every path not given its own by `answer`; with `drip` set (seconds a
    byte) the whole answer is written one byte at a time, a peer no per-read timeout catches.
    `connections` counts accepted connections (a request may never come on one), `finished`
    the answers written to their end."""

    def __init__(
        self, status: int = 200, *, drip: float | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.status = status
        self.drip = drip
        self.tls = tls
        self.requests: list[Received] = []
        self.connections = 0
        self.finished = 0
        self._answers: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> HttpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()  # a dripping answer stops mid-way
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str = "") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        """Answer requests to `path` (its query aside) with `statuses` in turn, the last one
        from then on: `answer("/flaky", 500, 200)` refuses the first delivery only."""
        assert statuses, "answer with at least one status"
        with self._lock:
            self._answers[path] = list(statuses)

    def to(self, path: str) -> list[Received]:
        """The requests received on `path` (as sent, query included), in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30) -> list[Received]:
        """The requests to `path` once there are `count` of them; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while len(seen := self.to(path)) < count:
            assert time.monotonic() < deadline, f"{path}: {len(seen)} of {count} requests"
            time.sleep(0.05)
        return seen

    def _take(self, received: Received) -> int:
        with self._lock:
            self.requests.append(received)
            statuses = self._answers.get(urlsplit(received.path).path)
            if not statuses:
                return self.status
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def _write(self, out: Any, status: int) -> None:
        reason = HTTPStatus(status).phrase
        answer = f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        data = answer.encode()
        if self.drip is None:
            out.write(data)
        else:
            for byte in data:
                if self._closing.wait(self.drip):
                    return
                out.write(bytes([byte]))
        with self._lock:
            self.finished += 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _receive(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = Received(
            method=self.command,
            path=self.path,
            line=self.requestline,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        self.close_connection = True
        try:
            receiver._write(self.wfile, receiver._take(received))
        except OSError:  # the client gave up (what a deadline does)
            return

    def do_POST(self) -> None:  # http.server's names
        self._receive()

    def do_PUT(self) -> None:
        self._receive()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.receiver._lock:
            self.receiver.connections += 1
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.receiver.tls
        if tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake in the connection's own thread: a peer that refuses the certificate
        # fails it there (handle_error, quiet), not in the accepting loop.
        with tls.wrap_socket(request, server_side=True) as wrapped:
            super().finish_request(wrapped, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a peer hanging up or refusing TLS is what some tests do on purpose
