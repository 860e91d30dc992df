"""schemathesis against the API's own OpenAPI document, on the local server: every check it
has (server errors, undocumented statuses and content types, response schemas, schema-valid
data refused, schema-invalid data accepted, unsupported methods, auth ignored, use after
delete, created objects not found), over generated, coverage and stateful cases. Bounded and
seeded, so a run is repeatable; `SCHEMATHESIS_EXAMPLES` makes it longer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.local import LocalStack
from batchctl.server import ApiServer
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, serve_api

KEY = "sk-test-schemathesis-0123456789"
DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[LocalStack, ApiServer]]:
    with serve_api(FakeEngine(MODEL, max_model_len=64), {KEY: "schemathesis"}) as running:
        yield running


def test_the_api_conforms_to_its_openapi_document(
    local_api: tuple[LocalStack, ApiServer], tmp_path: Path
) -> None:
    origin = local_api[1].base_url.removesuffix("/v1")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        str(DOCUMENT),
        "--url",
        origin,
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_EXAMPLES", "10"),
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--warnings",
        "off",
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False
    )
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
    # It did test every operation of the document.
    operations = sum(len(methods) for methods in json.loads(DOCUMENT.read_text())["paths"].values())
    assert f"Selected: {operations}/{operations}" in run.stdout, report
    assert f"Tested: {operations}" in run.stdout, report
