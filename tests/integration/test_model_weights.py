"""MODEL=s3://...: the tiny model copied from moto's S3 to the instance's cache, once.

In-process tests use moto's mock (GetObject calls counted with a botocore event hook); the
worker-process tests run real `python -m gpu_worker` processes (fake engine) on a moto server,
as two tasks on one instance would start.
"""

from __future__ import annotations

import filecmp
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchctl.local import LocalStack
from batchctl.moto_server import start_moto_server, stop_moto_server
from gpu_worker.engines.tiny_model import ensure_tiny_model
from gpu_worker.model_weights import MARKER, ModelCopy, fetch_model, parse_s3_uri
from tests.conftest import worker_process

BUCKET = "openbatch-models"
PREFIX = "models/tiny/"
URI = f"s3://{BUCKET}/{PREFIX}"
BIG = 9 * 1024 * 1024  # past boto3's 8 MiB multipart threshold: ranged GETs in parallel


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, with a nested folder and a large file as real models have."""
    # A directory of this module's own: parallel test processes never build into one.
    model = ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    nested = model / "extra" / "nested"
    nested.mkdir(parents=True, exist_ok=True)
    (nested / "notes.txt").write_text("a file in a subfolder")
    (model / "big.bin").write_bytes(os.urandom(BIG))
    return model


def upload(s3: Any, model: Path, prefix: str = PREFIX) -> list[str]:
    keys = []
    for path in sorted(model.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(model).as_posix()
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys


def count_gets(s3: Any) -> list[str]:
    """The keys of every GetObject call the client makes from now on."""
    gets: list[str] = []
    s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    return gets


def assert_identical(copy: Path, model: Path) -> None:
    files = sorted(p.relative_to(model) for p in model.rglob("*") if p.is_file())
    copied = sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    assert copied == sorted([*files, Path(MARKER)])
    _, mismatch, errors = filecmp.cmpfiles(model, copy, [str(f) for f in files], shallow=False)
    assert (mismatch, errors) == ([], [])


@pytest.fixture
def s3(tiny_model: Path) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        upload(client, tiny_model)
        yield client


def test_the_copy_is_byte_identical_and_a_second_start_downloads_nothing(
    s3: Any, tiny_model: Path, tmp_path: Path
) -> None:
    gets = count_gets(s3)
    first = fetch_model(s3, URI, tmp_path)
    assert first.downloaded and first.total_bytes > BIG
    assert_identical(first.path, tiny_model)
    assert gets.count(PREFIX + "big.bin") > 1  # boto3's managed transfer, in parts
    assert {key for key in gets} == {
        PREFIX + p.relative_to(tiny_model).as_posix() for p in tiny_model.rglob("*") if p.is_file()
    }

    gets.clear()
    second = fetch_model(s3, URI, tmp_path)
    assert (second.path, second.downloaded, gets) == (first.path, False, [])


def test_a_changed_object_triggers_a_new_copy(s3: Any, tiny_model: Path, tmp_path: Path) -> None:
    first = fetch_model(s3, URI, tmp_path)
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "extra/nested/notes.txt", Body=b"rewritten")
    gets = count_gets(s3)
    second = fetch_model(s3, URI, tmp_path)
    assert second.downloaded and second.path == first.path
    assert (second.path / "extra" / "nested" / "notes.txt").read_bytes() == b"rewritten"
    assert PREFIX + "extra/nested/notes.txt" in gets
    assert filecmp.cmp(second.path / "config.json", tiny_model / "config.json", shallow=False)
    gets.clear()
    assert not fetch_model(s3, URI, tmp_path).downloaded and gets == []


def crash_during_copy(s3: Any, cache: Path) -> None:
    """A worker killed (SIGKILL: nothing cleans up) after two of its files were written."""
    download = s3.download_file
    done: list[str] = []

    def then_die(bucket: str, key: str, filename: str, **options: Any) -> None:
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        download(bucket, key, filename, **options)
        done.append(key)

    s3.download_file = then_die
    fetch_model(s3, URI, cache, threads=1)


def test_a_half_finished_copy_is_never_used(s3: Any, tiny_model: Path, tmp_path: Path) -> None:
    # A forked child shares moto's in-memory S3 as it was at the fork.
    child = multiprocessing.get_context("fork").Process(
        target=crash_during_copy, args=(s3, tmp_path)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    name = parse_s3_uri(URI).directory_name
    (partial,) = tmp_path.glob(f".{name}.partial-*")  # what the crash left
    assert len([p for p in partial.rglob("*") if p.is_file()]) == 2
    assert not (tmp_path / name).exists()

    gets = count_gets(s3)
    copy = fetch_model(s3, URI, tmp_path)
    assert copy.downloaded and copy.path == tmp_path / name
    assert_identical(copy.path, tiny_model)
    assert len(set(gets)) == copy.files  # every file again, none taken from the leftover
    assert not partial.exists()  # and the leftover is gone


def test_two_workers_starting_at_once_download_once(
    s3: Any, tiny_model: Path, tmp_path: Path
) -> None:
    gets = count_gets(s3)
    download = s3.download_file

    def slow_download(bucket: str, key: str, filename: str, **options: Any) -> None:
        time.sleep(0.05)  # widen the window in which the other worker would start its own
        download(bucket, key, filename, **options)

    s3.download_file = slow_download
    start = threading.Barrier(2)
    copies: list[ModelCopy] = []

    def start_worker() -> None:
        start.wait()
        copies.append(fetch_model(s3, URI, tmp_path))

    workers = [threading.Thread(target=start_worker) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(copy.downloaded for copy in copies) == [False, True]
    assert copies[0].path == copies[1].path
    keys = [p.relative_to(tiny_model).as_posix() for p in tiny_model.rglob("*") if p.is_file()]
    small = [PREFIX + key for key in keys if key != "big.bin"]
    assert sorted(key for key in gets if key != PREFIX + "big.bin") == sorted(small)
    assert_identical(copies[0].path, tiny_model)


# -- real worker processes ------------------------------------------------------------


@pytest.fixture(scope="module")
def server_stack(tiny_model: Path) -> Iterator[LocalStack]:
    """The stack on a moto server, with the tiny model in a bucket of its own."""
    server, url = start_moto_server(execute_state_machines=False)
    try:
        with LocalStack(None, served_models=["tiny"], endpoint_url=url) as stack:
            s3 = stack.session.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            upload(s3, tiny_model)
            s3.put_object(Bucket=BUCKET, Key="models/empty/", Body=b"")  # a folder, no model
            yield stack
    finally:
        stop_moto_server(server)


def start_worker(model: str, cache: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,  # the stack's AWS_ENDPOINT_URL, table, bucket and queue names
        "ENGINE": "fake",
        "MODEL": model,
        "MODEL_CACHE_DIR": str(cache),
        "WORKER_WAIT_SECONDS": "0",
        "WORKER_IDLE_EXIT_SECONDS": "1",
        "POWERTOOLS_METRICS_DISABLED": "false",  # the EMF lines on stdout
    }
    env.pop("SERVED_MODEL_NAME", None)
    return worker_process(env)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def test_two_worker_processes_on_one_instance_download_once(
    server_stack: LocalStack, tiny_model: Path, tmp_path: Path
) -> None:
    workers = [start_worker(URI, tmp_path) for _ in range(2)]
    results = [finish(worker) for worker in workers]
    assert [code for code, _ in results] == [0, 0], results
    outputs = [output for _, output in results]
    copied = [output for output in outputs if "copied" in output and "bytes in" in output]
    cached = [output for output in outputs if "using the cached copy" in output]
    assert (len(copied), len(cached)) == (1, 1), outputs
    assert "ModelDownloadSeconds" in copied[0] and "ModelDownloadSeconds" not in cached[0]
    # SERVED_MODEL_NAME unset: the folder's name, not the copy's path.
    assert all('"served_model":"tiny"' in output.replace(" ", "") for output in outputs)
    (copy,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert_identical(copy, tiny_model)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"s3://{BUCKET}/models/empty/", "the prefix holds no objects"),
        ("s3://no-such-bucket/models/tiny/", "NoSuchBucket"),
    ],
    ids=["empty-prefix", "no-such-bucket"],
)
def test_a_worker_without_a_model_on_s3_exits_1_naming_the_uri(
    server_stack: LocalStack, tmp_path: Path, model: str, message: str
) -> None:
    code, output = finish(start_worker(model, tmp_path))
    assert code == 1, output
    assert model in output and message in output
    assert "cannot load the model" in output
