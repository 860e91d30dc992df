"""batchctl: the command line.

`batchctl validate FILE` checks a JSONL file offline exactly as intake would, prints every
bad line (number, code, param, message) and an estimate of requests, tokens and shards, and
creates nothing. Exit 0 when the batch would run, 1 when it would fail validation.

`batchctl local run FILE --out DIR [--engine vllm|fake] [--model M]` runs one batch through the
whole pipeline locally and writes DIR/batch.json, DIR/output.jsonl and DIR/errors.jsonl.
It exits 0 whenever the batch reached a terminal status (`failed` included: that is the
batch's answer) and non-zero only when the tool itself could not run.

`batchctl local serve --port P --api-key K` serves the OpenAI-compatible API locally (moto, the
event routing and a worker behind it) until interrupted.

`batchctl submit|status|list|cancel|results|retry` talk to a deployed API or the local server
(`--base-url`, `--api-key`, or OPENAI_BASE_URL / OPENAI_API_KEY). `submit --wait` and
`retry --wait` exit 0 when the batch completed and 1 when it ended otherwise.

`batchctl keys create --tenant T` creates an API key (stored as a hash) in the table that
TABLE_NAME names, and prints it once; `batchctl keys revoke KEY` removes one.
`batchctl tenants set T --max-active-batches N ...` gives a tenant limits of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from batch_core.drop_options import parse_endpoint
from batch_core.errors import BatchCoreError, InvalidRequestError
from batch_core.protocol import Engine
from batch_core.sharding import ShardBounds, dry_run
from batch_core.validation import BatchValidator, RejectedLine, ValidationLimits, iter_lines
from batchctl.api_commands import add_api_commands
from batchctl.arguments import port, positive, seconds
from batchctl.cost_estimate import add_estimate_arguments, print_estimate
from batchctl.engine_log import EngineLog
from batchctl.exit_codes import EXIT_NOT_COMPLETED, EXIT_OK, EXIT_TOOL_ERROR
from batchctl.model_commands import add_model_commands
from batchctl.progress import ProgressPrinter, print_summary
from batchctl.tenant_commands import add_tenant_commands


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (and exit code 2), not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_TOOL_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchctl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    local = commands.add_parser("local", help="run the pipeline locally on moto")
    local_commands = local.add_subparsers(dest="local_command", required=True, parser_class=_Parser)
    run = local_commands.add_parser("run", help="run one JSONL file to a terminal status")
    run.add_argument("file", type=Path, help="the JSONL input file")
    run.add_argument("--out", type=Path, required=True, help="where to write the results")
    run.add_argument("--engine", choices=["vllm", "fake"], default="vllm")
    run.add_argument(
        "--model",
        action="append",
        help="model the worker serves: a local directory or hub id for vllm (default: MODEL, or "
        "a tiny offline model), the name it answers to for fake; repeat it for more models, "
        "each with its own shard queues and worker",
    )
    run.add_argument(
        "--served-model-name",
        help="the name requests must use (vLLM's --served-model-name; default: --model)",
    )
    run.add_argument("--shard-size", type=positive, help="requests per shard (default: settings)")
    run.add_argument("--timeout", type=seconds, default=3600, help="seconds to wait for the batch")
    run.add_argument("--verbose", action="store_true", help="show the engine's own log here")
    run.set_defaults(run=_local_run)

    serve = local_commands.add_parser("serve", help="serve the HTTP API locally")
    serve.add_argument("--port", type=port, default=8000, help="0 picks a free port")
    serve.add_argument("--api-key", required=True, help="the key clients send (tenant: default)")
    serve.add_argument("--engine", choices=["vllm", "fake"], default="vllm")
    serve.add_argument("--model", action="append", help="as for local run (repeatable)")
    serve.add_argument("--served-model-name")
    serve.add_argument("--shard-size", type=positive, help="requests per shard (default: settings)")
    serve.add_argument("--verbose", action="store_true", help="show the engine's own log here")
    serve.set_defaults(run=_local_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    create_key = key_commands.add_parser("create", help="create a key and print it once")
    create_key.add_argument("--tenant", required=True)
    create_key.add_argument("--name", default="", help="a note to recognize the key by")
    create_key.set_defaults(run=_create_key)
    revoke_key = key_commands.add_parser("revoke", help="revoke a key: it stops working at once")
    revoke_key.add_argument("key")
    revoke_key.set_defaults(run=_revoke_key)

    add_api_commands(commands)
    add_model_commands(commands)
    add_tenant_commands(commands)

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
    validate.add_argument("--shard-size", type=positive, default=defaults.max_requests)
    validate.add_argument("--shard-tokens", type=positive, default=defaults.max_work_tokens)
    validate.add_argument(
        "--max-requests", type=positive, default=ValidationLimits().max_requests, help="batch limit"
    )
    add_estimate_arguments(validate)
    validate.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every command is its parser's `run`; a value one refuses is one line and exit code 2."""
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except BatchCoreError as refused:
        print(f"batchctl: {refused}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug or the machine: still one line (the traceback on ask)
        if os.environ.get("BATCHCTL_TRACEBACK"):
            raise
        print(
            f"batchctl: {type(error).__name__}: {error} (BATCHCTL_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_TOOL_ERROR


def _start_engines(args: argparse.Namespace, log_path: Path) -> list[Engine] | None:
    """The engines `local run` / `local serve` asked for, one per `--model` (the first is the
    stack's own); None (after saying why) if one fails. Their own output goes to `log_path`
    unless `--verbose`."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if not args.verbose else "WARNING")
    from gpu_worker.engines import load_engine
    from gpu_worker.settings import EngineSettings

    models: list[str | None] = list(args.model or [os.environ.get("MODEL") or None])
    log = None if args.verbose else EngineLog(log_path)
    say = log.say if log else print
    started = time.monotonic()
    if log is not None:
        log.start()
    say(f"Starting the {args.engine} engine" + (f" (its log: {log_path})" if log else "") + " ...")
    engines: list[Engine] = []
    try:
        for index, model in enumerate(models):
            name = args.served_model_name if index == 0 else None
            fake_name = model if args.engine == "fake" else None
            settings = EngineSettings(
                engine=args.engine, model=model, served_model_name=name or fake_name
            )
            engines.append(load_engine(settings))
    except Exception as error:
        if log is not None:
            log.keep_terminal()
        for engine in engines:
            engine.close()
        print(
            f"batchctl: could not start the {args.engine} engine: {error}"
            + (f" (details in {log_path})" if log else ""),
            file=sys.stderr,
        )
        return None
    if log is not None:
        log.keep_terminal()
    if getattr(engines[0], "is_tiny_model", False):
        print(
            "Note: no MODEL given, so the worker serves a tiny random Llama built offline. "
            "Its text is meaningless; it only proves the wiring. Use MODEL=<dir or hub id>.",
            flush=True,
        )
    served = ", ".join(repr(engine.served_model) for engine in engines)
    print(f"Engine ready ({time.monotonic() - started:.0f} s), serving {served}.")
    return engines


def _local_serve(args: argparse.Namespace) -> int:
    from batch_core.auth import check_key
    from batchctl.server import serve_locally

    check_key(args.api_key)  # before the engine takes its minute to start
    engines = _start_engines(args, Path("out") / "local-serve" / "engine.log")
    if engines is None:
        return EXIT_TOOL_ERROR
    engine, more = engines[0], engines[1:]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        with serve_locally(
            engine,
            api_keys={args.api_key: "default"},
            port=args.port,
            shard_size=args.shard_size,
            more_models=more,
        ) as (stack, server):
            s3 = os.environ["AWS_ENDPOINT_URL"]
            print(
                f"""
API      {server.base_url}
         OpenAI(base_url="{server.base_url}", api_key="{args.api_key}")
         export OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY={args.api_key}
S3       {s3}  (bucket {stack.bucket}; any credentials)
         aws --endpoint-url {s3} s3 cp prompts.jsonl s3://{stack.bucket}/inbox/
Models   {", ".join(e.served_model for e in engines)}
Ctrl-C stops the server (everything is in memory).""",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                stopping.wait()
    finally:
        for each in engines:
            each.close()
    return EXIT_OK


def _create_key(args: argparse.Namespace) -> int:
    from batch_core.wiring import default_api_keys

    try:
        key = default_api_keys().create(args.tenant, name=args.name)
    except InvalidRequestError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    except Exception as error:  # no table, no credentials: say so, briefly
        print(f"batchctl: could not store the key: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    print(key)
    print(f"(tenant {args.tenant}; shown only now: the table keeps its hash)", file=sys.stderr)
    return EXIT_OK


def _revoke_key(args: argparse.Namespace) -> int:
    from batch_core.wiring import default_api_keys

    try:
        revoked = default_api_keys().revoke(args.key)
    except Exception as error:  # no table, no credentials: say so, briefly
        print(f"batchctl: could not revoke the key: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    if not revoked:
        print("batchctl: no such key", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print("revoked")
    return EXIT_OK


def _local_run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"batchctl: no such file: {args.file}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    from batchctl.local import LocalStack

    engines = _start_engines(args, args.out / "engine.log")
    if engines is None:
        return EXIT_TOOL_ERROR
    try:
        with LocalStack(engines[0], shard_size=args.shard_size, more_models=engines[1:]) as stack:
            name = stack.drop(args.file)
            print(f"Dropped {args.file} into s3://{stack.bucket}/inbox/{name}.jsonl", flush=True)
            run_started = time.monotonic()
            printer = ProgressPrinter()
            batch = stack.wait_for_outbox(
                name,
                timeout=args.timeout,
                on_progress=lambda snapshot: printer.show(snapshot, time.monotonic()),
            )
            printer.finish()
            paths = stack.download_outbox(name, args.out)
    except TimeoutError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    finally:
        for engine in engines:
            engine.close()
    print_summary(batch, seconds=time.monotonic() - run_started, paths=paths.values())
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"batchctl: no such file: {args.file}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    endpoint = parse_endpoint(args.endpoint) if args.endpoint else None

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
    if args.estimate:
        print_estimate(result.work_tokens, args)
    return EXIT_OK if runnable else EXIT_NOT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
