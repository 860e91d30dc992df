"""AWS calls per 1,000 requests: one batch end to end on moto with the fake engine.

    python -m bench.aws_calls [--requests 10000] [--seconds-per-request S] [--shard-size N]

Every botocore API call the pipeline makes while the batch runs is counted by service and
operation: the validate and finalize functions, the worker, and the SQS polls that Lambda's
event source mappings would make (the local stack makes them). Listed apart: the user's own
calls (the drop, the reads of the outbox while waiting), the tracker's state machine's (moto's
interpreter makes them through botocore: every second locally, every TrackerPollSeconds in
AWS), and long polls of an empty queue (they depend on idle time, not on the batch). Issue 5's
target is <= 5 calls per 1,000 requests."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from botocore.client import BaseClient

MODEL = "bench-model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument(
        "--seconds-per-request",
        type=float,
        default=0.0,
        help="the fake engine's pace: above 0 a shard outlasts RESULTS_PART_SECONDS and is "
        "written in timed parts, as on a GPU (what live progress costs)",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="requests per shard (default: the planner's, one shard for 10,000 chats); a "
        "batch of more than ShardsAheadPerBatch shards shows what taking turns costs",
    )
    args = parser.parse_args()

    from batchctl.local import LocalStack
    from gpu_worker.engines.fake import FakeEngine

    calls: Counter[tuple[str, str]] = Counter()
    idle_polls = Counter[str]()
    lock = threading.Lock()
    original = getattr(BaseClient, "_make_api_call")  # noqa: B009 - patched, then restored

    user_calls = Counter[str]()
    tracker_polls = Counter[str]()

    def counting(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        response = original(self, operation, params)
        service = self.meta.service_model.service_name
        with lock:
            if _from_moto_step_functions():
                # The tracker's ASL polls, which moto's interpreter makes through botocore:
                # locally every second, in AWS every TrackerPollSeconds (and not billed as
                # API calls of ours).
                tracker_polls[operation] += 1
            elif threading.current_thread() is threading.main_thread():
                # The user's: the drop and the reads of outbox/<name>/batch.json while waiting
                # (their number follows the polling interval, not the pipeline).
                user_calls[operation] += 1
            elif operation == "ReceiveMessage" and not response.get("Messages"):
                idle_polls[service] += 1
            else:
                calls[(service, operation)] += 1
        return response

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.jsonl"
        with path.open("w") as out:
            for i in range(args.requests):
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Say hello to number {i}."}],
                    "max_tokens": 8,
                }
                out.write(
                    json.dumps({"custom_id": f"r{i}", "url": "/v1/chat/completions", "body": body})
                    + "\n"
                )
        engine = FakeEngine(MODEL, seconds_per_request=args.seconds_per_request)
        with LocalStack(engine, poll_seconds=1, shard_size=args.shard_size) as stack:
            setattr(BaseClient, "_make_api_call", counting)  # noqa: B010
            try:
                started = time.perf_counter()
                name = stack.drop(path)
                batch = stack.wait_for_outbox(name, timeout=1800)
                seconds = time.perf_counter() - started
            finally:
                setattr(BaseClient, "_make_api_call", original)  # noqa: B010
    assert batch.status == "completed", batch
    total = sum(calls.values())
    print(
        f"{args.requests} requests, {batch.request_counts.completed} completed in {seconds:.1f} s"
    )
    print(f"{'service':<14} {'operation':<28} {'calls':>7}")
    for (service, operation), count in sorted(calls.items(), key=lambda item: -item[1]):
        print(f"{service:<14} {operation:<28} {count:>7}")
    print(f"\n{total} calls: {1000 * total / args.requests:.1f} per 1,000 requests (target <= 5)")
    print(
        f"(not counted: {sum(idle_polls.values())} long polls of empty queues, {dict(idle_polls)};"
        f" {sum(user_calls.values())} calls of the user dropping the file and watching its"
        f" outbox, {dict(user_calls)}; {sum(tracker_polls.values())} of the tracker's state"
        f" machine, run by moto, {dict(tracker_polls)})"
    )


def _from_moto_step_functions() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "moto/stepfunctions" in frame.f_code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


if __name__ == "__main__":
    main()
