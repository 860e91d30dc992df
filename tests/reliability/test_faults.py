"""Injected AWS throttling and transient errors on DynamoDB, S3 and SQS (some after the call
took effect): retried with backoff, nothing lost, nothing counted twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.local import LocalStack
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import MODEL, chat_request, lines_of, write_jsonl
from tests.reliability.conftest import record, scale
from tests.reliability.faults import aws_faults

pytestmark = pytest.mark.reliability
BATCHES = scale(3, 8)
REQUESTS = 40


def test_batches_come_out_exact_under_injected_aws_faults(tmp_path: Path) -> None:
    exact = 0
    with (
        aws_faults(rate=0.05, lost_rate=0.01) as faults,
        LocalStack(FakeEngine(MODEL), shard_size=8, part_size=3) as stack,
    ):
        names = [
            stack.drop(
                write_jsonl(
                    tmp_path / f"f{b}.jsonl",
                    [chat_request(f"b{b}-{i}") for i in range(REQUESTS)],
                )
            )
            for b in range(BATCHES)
        ]
        for index, name in enumerate(names):
            final = stack.wait_for_outbox(name, timeout=180)
            counts = final.request_counts
            paths = stack.download_outbox(name, tmp_path / f"out{index}")
            output = lines_of(paths["output.jsonl"])
            ids = sorted(line["custom_id"] for line in output)
            if (
                final.status == "completed"
                and (counts.total, counts.completed, counts.failed) == (REQUESTS, REQUESTS, 0)
                and ids == sorted(f"b{index}-{i}" for i in range(REQUESTS))
            ):
                exact += 1
        errors = list(stack.handler_errors)
    record("AWS faults", "calls to DynamoDB, S3, SQS", faults.calls)
    record("AWS faults", "refused (throttled / 5xx)", faults.refused, faults.refused > 0)
    record("AWS faults", "done, then the answer lost", faults.lost, faults.lost > 0)
    record("AWS faults", "batches exact / run", f"{exact}/{BATCHES}", exact == BATCHES)
    assert exact == BATCHES
    assert faults.refused > 0 and faults.lost > 0
    assert errors == [] or all("retries" in str(e).lower() for e in errors), errors
