"""The local stack: the whole pipeline on moto, in one process, with no AWS account.

Resources come from template.yaml's own properties. moto delivers S3 notifications to the
intake queue and runs the tracker's real ASL; this module plays the part of Lambda's SQS
event source mappings (routing queue messages to the handlers in-process) and of the GPU
host (a worker thread with a real or fake engine).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from batch_core import s3keys, wiring
from batch_core.models import TERMINAL_STATUSES, Batch
from batch_core.protocol import Engine
from batchctl import moto_quirks
from batchctl.template import (
    Resolver,
    load_template,
    resources_of_type,
    state_machine_definition,
)
from gpu_worker.worker import Worker

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "openbatch-local"
# Lambda retries a failed SQS record after its visibility timeout; locally we retry sooner.
_RETRY_DELAY_SECONDS = 2


@dataclass
class LocalLambdaContext:
    """Enough of Lambda's context object for Powertools."""

    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = ""
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _serialize_calls(client: Any) -> None:
    """Send one client's calls one at a time.

    moto's DynamoDB is not thread-safe: a transaction that fails restores a copy of the whole
    table taken when it began, losing what other threads wrote meanwhile, and concurrent ADD
    updates can lose increments. Real DynamoDB serializes both. Every component of the local
    stack shares the service's DynamoDB client, so one lock around it gives moto the same
    guarantee (other processes, such as the fault tests' workers, have clients of their own).
    """
    lock = threading.Lock()
    client_class = type(client)

    def serialized(operation_name: str, params: dict[str, Any]) -> Any:
        with lock:  # looked up on the class each time, so class-level hooks (the bench) apply
            return client_class._make_api_call(client, operation_name, params)

    client._make_api_call = serialized


_TOKEN_ATTEMPTS = 20
_TOKEN_RETRY_SECONDS = 0.25


def _retry_fresh_tokens(client: Any) -> None:
    """moto registers a task token's waiter only after the message carrying it was sent, so
    the finalize function can see a fresh token refused as InvalidToken for a moment: retry
    it briefly (a token that stays refused, one a duplicate already used, then reaches the
    tracker client as InvalidToken, which it reads as "no execution waits")."""
    send = client.send_task_success

    def send_task_success(**request: Any) -> Any:
        for attempt in range(_TOKEN_ATTEMPTS):
            try:
                return send(**request)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code != "InvalidToken" or attempt + 1 == _TOKEN_ATTEMPTS:
                    raise
                time.sleep(_TOKEN_RETRY_SECONDS)
        return None  # pragma: no cover - the loop returns or raises

    client.send_task_success = send_task_success


def _adapt_to_moto(service_name: str, client: Any) -> None:
    """The wiring's client hook while a local stack runs: moto's quirks, mended here only."""
    if service_name == "dynamodb":
        _serialize_calls(client)
    elif service_name == "stepfunctions":
        _retry_fresh_tokens(client)


class LocalStack:
    """Starts moto, builds the resources, routes events, runs a worker. Use as a context manager."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        served_models: list[str] | None = None,
        poll_seconds: int = 1,
        shard_size: int | None = None,
        part_size: int | None = None,
        worker_count: int = 1,
        route_events: bool = True,
        endpoint_url: str | None = None,
        worker_concurrency: int = 1,
    ) -> None:
        """`endpoint_url` points every AWS client at a running moto server instead of moto's
        in-process mock (so other processes can share the stack)."""
        self.engine = engine
        self.endpoint_url = endpoint_url
        # One shard loop by default, unlike a deployed worker (2): moto's DynamoDB applies
        # concurrent ADD updates without a lock, so two loops committing parts of the same
        # batch at once can lose an increment here (real DynamoDB cannot).
        self.worker_concurrency = worker_concurrency
        self.served_models = (
            served_models
            if served_models is not None
            else ([engine.served_model] if engine else [])
        )
        self.poll_seconds = poll_seconds
        self.shard_size = shard_size
        self.part_size = part_size
        self.worker_count = worker_count if engine else 0
        self.route_events = route_events
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        self.resolver: Resolver | None = None
        self.workers: list[Worker] = []
        self.handler_errors: list[BaseException] = []

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        from moto import mock_aws

        self._set_env(
            {
                # moto intercepts every call; fake credentials make sure nothing reaches AWS.
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                # The stack's own clients (event routing, outbox reads, the tests') retry as
                # the functions' do (wiring.RETRIES) and as Lambda's event sources would.
                "AWS_RETRY_MODE": wiring.RETRY_MODE,
                "AWS_MAX_ATTEMPTS": str(wiring.RETRY_ATTEMPTS),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "OpenBatchLocal",
                # EMF lines are for CloudWatch; locally they would only clutter the output.
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            }
        )
        if self.endpoint_url:
            self._set_env({"AWS_ENDPOINT_URL": self.endpoint_url})
        else:
            moto_quirks.apply()
            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._mock.start()
        self.session = boto3.session.Session(region_name=REGION)
        self._create_resources()
        wiring.reset()
        wiring.add_client_hook(_adapt_to_moto)
        self.service = wiring.default_service()
        if self.route_events:
            self._route("IntakeQueue", "handlers.validate")
            self._route("FinalizeQueue", "handlers.finalize")
            self._route("ShardDeadLetterQueue", "handlers.dead_shard")
            self._route("IntakeDeadLetterQueue", "handlers.dead_intake")
            self._route("WebhookQueue", "handlers.webhooks")
            self._schedule("handlers.expire", every_seconds=60)
        for index in range(self.worker_count):
            self.start_worker(name=f"worker-{index}")

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self._mock is not None or self.endpoint_url:
            self._stop_executions()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        wiring.remove_client_hook(_adapt_to_moto)
        wiring.reset()

    def _stop_executions(self) -> None:
        """moto runs executions in threads that outlive the mock: stop them with the stack."""
        if self.resolver is None:
            return
        sfn = self.session.client("stepfunctions")
        for name, arn in self.resolver.refs.items():
            if ":stateMachine:" not in arn:
                continue
            running = sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")
            for execution in running["executions"]:
                sfn.stop_execution(
                    executionArn=execution["executionArn"], cause=f"{name}: local stack stopped"
                )

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    # -- resources from the template ----------------------------------------------------

    def _create_resources(self) -> None:
        template = load_template()
        resolver = Resolver(
            pseudo={
                "AWS::StackName": STACK,
                "AWS::AccountId": ACCOUNT,
                "AWS::Region": REGION,
                "AWS::Partition": "aws",
            },
            parameters={
                name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
            },
            conditions=template.get("Conditions", {}),
        )
        resolver.parameters["ServedModels"] = ",".join(self.served_models)
        resolver.parameters["TrackerPollSeconds"] = str(self.poll_seconds)
        self.resolver = resolver
        sqs = self.session.client("sqs")
        queues = resources_of_type(template, "AWS::SQS::Queue")
        # Dead-letter queues first: the others point at them.
        for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n]):
            self._create_queue(sqs, name, queues[name], resolver)
        dynamodb = self.session.client("dynamodb")
        for name, props in resources_of_type(template, "AWS::DynamoDB::Table").items():
            table_name = f"{STACK}-{name}"
            spec = {
                key: props[key]
                for key in (
                    "AttributeDefinitions",
                    "KeySchema",
                    "BillingMode",
                    "GlobalSecondaryIndexes",
                )
                if key in props
            }
            dynamodb.create_table(TableName=table_name, **spec)
            resolver.refs[name] = table_name
        sfn = self.session.client("stepfunctions")
        for name, props in resources_of_type(template, "AWS::Serverless::StateMachine").items():
            definition = state_machine_definition(props, resolver)
            arn = sfn.create_state_machine(
                name=resolver.resolve(props["Name"]),
                definition=definition,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
                type=props.get("Type", "STANDARD"),
            )["stateMachineArn"]
            resolver.refs[name] = arn
        s3 = self.session.client("s3")
        for name, props in resources_of_type(template, "AWS::S3::Bucket").items():
            bucket = resolver.resolve(props["BucketName"])
            s3.create_bucket(Bucket=bucket)
            versioning = props.get("VersioningConfiguration", {}).get("Status")
            if versioning:
                s3.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": versioning}
                )
            resolver.refs[name] = bucket
            notifications = resolver.resolve(props.get("NotificationConfiguration", {}))
            configs: list[Any] = [
                {
                    "QueueArn": config["Queue"],
                    "Events": [config["Event"]],
                    "Filter": {"Key": {"FilterRules": config["Filter"]["S3Key"]["Rules"]}},
                }
                for config in notifications.get("QueueConfigurations", [])
            ]
            if configs:
                s3.put_bucket_notification_configuration(
                    Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
                )
        # Every function sees the template's Globals environment; so do the handlers here.
        environment = resolver.resolve(template["Globals"]["Function"]["Environment"]["Variables"])
        # Locally every tier of the tracker's poll is the same short wait.
        overrides = {
            "TRACKER_POLL_SECONDS": str(self.poll_seconds),
            "TRACKER_POLL_LATER_SECONDS": str(self.poll_seconds),
            "TRACKER_POLL_LATEST_SECONDS": str(self.poll_seconds),
            # The receivers of a local run are on this machine; retries come soon after.
            "WEBHOOK_ALLOW_INTERNAL_TARGETS": "true",
            "WEBHOOK_RETRY_BASE_SECONDS": "1",
        }
        if self.shard_size:
            overrides["MAX_REQUESTS_PER_SHARD"] = str(self.shard_size)
        if self.part_size:
            overrides["RESULTS_PART_SIZE"] = str(self.part_size)
        self._set_env({**{k: str(v) for k, v in environment.items()}, **overrides})
        self.bucket = resolver.refs["DataBucket"]

    def _create_queue(
        self, sqs: SQSClient, name: str, props: dict[str, Any], resolver: Resolver
    ) -> None:
        attributes: dict[Any, str] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
            if key in props:
                attributes[key] = str(props[key])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(resolver.resolve(props["RedrivePolicy"]))
        url = sqs.create_queue(QueueName=f"{STACK}-{name}", Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        resolver.refs[name] = url
        resolver.attributes[(name, "Arn")] = arn
        resolver.attributes[(name, "QueueName")] = f"{STACK}-{name}"

    def physical_id(self, logical_name: str) -> str:
        """A template resource's local id: a queue's URL, a table's name, a state machine's ARN."""
        assert self.resolver is not None
        return self.resolver.refs[logical_name]

    # -- event routing (what Lambda's SQS event source mapping does) --------------------

    def _schedule(self, module_name: str, every_seconds: float) -> None:
        """What an EventBridge schedule does: invoke the handler with a scheduled event."""
        import importlib

        module = importlib.import_module(module_name)

        def tick() -> None:
            while not self._stop.wait(every_seconds):
                event = {
                    "version": "0",
                    "id": str(uuid.uuid4()),
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "account": ACCOUNT,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "region": REGION,
                    "resources": [],
                    "detail": {},
                }
                try:
                    module.handler(event, LocalLambdaContext(function_name=module_name))
                except Exception as error:  # as Lambda would: log it, try at the next tick
                    logger.exception("%s failed", module_name)
                    self.handler_errors.append(error)

        thread = threading.Thread(target=tick, name=f"schedule-{module_name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _route(self, queue_name: str, module_name: str) -> None:
        import importlib

        module = importlib.import_module(module_name)
        thread = threading.Thread(
            target=self._route_loop,
            args=(queue_name, module),
            name=f"route-{queue_name}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _route_loop(self, queue_name: str, module: ModuleType) -> None:
        sqs = self.session.client("sqs")
        url = self.physical_id(queue_name)
        assert self.resolver is not None
        arn = self.resolver.attributes[(queue_name, "Arn")]
        while not self._stop.is_set():
            response = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if messages:
                self._deliver(sqs, url, arn, module, messages)

    def _deliver(
        self, sqs: SQSClient, url: str, arn: str, module: ModuleType, messages: list[Any]
    ) -> None:
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }
        context = LocalLambdaContext(
            function_name=module.__name__,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{module.__name__}",
        )
        failed: set[str] = set()
        try:
            result = module.handler(event, context)
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception as error:  # every record failed: Lambda retries them all
            logger.exception("handler %s failed", module.__name__)
            self.handler_errors.append(error)
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=_RETRY_DELAY_SECONDS,
                )
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # -- the GPU host ---------------------------------------------------------------------

    def start_worker(self, name: str = "worker") -> Worker:
        """Start one more worker thread on the stack's engine."""
        assert self.engine is not None, "the stack has no engine"
        worker = Worker(
            self.service,
            self.service.shard_queue,
            self.engine,
            wait_seconds=1,
            concurrency=self.worker_concurrency,
        )
        thread = threading.Thread(target=self._run_worker, args=(worker,), name=name, daemon=True)
        thread.start()
        self.workers.append(worker)
        self._threads.append(thread)
        return worker

    def _run_worker(self, worker: Worker) -> None:
        try:
            worker.run()
        except Exception as error:
            logger.exception("worker crashed")
            self.handler_errors.append(error)

    # -- what a user does -----------------------------------------------------------------

    def drop(
        self, path: Path, name: str | None = None, *, metadata: dict[str, str] | None = None
    ) -> str:
        """Upload a file into inbox/ as `aws s3 cp [--metadata ...]` would; returns its outbox
        name (`name` may hold folders, e.g. `endpoint=embeddings/run1`)."""
        name = name or path.stem
        self.session.client("s3").upload_file(
            str(path),
            self.bucket,
            f"{s3keys.INBOX_PREFIX}{name}.jsonl",
            ExtraArgs={"Metadata": metadata} if metadata else None,
        )
        return name

    def _read_outbox(self, name: str, filename: str) -> bytes | None:
        """An outbox object's bytes, None if it is not there yet.

        moto's in-process S3 closes an object's buffer when the key is overwritten, so a read
        racing the worker's rewrite of batch.json can fail with ValueError or come back empty
        (a batch.json never is); read it again.
        """
        s3 = self.session.client("s3")
        for attempt in range(20):
            try:
                response = s3.get_object(Bucket=self.bucket, Key=s3keys.outbox_key(name, filename))
                data: bytes = response["Body"].read()
                if data or filename != "batch.json":
                    return data
            except s3.exceptions.NoSuchKey:
                return None
            except ValueError:
                if attempt == 19:
                    raise
            time.sleep(0.05)
        return None  # pragma: no cover - the loop returns or raises

    def outbox_batch(self, name: str) -> Batch | None:
        data = self._read_outbox(name, "batch.json")
        return None if data is None else Batch.model_validate_json(data)

    def wait_for_outbox(
        self,
        name: str,
        *,
        timeout: float = 1800,
        on_progress: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """Wait until outbox/<name>/batch.json shows a terminal status."""
        deadline = time.monotonic() + timeout
        last: Batch | None = None
        while time.monotonic() < deadline:
            batch = self.outbox_batch(name)
            if batch is not None:
                if on_progress and (last is None or batch.model_dump() != last.model_dump()):
                    on_progress(batch)
                last = batch
                if batch.status in TERMINAL_STATUSES:
                    return batch
            time.sleep(0.25)
        raise TimeoutError(
            f"batch for {name!r} did not finish within {timeout:.0f} s "
            f"(last status: {last.status if last else 'no batch yet'})"
        )

    def download_outbox(self, name: str, out_dir: Path) -> dict[str, Path]:
        """Copy outbox/<name>/ into out_dir: batch.json, output.jsonl, errors.jsonl."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for filename in ("batch.json", "output.jsonl", "errors.jsonl"):
            target = out_dir / filename
            target.write_bytes(self._read_outbox(name, filename) or b"")
            paths[filename] = target
        return paths
