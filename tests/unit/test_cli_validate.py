"""`batchctl validate FILE`: intake's validation offline, every error printed, nothing created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchctl.cli import main
from tests.conftest import EXAMPLES, chat_request, write_jsonl


def test_a_valid_file_exits_0_with_an_estimate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["validate", str(EXAMPLES / "chat.jsonl"), "--shard-size", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "would run" in out
    assert "valid requests   20" in out
    assert "shards           3" in out  # 20 requests at 8 per shard
    assert "model            demo-model" in out
    chars = sum(
        len(message["content"])
        for line in (EXAMPLES / "chat.jsonl").read_text().splitlines()
        for message in json.loads(line)["body"]["messages"]
    )
    assert f"prompt tokens    ~{(chars + 3) // 4} " in out


def test_every_bad_line_is_printed_and_the_exit_code_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [chat_request("a"), "{", chat_request("a"), *["[]"] * 1500, chat_request("b")]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "line 2: [invalid_json_line]" in out
    assert "line 3: [duplicate_custom_id] The custom_id 'a' appears more than once" in out
    assert "(param: custom_id)" in out
    # All of them, beyond the 1,000 a Batch object carries.
    assert out.count("[invalid_json_line]") == 1501
    assert "line 1503: [invalid_json_line]" in out
    assert "would FAIL validation" in out


def test_skip_mode_and_served_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [chat_request("a"), chat_request("b", model="x")])
    assert main(["validate", str(path), "--served-model", "demo-model"]) == 1
    assert "[model_not_found]" in capsys.readouterr().out
    assert (
        main(["validate", str(path), "--served-model", "demo-model", "--invalid-lines", "skip"])
        == 0
    )
    assert "bad lines        1 (skipped)" in capsys.readouterr().out


def test_an_endpoint_option_applies_to_lines_without_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(
        tmp_path / "e.jsonl", [{"custom_id": "a", "body": {"model": "m", "input": "x"}}]
    )
    assert main(["validate", str(path), "--endpoint", "embeddings"]) == 0
    assert "endpoint         /v1/embeddings" in capsys.readouterr().out
    assert main(["validate", str(path), "--endpoint", "images"]) == 2


def test_a_missing_file_is_a_tool_error(tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 2


def test_the_progress_meter_shows_counts_rate_and_eta() -> None:
    from openai.types import Batch

    from batchctl.progress import ProgressMeter

    def snapshot(done: int, tokens: int) -> Batch:
        return Batch.model_validate(
            {
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "in_progress",
                "created_at": 0,
                "request_counts": {"total": 100, "completed": done, "failed": 2},
                "usage": {
                    "input_tokens": 0,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": tokens,
                },
            }
        )

    meter = ProgressMeter(width=10)
    first = meter.line(snapshot(8, 0), now=100.0)
    assert first.startswith("[#.........] 10/100 done, 2 failed") and "ETA" not in first
    later = meter.line(snapshot(48, 4000), now=110.0)
    # 40 requests and 4,000 tokens in 10 s: 50 left at 4 requests/s.
    assert later == "[#####.....] 50/100 done, 2 failed, 400 tok/s, ETA 12s  in_progress"


def test_estimate_prints_a_cost_range_from_the_work_and_the_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ten requests (their work tokens as dry_run counts them), on 2-GPU engines at 1000
    # tokens/s and $3.60 per GPU-hour.
    path = write_jsonl(tmp_path / "cost.jsonl", [chat_request(f"r{i}") for i in range(10)])
    code = main(["validate", str(path)])
    plain = capsys.readouterr().out
    assert "estimated cost" not in plain  # only when asked
    work = int(plain.split("work tokens      ~")[1].split()[0])
    args = ["--estimate", "--tokens-per-second", "1000", "--gpus", "2"]
    code = main(["validate", str(path), *args, "--gpu-hourly-price", "3.6"])
    out = capsys.readouterr().out
    assert code == 0, out
    low, high = work / 1500 * 2, work / 500 * 2  # GPU-seconds at 1000 tokens/s +-50 %
    assert f"GPU time         {low:,.1f} - {high:,.1f} GPU-seconds" in out
    assert f"estimated cost   ${low / 1000:.4f} - ${high / 1000:.4f}" in out  # $3.6/3600 s


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--tokens-per-second", "0"),
        ("--tokens-per-second", "-5"),
        ("--tokens-per-second", "inf"),
        ("--gpu-hourly-price", "-1"),
        ("--gpu-hourly-price", "nan"),
    ],
)
def test_an_estimate_refuses_a_throughput_or_price_that_cannot_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """A zero throughput would divide by zero, a negative one or price print a negative
    cost: argparse refuses them, with the option named."""
    path = write_jsonl(tmp_path / "cost.jsonl", [chat_request("r0")])
    with pytest.raises(SystemExit) as refused:
        main(["validate", str(path), "--estimate", option, value])
    assert refused.value.code == 2
    assert option in capsys.readouterr().err
