"""A moto server in its own process, for local runs that span several processes.

The in-process mock (what the tests and `batchctl local run` use) cannot be shared with a
worker in another process. A server can: point `AWS_ENDPOINT_URL` at it. Step Functions
executions run there too once the server is told to (moto's `/moto-api/config`), which needs
the server to know its own port (`MOTO_PORT`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto_server(
    *, execute_state_machines: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's server (with `moto_quirks` applied) on a free port; returns the process
    and its URL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "batchctl.moto_quirks", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_PORT": str(port)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)
    if execute_state_machines:
        config = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
        request = urllib.request.Request(
            f"{url}/moto-api/config",
            data=config,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
    return server, url


def stop_moto_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
