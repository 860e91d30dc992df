"""`batchctl models add|list|retire|remove`: the registry of served models in the stack's table
(TABLE_NAME and AWS credentials, as `batchctl keys`). `infra/worker-fleet.yaml` does all of
this in one deploy; by hand, a model's workers pull from its own shard queues: create them
(three tiers, named <stack>-model-* so the stack's functions may send to them), start workers
with them as SHARD_QUEUE_URL, URGENT_SHARD_QUEUE_URL and BULK_SHARD_QUEUE_URL and MODEL, then
add the model here. The registry refuses a name outside its safe set (letters, digits, '._:-',
segments joined by '/'), the stack's own model, one another fleet registered, and queues not
named <stack>-model-* in the stack's account and region (STACK_NAME; unset: any *-model-*)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batch_core.errors import BatchCoreError
from batch_core.records import ServedModel
from batchctl.arguments import whole_number
from batchctl.exit_codes import EXIT_NOT_COMPLETED, EXIT_OK

_OPTIONS = {
    "name": "name",
    "queue_url": "--queue-url",
    "urgent_queue_url": "--urgent-queue-url",
    "bulk_queue_url": "--bulk-queue-url",
}
"""The registry's fields as `models add` names them, to say which one was refused."""


def add_model_commands(commands: Any) -> None:
    models = commands.add_parser("models", help="the served models and their shard queues")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    add = model_commands.add_parser("add", help="serve a model (or change its queues)")
    add.add_argument("name", help="the name requests use (body.model)")
    add.add_argument("--queue-url", required=True, help="its normal tier's shard queue")
    add.add_argument("--urgent-queue-url", default="", help="its urgent tier's (default: normal)")
    add.add_argument("--bulk-queue-url", default="", help="its bulk tier's (default: normal)")
    add.add_argument(
        "--tokens-per-second",
        type=whole_number(0),
        default=0,
        help="its whole fleet's prompt plus output tokens per second, for deadlines "
        "(default: the stack's FLEET_TOKENS_PER_SECOND)",
    )
    add.set_defaults(run=_add)
    model_commands.add_parser("list", help="list them").set_defaults(run=_list)
    retire = model_commands.add_parser(
        "retire", help="refuse new batches for a model; running ones finish"
    )
    retire.add_argument("name")
    retire.set_defaults(run=_retire)
    remove = model_commands.add_parser(
        "remove", help="retire a model and remove it once no batch for it is left"
    )
    remove.add_argument("name")
    remove.set_defaults(run=_remove)


def _registry() -> Any:
    from batch_core.wiring import default_stages

    return default_stages().registry


def _add(args: argparse.Namespace) -> int:
    model = ServedModel(
        name=args.name,
        queue_url=args.queue_url,
        urgent_queue_url=args.urgent_queue_url,
        bulk_queue_url=args.bulk_queue_url,
        tokens_per_second=args.tokens_per_second,
    )
    try:
        _registry().register(model)
    except BatchCoreError as error:
        option = _OPTIONS.get(error.param or "", "name")
        print(f"batchctl: {option}: {error}", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print(f"serving {model.name} (shards to {model.queue_url})")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    for model in _registry().repository.models.list_models():
        line = f"{model.name:<32} {model.status:<9} {model.queue_url} {model.fleet}"
        # The workers the sweep sizes for it (none shown: not sized by the stack).
        print(f"{line} {model.scaling_target}".rstrip())
    return EXIT_OK


def _retire(args: argparse.Namespace) -> int:
    if not _registry().retire(args.name):
        print(f"batchctl: no model {args.name!r} is registered", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print(f"{args.name}: retiring (new batches refused; running ones finish)")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    from batch_core.model_registry import ModelInUseError

    try:
        removed = _registry().remove(args.name)
    except ModelInUseError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    if not removed:
        print(f"batchctl: no model {args.name!r} is registered", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print(f"{args.name}: removed")
    return EXIT_OK
