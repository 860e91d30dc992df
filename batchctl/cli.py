"""batchctl: the command line.

`batchctl validate FILE` checks a JSONL file offline exactly as intake would, prints every
bad line (number, code, param, message) and an estimate of requests, tokens and shards, and
creates nothing. Exit 0 when the batch would run, 1 when it would fail validation.

`batchctl local run FILE --out DIR [--engine vllm|fake] [--model M]` runs one batch through the
whole pipeline locally and writes DIR/batch.json, DIR/output.jsonl and DIR/errors.jsonl.
It exits 0 whenever the batch reached a terminal status (`failed` included: that is the
batch's answer) and non-zero only when the tool itself could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from batch_core.drop_options import parse_endpoint
from batch_core.errors import InvalidRequestError
from batch_core.models import Batch
from batch_core.sharding import ShardBounds, dry_run
from batch_core.validation import BatchValidator, RejectedLine, ValidationLimits, iter_lines

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_TOOL_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchctl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="run the pipeline locally on moto")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    run = local_commands.add_parser("run", help="run one JSONL file to a terminal status")
    run.add_argument("file", type=Path, help="the JSONL input file")
    run.add_argument("--out", type=Path, required=True, help="where to write the results")
    run.add_argument("--engine", choices=["vllm", "fake"], default="vllm")
    run.add_argument(
        "--model",
        default=os.environ.get("MODEL") or None,
        help="model the worker serves: a local directory or hub id for vllm (default: a tiny "
        "offline model), the name it answers to for fake",
    )
    run.add_argument(
        "--served-model-name",
        help="the name requests must use (vLLM's --served-model-name; default: --model)",
    )
    run.add_argument("--shard-size", type=int, help="requests per shard (default: settings)")
    run.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the batch")

    validate = commands.add_parser("validate", help="validate a JSONL file offline")
    validate.add_argument("file", type=Path, help="the JSONL input file")
    validate.add_argument(
        "--endpoint", help="the batch's endpoint (default: the lines' url; short names work)"
    )
    validate.add_argument(
        "--served-model",
        action="append",
        default=[],
        help="a model the workers serve (repeatable; default: accept any model)",
    )
    validate.add_argument(
        "--invalid-lines",
        choices=["fail", "skip"],
        default="fail",
        help="fail: any bad line fails the batch (OpenAI); skip: bad lines go to the error file",
    )
    defaults = ShardBounds()
    validate.add_argument("--shard-size", type=int, default=defaults.max_requests)
    validate.add_argument("--shard-tokens", type=int, default=defaults.max_work_tokens)
    validate.add_argument(
        "--max-requests", type=int, default=ValidationLimits().max_requests, help="batch limit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "local" and args.local_command == "run":
        return _local_run(args)
    if args.command == "validate":
        return _validate(args)
    return EXIT_TOOL_ERROR  # pragma: no cover - argparse rejects unknown commands


def _local_run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"batchctl: no such file: {args.file}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from batchctl.local import LocalStack
    from gpu_worker.engines import load_engine
    from gpu_worker.settings import EngineSettings

    settings = EngineSettings(
        engine=args.engine,
        model=args.model,
        served_model_name=args.served_model_name or (args.model if args.engine == "fake" else None),
    )
    started = time.monotonic()
    print(f"Starting the {args.engine} engine ...", flush=True)
    try:
        engine = load_engine(settings)
    except Exception as error:
        print(f"batchctl: could not start the {args.engine} engine: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    if getattr(engine, "is_tiny_model", False):
        print(
            "Note: no MODEL given, so the worker serves a tiny random Llama built offline. "
            "Its text is meaningless; it only proves the wiring. Use MODEL=<dir or hub id>.",
            flush=True,
        )
    print(f"Engine ready ({time.monotonic() - started:.0f} s), serving {engine.served_model!r}.")
    try:
        with LocalStack(engine, shard_size=args.shard_size) as stack:
            name = stack.drop(args.file)
            print(f"Dropped {args.file} into s3://{stack.bucket}/inbox/{name}.jsonl", flush=True)
            run_started = time.monotonic()
            batch = stack.wait_for_outbox(name, timeout=args.timeout, on_progress=_show_progress)
            paths = stack.download_outbox(name, args.out)
    except TimeoutError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    _print_summary(batch, time.monotonic() - run_started, paths)
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"batchctl: no such file: {args.file}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    try:
        endpoint = parse_endpoint(args.endpoint) if args.endpoint else None
    except InvalidRequestError as bad_endpoint:
        print(f"batchctl: {bad_endpoint}", file=sys.stderr)
        return EXIT_TOOL_ERROR

    def show(rejected: RejectedLine) -> None:
        error = rejected.error
        param = f" (param: {error.param})" if error.param else ""
        print(f"line {rejected.line}: [{error.code}] {error.message}{param}")

    validator = BatchValidator(
        endpoint=endpoint,
        served_models=args.served_model,
        limits=ValidationLimits(max_requests=args.max_requests),
        on_rejected=show,
    )
    bounds = ShardBounds(max_requests=args.shard_size, max_work_tokens=args.shard_tokens)
    with args.file.open("rb") as stream:
        chunks = iter(lambda: stream.read(1024 * 1024), b"")
        result = dry_run(iter_lines(chunks, validator.max_line_bytes), validator, bounds)
    report = result.report
    for problem in report.errors:
        if problem.line is None or problem.code == "too_many_requests":
            print(f"file: [{problem.code}] {problem.message}")
    skip = args.invalid_lines == "skip"
    runnable = result.runnable(skip_invalid_lines=skip)
    print()
    print(f"{args.file}: {'would run' if runnable else 'would FAIL validation'}")
    print(f"  lines            {report.lines}")
    print(f"  valid requests   {report.valid_requests}")
    print(f"  bad lines        {report.rejected_lines}" + (" (skipped)" if skip else ""))
    print(f"  endpoint         {report.endpoint}")
    print(f"  model            {report.model}")
    print(f"  prompt tokens    ~{report.estimated_prompt_tokens} (estimated: 4 characters each)")
    print(f"  work tokens      ~{result.work_tokens} (prompt + output budget)")
    print(f"  shards           {result.shards}")
    return EXIT_OK if runnable else EXIT_INVALID


def _show_progress(batch: Batch) -> None:
    counts = batch.request_counts
    done = counts.completed + counts.failed
    print(
        f"  {batch.status:<12} {done}/{counts.total} requests "
        f"({counts.completed} ok, {counts.failed} failed)",
        flush=True,
    )


def _print_summary(batch: Batch, seconds: float, paths: dict[str, Path]) -> None:
    counts = batch.request_counts
    usage = batch.usage
    print()
    print(f"Batch {batch.id}: {batch.status}")
    if batch.errors and batch.errors.data:
        for error in batch.errors.data[:20]:
            print(f"  line {error.line}: [{error.code}] {error.message} (param: {error.param})")
    print(f"  requests   {counts.total}")
    print(f"  succeeded  {counts.completed}")
    print(f"  failed     {counts.failed}")
    if usage:
        print(f"  tokens     {usage.input_tokens} in, {usage.output_tokens} out")
    print(f"  wall time  {seconds:.1f} s")
    for path in paths.values():
        print(f"  {path}")


if __name__ == "__main__":
    sys.exit(main())
