"""One `Stages` over a bare moto world, for the unit tests of each stage: the table and the
bucket made from template.yaml's own properties, real moto queues for the shards and the
intake jobs, a recording tracker and event bus, and a clock the test sets. No worker
threads, no event routing, no state machine: a test calls the stage and looks at the world.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

from batch_core import s3keys, wiring
from batch_core.batch_params import BatchParams
from batch_core.deps import Deps
from batch_core.intake_jobs import DroppedObject
from batch_core.messaging import (
    IntakeJobs,
    ShardQueue,
    ShardTask,
    StatusEvents,
    Tracker,
    WebhookQueue,
)
from batch_core.models import BatchStatus
from batch_core.protocol import Engine
from batch_core.records import DEFAULT_TENANT, BatchRecord, ServedModel
from batch_core.repository import BatchRepository
from batch_core.settings import Settings
from batch_core.shard_run import ShardRun
from batch_core.stages import Channels, Stages
from batch_core.storage import ObjectStore
from batchctl.local.resources import REGION
from batchctl.template import load_template, resources_of_type
from tests.conftest import MODEL, batch_record
from tests.queues import drain

START = 1_750_000_000.0
"""The clock's first reading (a fixed time: tests move it on with `clock.advance`)."""
_TABLE_PROPERTIES = ("AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes")
"""What CreateTable takes of the template's table (the local stack takes the same)."""
_QUEUES = ("shards", "urgent-shards", "bulk-shards", "intake", "webhooks")


@cache
def _template_resources() -> tuple[dict[str, Any], dict[str, Any]]:
    """The template's one table and one bucket (parsed once per process)."""
    template = load_template()
    (table,) = resources_of_type(template, "AWS::DynamoDB::Table").values()
    (bucket,) = resources_of_type(template, "AWS::S3::Bucket").values()
    return table, bucket


@cache
def _clients() -> tuple[Any, Any, Any]:
    """SQS, DynamoDB and S3 clients, made once per process (a client is still ~10 ms to
    build). moto's mock is what answers them, whichever mock is running when called."""
    session = wiring.new_session(REGION)
    return session.client("sqs"), session.client("dynamodb"), session.client("s3")


@dataclass
class Clock:
    """The stages' time: it stands still until a test moves it."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingTracker:
    """In place of the tracker state machine: what was started and reported."""

    started: list[str] = field(default_factory=list)
    reported: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def start(self, batch_id: str, *, poll: dict[str, int]) -> None:
        self.started.append(batch_id)

    def report_success(self, task_token: str, output: dict[str, Any]) -> bool:
        self.reported.append((task_token, output))
        return True


@dataclass
class RecordingEvents:
    """In place of the EventBridge bus: what was published; `failing` makes it raise as
    EventBridge does when it refuses an entry."""

    AT_RISK = StatusEvents.AT_RISK
    DETAIL_TYPE = StatusEvents.DETAIL_TYPE
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failing: bool = False

    def publish(self, batch: dict[str, Any], detail_type: str = DETAIL_TYPE) -> None:
        if self.failing:
            raise RuntimeError("EventBridge refused a status event")
        self.published.append((detail_type, batch))

    def of(self, detail_type: str) -> list[tuple[str, str]]:
        """(batch id, status) of each event of `detail_type`, in order."""
        return [(b["id"], b["status"]) for kind, b in self.published if kind == detail_type]


class StageWorld:
    """The moto resources, the fakes and the `Stages` over them."""

    def __init__(self, **settings: Any) -> None:
        self.sqs, dynamodb, self.s3 = _clients()
        table_props, bucket_props = _template_resources()
        dynamodb.create_table(
            TableName="stage-table",
            **{key: table_props[key] for key in _TABLE_PROPERTIES if key in table_props},
        )
        self.bucket = "stage-bucket"
        self.s3.create_bucket(Bucket=self.bucket)
        versioning = bucket_props.get("VersioningConfiguration", {}).get("Status")
        if versioning:  # intake reads the exact version an S3 event names
            self.s3.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": versioning}
            )
        urls = {name: self.sqs.create_queue(QueueName=name)["QueueUrl"] for name in _QUEUES}
        self.queue_urls = urls
        self.clock = Clock()
        self.tracker = RecordingTracker()
        self.events = RecordingEvents()
        base = {
            "table_name": "stage-table",
            "bucket_name": self.bucket,
            "shard_queue_url": urls["shards"],
            "urgent_shard_queue_url": urls["urgent-shards"],
            "bulk_shard_queue_url": urls["bulk-shards"],
            "intake_queue_url": urls["intake"],
            "webhook_queue_url": urls["webhooks"],
            "served_models": [MODEL],
        }
        self.deps = Deps(
            settings=Settings(**{**base, **settings}),
            table=BatchRepository(dynamodb, "stage-table"),
            store=ObjectStore(self.s3, self.bucket),
            clock=self.clock,
        )
        self.channels = Channels(
            shard_queue=ShardQueue(
                self.sqs,
                urls["shards"],
                urgent_url=urls["urgent-shards"],
                bulk_url=urls["bulk-shards"],
            ),
            # The fakes have the methods the stages call (a structural stand-in).
            tracker=cast("Tracker", self.tracker),
            jobs=IntakeJobs(self.sqs, urls["intake"]),
            events=cast("StatusEvents", self.events),
            webhook_queue=WebhookQueue(self.sqs, urls["webhooks"]),
        )
        self.stages = Stages(self.deps, self.channels)

    # -- settings -----------------------------------------------------------------------

    def configure(self, **changes: Any) -> Stages:
        """Other settings for every stage: the stages are built again over the same world
        (some take the settings when built)."""
        settings = self.deps.settings.model_copy(update=changes)
        self.deps = dataclasses.replace(self.deps, settings=settings)
        self.stages = Stages(self.deps, self.channels)
        return self.stages

    @property
    def table(self) -> BatchRepository:
        return self.deps.table

    @property
    def store(self) -> ObjectStore:
        return self.deps.store

    # -- the bucket ---------------------------------------------------------------------

    def drop(
        self, name: str, lines: list[Any], metadata: dict[str, str] | None = None
    ) -> DroppedObject:
        """Put a file under inbox/ as a user would; the object its S3 event would name."""
        key = f"inbox/{name}"
        answer = self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=jsonl_bytes(lines), Metadata=metadata or {}
        )
        return DroppedObject(
            key=key, etag=answer["ETag"].strip('"'), version_id=answer.get("VersionId", "")
        )

    def lines(self, key: str) -> list[dict[str, Any]]:
        """The JSON lines of an object."""
        return [json.loads(line) for line in self.store.read(key).splitlines() if line]

    def file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """The JSON lines of a File (an output or error file)."""
        assert file_id is not None
        record = self.table.files.get_file(file_id)
        assert record is not None
        return self.lines(record.s3_key)

    # -- the queues ---------------------------------------------------------------------

    def drain(self, queue: str = "shards") -> list[ShardTask]:
        """Every message waiting in one of the world's queues, taken off it (shard tasks)."""
        return [ShardTask.model_validate_json(body) for body in self.drain_bodies(queue)]

    def drain_bodies(self, queue: str) -> list[str]:
        """Every message body waiting in the queue, taken off it."""
        return [m["Body"] for m in drain(self.sqs, self.queue_urls[queue], delete=True)]

    # -- the table ----------------------------------------------------------------------

    def store_batch(self, batch_id: str, status: str = "in_progress", **fields: Any) -> BatchRecord:
        """A batch item as a stage would have left it (for tests that start mid-way)."""
        record = batch_record(
            batch_id,
            cast("BatchStatus", status),
            int(self.clock()),
            **{"tenant": DEFAULT_TENANT, **fields},
        )
        assert self.table.batches.create_batch(record)
        return record

    def batch(self, batch_id: str) -> BatchRecord:
        return self.deps.batch(batch_id)

    # -- driving the stages, as the handlers and the worker would --------------------------

    def ingest(
        self, name: str, lines: list[Any], metadata: dict[str, str] | None = None
    ) -> BatchRecord:
        """Drop a file and run its intake (the validate function's work)."""
        record = self.stages.intake.ingest_dropped_object(self.drop(name, lines, metadata))
        assert record is not None
        return record

    def create(self, lines: list[Any], tenant: str = "tenant-a", **params: Any) -> BatchRecord:
        """Upload a file and create a batch on it through `Batches`, then run its intake."""
        file = self.stages.files.create(
            tenant, filename="in.jsonl", purpose="batch", data=jsonl_bytes(lines)
        )
        created = self.stages.batches.create_batch(
            tenant,
            BatchParams.model_validate({"endpoint": "/v1/chat/completions", **params}),
            input_file_id=file.id,
        )
        return self.validate(created.id)

    def validate(self, batch_id: str) -> BatchRecord:
        """Run the intake of a batch created through the API (its input's S3 event)."""
        record = self.stages.intake.ingest_dropped_object(
            DroppedObject(key=s3keys.batch_input_key(batch_id))
        )
        assert record is not None
        return record

    def run_queued(self, engine: Engine, queue: str = "shards") -> list[ShardRun]:
        """Run every shard waiting in `queue` (and those their settling lets in) to its end,
        one at a time, as one worker would."""
        runs: list[ShardRun] = []
        while tasks := self.drain(queue):
            runs += [self.stages.runner.process_shard(task, engine) for task in tasks]
        return runs

    def run_to_end(self, record: BatchRecord, engine: Engine) -> BatchRecord:
        """Run the batch's queued shards, then finalize it (the tracker's last call)."""
        self.run_queued(engine, "urgent-shards")
        self.run_queued(engine)
        self.run_queued(engine, "bulk-shards")
        return self.stages.ending.finalize(record.id)

    def register(self, name: str, *, fleet: str, **fields: Any) -> str:
        """Register a model of a worker fleet with a shard queue of its own (made here, named
        as the registry's rules want a fleet's); the queue's name, for `drain`."""
        queue = f"stage-model-{fleet}-normal"
        url = self.sqs.create_queue(QueueName=queue)["QueueUrl"]
        self.queue_urls[queue] = url
        model = ServedModel(name=name, queue_url=url, fleet=fleet, **fields)
        self.stages.registry.register(model)
        return queue


def jsonl_bytes(lines: list[Any]) -> bytes:
    return "".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    ).encode()


@contextmanager
def stage_world(**settings: Any) -> Iterator[StageWorld]:
    """A `StageWorld` inside moto's in-process mock (fake credentials: nothing reaches AWS)."""
    from moto import mock_aws

    with mock_aws():
        yield StageWorld(**settings)
