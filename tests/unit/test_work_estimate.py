"""Issue 25, finding 4: what a line declares (`max_tokens` x `n`) cannot inflate the work
estimate the scheduler, DeadlinePressure and the at-risk check all use.

20 lines with `max_tokens` 20,000 and `n` 128 were once estimated at 51 M tokens (0.4 M
produced): a 1 h batch of them sent DeadlinePressure 7.1 (scale-out starts at 0.5), and
`max_tokens` 2**63-1 held the fleet at its maximum. A request's output is now planned at no
more than its model's context window less its prompt per choice, and the whole request at
no more than one context window.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from batch_core.json_bounds import MAX_JSON_INTEGER
from batch_core.sharding import (
    DEFAULT_CONTEXT_TOKENS,
    PlannedShard,
    ShardBounds,
    ShardPlanner,
    dry_run,
    estimate_work,
)
from batch_core.validation import BatchValidator, ValidLine, iter_lines

CONTEXT = 32_768


def chat(custom_id: str, content: str = "hi", **body: Any) -> bytes:
    messages = [{"role": "user", "content": content}]
    line = {"custom_id": custom_id, "body": {"model": "m", "messages": messages, **body}}
    return json.dumps(line).encode()


def valid_lines(lines: list[bytes], endpoint: str | None = None) -> list[ValidLine]:
    validator = BatchValidator(endpoint=endpoint)
    valid = list(validator.validate(iter_lines([b"\n".join(lines) + b"\n"])))
    assert validator.report().ok, validator.report().errors
    return valid


def test_twenty_greedy_lines_are_estimated_within_a_window_each() -> None:
    lines = [chat(f"r{i}", max_tokens=20_000, n=128) for i in range(20)]
    bounds = ShardBounds(context_tokens=CONTEXT)
    validator = BatchValidator(endpoint=None)
    planned = dry_run(iter_lines([b"\n".join(lines) + b"\n"]), validator, bounds)
    assert planned.report.ok
    # Once 20 x 20,000 x 128 = 51.2 M tokens; now at most one context window a request.
    assert planned.work_tokens <= 20 * CONTEXT
    assert planned.work_tokens >= 20 * 20_000  # still at least one choice's full budget


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": MAX_JSON_INTEGER, "n": 128},
        {"max_completion_tokens": MAX_JSON_INTEGER, "n": 128},
        {"max_tokens": MAX_JSON_INTEGER},
    ],
)
def test_the_largest_integer_gives_a_finite_clamped_estimate(body: dict[str, Any]) -> None:
    # Twice: the first line takes the checking path, the second the fast one.
    for line in valid_lines([chat("a", **body), chat("b", **body)]):
        work = estimate_work(line, 256, CONTEXT)
        assert 0 < work <= CONTEXT


def test_responses_max_output_tokens_is_clamped_too() -> None:
    line = json.dumps(
        {"custom_id": "r", "body": {"model": "m", "input": "x", "max_output_tokens": 10**18}}
    ).encode()
    (valid,) = valid_lines([line], endpoint="/v1/responses")
    assert estimate_work(valid, 256, CONTEXT) <= CONTEXT


def test_output_is_clamped_to_what_the_context_leaves_after_the_prompt() -> None:
    (long_prompt,) = valid_lines([chat("a", "w" * 4000, max_tokens=100_000)])  # ~1,000 tokens
    assert estimate_work(long_prompt, 256, 8192) == 8192  # 1,000 prompt + 7,192 output
    (no_limit,) = valid_lines([chat("a", "w" * 4000)])  # the default budget, clamped as well
    assert estimate_work(no_limit, 20_000, 8192) == 8192
    (over,) = valid_lines([chat("a", "w" * 40_000, max_tokens=5)])  # a prompt past the window
    assert estimate_work(over, 256, 8192) == 8192  # the engine refuses it: it costs no more


def test_modest_requests_are_estimated_as_before() -> None:
    (small,) = valid_lines([chat("a", "w" * 8, max_tokens=5, n=2)])
    assert estimate_work(small, 256, CONTEXT) == 2 + 10
    (default,) = valid_lines([chat("a", "w" * 8, n=3)])
    assert estimate_work(default, 256, CONTEXT) == 2 + 3 * 256
    assert estimate_work(small, 256) == estimate_work(small, 256, DEFAULT_CONTEXT_TOKENS)


def test_the_planner_takes_the_models_context_once_it_knows_the_model() -> None:
    lines = valid_lines([chat(f"r{i}", max_tokens=MAX_JSON_INTEGER, n=128) for i in range(3)])
    shards: list[PlannedShard] = []
    asked: list[int] = []

    def context() -> int:
        asked.append(1)
        return 4096

    planner = ShardPlanner(shards.append, ShardBounds(), context_tokens=context)
    planner.add_all(lines)
    planner.close()
    assert sum(s.work_tokens for s in shards) == 3 * 4096
    assert asked == [1]  # once, not once a line
