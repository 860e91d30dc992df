"""batchctl's commands against the HTTP API (deployed or `batchctl local serve`), through the
openai SDK: submit, status, list, cancel, results, retry, webhooks.

The base URL and key come from `--base-url` / `--api-key` or, as the openai SDK names them,
`OPENAI_BASE_URL` / `OPENAI_API_KEY`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
from openai.types import Batch, FileObject

from batch_core.drop_options import parse_endpoint
from batch_core.errors import InvalidRequestError
from batchctl.arguments import completion_window, whole_number
from batchctl.exit_codes import EXIT_NOT_COMPLETED, EXIT_OK, EXIT_TOOL_ERROR
from batchctl.progress import ProgressPrinter, print_summary

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def add_api_commands(commands: Any) -> None:
    """Add the API commands to batchctl's subcommand parser."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="the API's base URL, ending in /v1 (default: $OPENAI_BASE_URL)",
    )
    connection.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="the API key (default: $OPENAI_API_KEY)",
    )

    submit = commands.add_parser(
        "submit", parents=[connection], help="upload a JSONL file and create a batch"
    )
    submit.add_argument("file", type=Path)
    submit.add_argument("--endpoint", help="default: the url of the file's first line")
    submit.add_argument(
        "--window", type=completion_window, default="24h", help="completion window, 1h to 7d"
    )
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    submit.add_argument("--wait", action="store_true", help="show progress until it ends")
    submit.add_argument("--out", type=Path, help="with --wait: download the results here")
    submit.set_defaults(run=_with_client(_submit))

    status = commands.add_parser("status", parents=[connection], help="show one batch")
    status.add_argument("batch_id")
    status.set_defaults(run=_with_client(_status))

    listing = commands.add_parser("list", parents=[connection], help="list batches, newest first")
    listing.add_argument("--limit", type=whole_number(1, 100), default=20)
    listing.set_defaults(run=_with_client(_list))

    cancel = commands.add_parser("cancel", parents=[connection], help="cancel a batch")
    cancel.add_argument("batch_id")
    cancel.set_defaults(run=_with_client(_cancel))

    results = commands.add_parser("results", parents=[connection], help="download the results")
    results.add_argument("batch_id")
    results.add_argument("--out", type=Path, default=Path("."), help="directory (default: .)")
    results.add_argument(
        "--partial",
        action="store_true",
        help="while the batch runs: the lines finished so far (*.partial.jsonl)",
    )
    results.add_argument(
        "--custom-id",
        help="print that request's result or error line (readable while the batch runs)",
    )
    results.set_defaults(run=_with_client(_results))

    retry = commands.add_parser(
        "retry", parents=[connection], help="a new batch of a batch's failed requests"
    )
    retry.add_argument("batch_id")
    retry.add_argument("--wait", action="store_true")
    retry.set_defaults(run=_with_client(_retry))

    webhooks = commands.add_parser(
        "webhooks", help="the endpoints that get a signed POST when a batch ends"
    )
    hooks = webhooks.add_subparsers(dest="webhooks_command", required=True)
    add = hooks.add_parser("add", parents=[connection], help="register an endpoint")
    add.add_argument("url", help="an https:// URL")
    add.add_argument(
        "--events",
        default="batch.completed,batch.failed,batch.expired,batch.cancelled",
        help="comma separated (default: all four batch events)",
    )
    add.add_argument("--name", help="default: the URL's host")
    add.set_defaults(run=_with_client(_add_webhook))
    hooks.add_parser("list", parents=[connection], help="list the endpoints").set_defaults(
        run=_with_client(_list_webhooks)
    )
    remove = hooks.add_parser("remove", parents=[connection], help="delete an endpoint")
    remove.add_argument("endpoint_id")
    remove.set_defaults(run=_with_client(_remove_webhook))


ApiCommand = Callable[[openai.OpenAI, argparse.Namespace], int]


def _with_client(command: ApiCommand) -> Callable[[argparse.Namespace], int]:
    """`command` run with an SDK client for the connection arguments; the API's refusals and
    an unreachable API become one line on stderr and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        if not args.base_url or not args.api_key:
            print(
                "batchctl: give --base-url and --api-key (or OPENAI_BASE_URL and OPENAI_API_KEY)",
                file=sys.stderr,
            )
            return EXIT_TOOL_ERROR
        client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
        try:
            return command(client, args)
        except openai.APIStatusError as error:
            print(f"batchctl: {error.status_code}: {_message(error)}", file=sys.stderr)
            return EXIT_TOOL_ERROR
        except openai.APIConnectionError as error:
            print(f"batchctl: cannot reach {args.base_url}: {error}", file=sys.stderr)
            return EXIT_TOOL_ERROR

    return run


def _message(error: openai.APIStatusError) -> str:
    try:
        detail = error.response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return str(error)
    param = f" (param: {detail['param']})" if detail.get("param") else ""
    return f"{detail.get('message')}{param}"


# -- commands --------------------------------------------------------------------------


def _submit(client: openai.OpenAI, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"batchctl: no such file: {args.file}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    # A refused endpoint or pair raises InvalidRequestError: cli.main makes it one line.
    endpoint = parse_endpoint(args.endpoint) if args.endpoint else _first_url(args.file)
    metadata = _pairs(args.metadata)
    uploaded = _upload(client, args.file)
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=args.window,
        metadata=metadata or None,
    )
    print(f"{batch.id}  (file {uploaded.id}, {uploaded.bytes} bytes, {endpoint})", flush=True)
    if not args.wait:
        return EXIT_OK
    final = _wait(client, batch.id)
    if args.out:
        _download(client, final, args.out)
    return EXIT_OK if final.status == "completed" else EXIT_NOT_COMPLETED


def _status(client: openai.OpenAI, args: argparse.Namespace) -> int:
    batch = client.batches.retrieve(args.batch_id)
    print(json.dumps(batch.model_dump(mode="json"), indent=2))
    return EXIT_OK


def _list(client: openai.OpenAI, args: argparse.Namespace) -> int:
    page = client.batches.list(limit=args.limit)
    print(f"{'id':<40} {'status':<12} {'done':>9} {'failed':>7} {'total':>9}  created")
    for batch in page.data:
        counts = batch.request_counts
        done, failed, total = (
            (counts.completed, counts.failed, counts.total) if counts else (0, 0, 0)
        )
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(batch.created_at))
        print(f"{batch.id:<40} {batch.status:<12} {done:>9} {failed:>7} {total:>9}  {created}")
    if page.has_more:
        print(f"(more: --limit {args.limit * 2})")
    return EXIT_OK


def _cancel(client: openai.OpenAI, args: argparse.Namespace) -> int:
    batch = client.batches.cancel(args.batch_id)
    print(f"{batch.id}: {batch.status}")
    return EXIT_OK


def _results(client: openai.OpenAI, args: argparse.Namespace) -> int:
    if args.custom_id is not None:
        return _custom_id_result(client, args.batch_id, args.custom_id)
    if args.partial:
        return _partial_results(client, args.batch_id, args.out)
    batch = client.batches.retrieve(args.batch_id)
    if batch.status not in TERMINAL:
        print(
            f"batchctl: {batch.id} is {batch.status}; its files exist once it ends "
            "(use --partial for the lines finished so far)",
            file=sys.stderr,
        )
        return EXIT_NOT_COMPLETED
    _download(client, batch, args.out)
    return EXIT_OK


def _retry(client: openai.OpenAI, args: argparse.Namespace) -> int:
    response = client.post(f"/batches/{args.batch_id}/retry", cast_to=httpx.Response, body={})
    child = Batch.model_validate(response.json())
    print(f"{child.id}  (retry of {args.batch_id})", flush=True)
    if not args.wait:
        return EXIT_OK
    final = _wait(client, child.id)
    return EXIT_OK if final.status == "completed" else EXIT_NOT_COMPLETED


def _add_webhook(client: openai.OpenAI, args: argparse.Namespace) -> int:
    events = [event.strip() for event in args.events.split(",") if event.strip()]
    created = client.webhooks.create(
        url=args.url,
        event_types=events,
        name=args.name or (urlsplit(args.url).hostname or args.url),
    )
    print(f"{created.id}  {created.url}  {', '.join(created.event_types)}")
    print(f"signing secret (shown once): {created.signing_secret}")
    return EXIT_OK


def _list_webhooks(client: openai.OpenAI, args: argparse.Namespace) -> int:
    for endpoint in client.webhooks.list():
        hint = endpoint.signing_secret_hint or ""
        print(f"{endpoint.id}  {endpoint.url}  {', '.join(endpoint.event_types)}  {hint}")
    return EXIT_OK


def _remove_webhook(client: openai.OpenAI, args: argparse.Namespace) -> int:
    client.webhooks.delete(args.endpoint_id)
    print(f"deleted {args.endpoint_id}")
    return EXIT_OK


# -- helpers ---------------------------------------------------------------------------


def _first_url(path: Path) -> str:
    with path.open("rb") as stream:
        for raw in stream:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    break
                if isinstance(url, str):
                    return parse_endpoint(url)
                break
    raise InvalidRequestError(f"cannot tell the endpoint from {path}'s first line: give --endpoint")


UPLOAD_PART_BYTES = 4 * 1024 * 1024
"""Files over this go up in parts through /v1/uploads (one API request carries at most 6 MB)."""


def _upload(client: openai.OpenAI, path: Path) -> FileObject:
    if path.stat().st_size <= UPLOAD_PART_BYTES:
        with path.open("rb") as data:
            return client.files.create(file=(path.name, data), purpose="batch")
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=UPLOAD_PART_BYTES
    )
    if upload.file is None:  # pragma: no cover - a completed upload always has its file
        raise RuntimeError(f"upload {upload.id} completed without a file")
    return upload.file


def _pairs(values: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"--metadata {value!r} must look like KEY=VALUE")
        pairs[key] = item
    return pairs


def _wait(client: openai.OpenAI, batch_id: str, poll_seconds: float = 1.0) -> Batch:
    printer = ProgressPrinter()
    while True:
        batch = client.batches.retrieve(batch_id)
        printer.show(batch, time.monotonic())
        if batch.status in TERMINAL:
            printer.finish()
            print_summary(batch)
            return batch
        time.sleep(poll_seconds)


def _download(client: openai.OpenAI, batch: Batch, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for file_id, name in (
        (batch.output_file_id, "output.jsonl"),
        (batch.error_file_id, "errors.jsonl"),
    ):
        if file_id:
            client.files.content(file_id).write_to_file(out / name)
            print(f"  {out / name}")
    (out / "batch.json").write_text(json.dumps(batch.model_dump(mode="json"), indent=2))
    print(f"  {out / 'batch.json'}")


def _custom_id_result(client: openai.OpenAI, batch_id: str, custom_id: str) -> int:
    """The line of `custom_id` (several if rejected duplicates share it), as JSON lines;
    EXIT_NOT_COMPLETED when it has none yet."""
    page = client.get(
        f"/batches/{batch_id}/results",
        cast_to=httpx.Response,
        options={"params": {"custom_id": custom_id, "limit": 1000}},
    ).json()
    for line in page["data"]:
        print(json.dumps(line))
    if not page["data"]:
        print(f"batchctl: {batch_id} has no result for {custom_id!r} yet", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    return EXIT_OK


def _partial_results(client: openai.OpenAI, batch_id: str, out: Path) -> int:
    parts = client.get(f"/batches/{batch_id}/result_parts", cast_to=httpx.Response).json()["data"]
    out.mkdir(parents=True, exist_ok=True)
    counts = {"output": 0, "error": 0}
    paths = {"output": out / "output.partial.jsonl", "error": out / "errors.partial.jsonl"}
    with paths["output"].open("wb") as output, paths["error"].open("wb") as errors:
        for part in parts:
            data = httpx.get(part["url"], timeout=300).raise_for_status().content
            (output if part["kind"] == "output" else errors).write(data)
            counts[part["kind"]] += data.count(b"\n")
    print(f"{batch_id}: {counts['output']} results and {counts['error']} errors so far")
    for path in paths.values():
        print(f"  {path}")
    return EXIT_OK
