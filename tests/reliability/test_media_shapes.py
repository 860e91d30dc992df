"""Media URLs in every shape (issue 25, finding 12): the 18 URL-bearing shapes of
tests/unit/test_media_shapes.py, each with the instance metadata service's URL, dropped
through the local stack's intake (one file per endpoint), then written straight into a
running batch's shard (data at rest, past intake) for the worker's walk."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_core import s3keys
from batch_core.models import Batch
from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, drop_requests, lines_of, write_jsonl
from tests.reliability.conftest import record
from tests.unit.test_media_shapes import INTERNAL_URL, SHAPES, Shape, shape_line

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # No worker until a shard has been damaged; one shard holds every shape.
    with LocalStack(FakeEngine(MODEL), worker_count=0, shard_size=32, part_size=8) as local:
        yield local


def test_every_media_shape_is_refused_at_intake(stack: LocalStack, tmp_path: Path) -> None:
    by_endpoint: dict[str, list[Shape]] = defaultdict(list)
    for shape in SHAPES:
        by_endpoint[shape.endpoint].append(shape)
    refused: list[str] = []
    for number, shapes in enumerate(by_endpoint.values()):
        lines = [
            shape_line(shape, INTERNAL_URL, model=MODEL, custom_id=f"s{i}")
            for i, shape in enumerate(shapes)
        ]
        name = stack.drop(write_jsonl(tmp_path / f"shapes{number}.jsonl", lines))
        final = _wait_for(stack, name, {"failed", "in_progress"})  # in progress: let through
        errors = {(e.line, e.code, e.param) for e in (final.errors.data if final.errors else [])}
        refused += [
            shape.name
            for line, shape in enumerate(shapes, start=1)
            if (line, "media_url_refused", shape.param) in errors
        ]
    record("security", "media shapes refused at intake", f"{len(refused)}/{len(SHAPES)}",
           len(refused) == len(SHAPES))  # fmt: skip
    assert sorted(refused) == sorted(shape.name for shape in SHAPES)


def test_the_worker_refuses_every_media_shape_that_reached_a_shard(
    stack: LocalStack, tmp_path: Path
) -> None:
    count = len(SHAPES) + 2  # two ordinary requests run beside them
    name = drop_requests(stack, tmp_path, count, "walk")
    batch_id = _wait_for(stack, name, {"in_progress"}).id
    key = s3keys.shard_key(batch_id, 0)
    lines = stack.stages.store.read(key).splitlines()
    assert len(lines) == count
    for index, shape in enumerate(SHAPES):
        request = shape_line(shape, INTERNAL_URL, model=MODEL, custom_id=f"r{index}")
        lines[index] = json.dumps(
            {"line": index + 1, "url": shape.endpoint, "request": request}
        ).encode()
    stack.stages.store.put(key, b"\n".join(lines) + b"\n")
    stack.start_worker()
    final = stack.wait_for_outbox(name, timeout=60)
    errors = lines_of(stack.download_outbox(name, tmp_path / "out")["errors.jsonl"])
    params = {
        line["custom_id"]: line["response"]["body"]["error"]["param"]
        for line in errors
        if line["response"]["body"]["error"]["code"] == "media_url_refused"
    }
    refused = [shape.name for i, shape in enumerate(SHAPES) if params.get(f"r{i}") == shape.param]
    record("security", "media shapes refused by the worker's walk",
           f"{len(refused)}/{len(SHAPES)}", len(refused) == len(SHAPES))  # fmt: skip
    assert sorted(refused) == sorted(shape.name for shape in SHAPES)
    counts = final.request_counts
    assert (final.status, counts.completed, counts.failed) == ("completed", 2, len(SHAPES))
    assert stack.handler_errors == []


def _wait_for(stack: LocalStack, name: str, statuses: set[str]) -> Batch:
    deadline = time.monotonic() + 30
    while (batch := stack.outbox_batch(name)) is None or batch.status not in statuses:
        assert time.monotonic() < deadline, f"intake did not finish: {batch}"
        time.sleep(0.05)
    return batch
