"""batchctl's summary of a finished batch shows its GPU time and cost, read from the SDK's
Batch, which keeps our extension fields as extras."""

from __future__ import annotations

import pytest
from openai.types import Batch

from batchctl.progress import print_summary


def sdk_batch(**extra: object) -> Batch:
    return Batch.model_validate(
        {
            "id": "batch_1",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file_1",
            "completion_window": "24h",
            "status": "completed",
            "created_at": 1,
            **extra,
        }
    )


def test_the_summary_shows_gpu_time_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    print_summary(sdk_batch(gpu_seconds=123.4567, estimated_cost=0.0345))
    assert "  GPU time   123.5 GPU-seconds, estimated $0.0345" in capsys.readouterr().out


def test_an_older_server_without_them_shows_no_cost_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_summary(sdk_batch())
    assert "GPU time" not in capsys.readouterr().out
