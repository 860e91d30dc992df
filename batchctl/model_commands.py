"""`batchctl models add|list|retire`: the registry of served models in the stack's table
(TABLE_NAME and AWS credentials, as `batchctl keys`). A model's workers pull from its own shard
queues: create them (three tiers), start workers with them as SHARD_QUEUE_URL,
URGENT_SHARD_QUEUE_URL and BULK_SHARD_QUEUE_URL and MODEL, then add the model here."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from batch_core.records import ServedModel
from batchctl.exit_codes import EXIT_NOT_COMPLETED, EXIT_OK


def add_model_commands(commands: Any) -> None:
    models = commands.add_parser("models", help="the served models and their shard queues")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    add = model_commands.add_parser("add", help="serve a model (or change its queues)")
    add.add_argument("name", help="the name requests use (body.model)")
    add.add_argument("--queue-url", required=True, help="its normal tier's shard queue")
    add.add_argument("--urgent-queue-url", default="", help="its urgent tier's (default: normal)")
    add.add_argument("--bulk-queue-url", default="", help="its bulk tier's (default: normal)")
    add.set_defaults(run=_add)
    model_commands.add_parser("list", help="list them").set_defaults(run=_list)
    retire = model_commands.add_parser(
        "retire", help="refuse new batches for a model; running ones finish"
    )
    retire.add_argument("name")
    retire.set_defaults(run=_retire)


def _repository() -> Any:
    from batch_core.wiring import default_service

    return default_service().repository


def _add(args: argparse.Namespace) -> int:
    model = ServedModel(
        name=args.name,
        queue_url=args.queue_url,
        urgent_queue_url=args.urgent_queue_url,
        bulk_queue_url=args.bulk_queue_url,
        created_at=int(time.time()),
    )
    _repository().put_model(model)
    print(f"serving {model.name} (shards to {model.queue_url})")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    for model in _repository().list_models():
        print(f"{model.name:<32} {model.status:<9} {model.queue_url}")
    return EXIT_OK


def _retire(args: argparse.Namespace) -> int:
    if not _repository().retire_model(args.name):
        print(f"batchctl: no model {args.name!r} is registered", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print(f"{args.name}: retiring (new batches refused; running ones finish)")
    return EXIT_OK
