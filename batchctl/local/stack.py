"""The local stack: the whole pipeline on moto, in one process, with no AWS account.

It puts together the parts in this package, one job each:
- `resources`: the template's queues, tables, state machines and bucket on moto;
- `events`: Lambda's event sources (SQS mappings and EventBridge schedules) in-process;
- `routes`: which queue feeds which handler, read from the template's event sources;
- `moto_clients`: moto's client quirks, mended through the wiring's client hook;
- `outbox`: what a user of dropped files does;
and plays the GPU host itself (worker threads on a real or fake engine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from batch_core import wiring
from batch_core.messaging import ShardQueue
from batch_core.models import Batch
from batch_core.protocol import Engine
from batch_core.records import ServedModel
from batchctl import moto_quirks
from batchctl.local.events import EventSources
from batchctl.local.moto_clients import adapt_to_moto
from batchctl.local.outbox import Outbox
from batchctl.local.resources import REGION, STACK, ResourceOptions, create_resources
from batchctl.local.routes import sqs_routes
from batchctl.template import Resolver
from gpu_worker.worker import Worker

logger = logging.getLogger(__name__)


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
        more_models: list[Engine] | None = None,
        shards_ahead: int | None = None,
        worker_fleet: bool = False,
    ) -> None:
        """`endpoint_url` points every AWS client at a running moto server instead of moto's
        in-process mock (so other processes can share the stack). `more_models` are other
        served models, each with shard queues of its own in the registry and its own worker,
        as a worker-fleet deploy gives them."""
        self.engine = engine
        self.more_models = list(more_models or [])
        self.endpoint_url = endpoint_url
        # One shard loop by default, unlike a deployed worker: moto's DynamoDB applies
        # concurrent ADD updates without a lock, so two loops committing parts of the same
        # batch at once can lose an increment here (real DynamoDB cannot).
        self.worker_concurrency = worker_concurrency
        self.options = ResourceOptions(
            served_models=(
                served_models
                if served_models is not None
                else ([engine.served_model] if engine else [])
            ),
            poll_seconds=poll_seconds,
            shard_size=shard_size,
            part_size=part_size,
            shards_ahead=shards_ahead,
            worker_fleet=worker_fleet,
        )
        self.worker_count = worker_count if engine else 0
        self.route_events = route_events
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        self.resolver: Resolver | None = None
        self.workers: list[Worker] = []
        self.handler_errors: list[BaseException] = []

    @property
    def served_models(self) -> list[str]:
        return self.options.served_models

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
        self.session = wiring.new_session(REGION)
        self.resolver, environment = create_resources(self.session, self.options)
        self._set_env(environment)
        self.bucket = self.resolver.refs["DataBucket"]
        self.outbox = Outbox(self.session, self.bucket)
        wiring.reset()
        wiring.add_client_hook(adapt_to_moto)
        self.stages = wiring.default_stages()
        # Built here, before any handler or worker thread: a cached_property takes no lock,
        # and two threads building one stage would each keep their own (a Lambda has one).
        for stage in ("intake", "runner", "ending", "batches", "retries", "sweep", "webhooks"):
            getattr(self.stages, stage)
        self.events = EventSources(self.session, self._stop)
        self.events.handler_errors = self.handler_errors  # one list: handlers' and workers'
        if self.route_events:
            # Each queue's function as the template's SQS event sources map them; the sweep's
            # schedule is the one route it has besides (every minute here, five deployed).
            for queue, module in sqs_routes().items():
                arn = self.resolver.attributes[(queue, "Arn")]
                self.events.route(queue, self.physical_id(queue), arn, module)
            self.events.schedule("handlers.expire", every_seconds=60)
        for index in range(self.worker_count):
            self.start_worker(name=f"worker-{index}")
        for extra in self.more_models:
            self._serve_model(extra)

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop.set()
        events = getattr(self, "events", None)
        for thread in self._threads + (events.threads if events else []):
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
        wiring.remove_client_hook(adapt_to_moto)
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
                # moto raises AttributeError for an execution whose worker has not started
                # yet; it has nothing to stop, and it ends with the mock.
                with contextlib.suppress(AttributeError):
                    sfn.stop_execution(
                        executionArn=execution["executionArn"],
                        cause=f"{name}: local stack stopped",
                    )

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def physical_id(self, logical_name: str) -> str:
        """A template resource's local id: a queue's URL, a table's name, a state machine's ARN."""
        assert self.resolver is not None
        return self.resolver.refs[logical_name]

    # -- the GPU host ---------------------------------------------------------------------

    def start_worker(
        self,
        name: str = "worker",
        *,
        engine: Engine | None = None,
        queue: ShardQueue | None = None,
    ) -> Worker:
        """Start one more worker thread: on the stack's engine and shard queues by default."""
        engine = engine or self.engine
        assert engine is not None, "the stack has no engine"
        worker = Worker(
            self.stages.runner,
            queue or self.stages.shard_queue,
            engine,
            wait_seconds=1,
            concurrency=self.worker_concurrency,
        )
        thread = threading.Thread(target=self._run_worker, args=(worker,), name=name, daemon=True)
        thread.start()
        self.workers.append(worker)
        self._threads.append(thread)
        return worker

    def _serve_model(self, engine: Engine) -> Worker:
        """Another served model: its three tiers' queues (dead letters to the stack's shard
        dead-letter queue), its registry entry, and a worker of its own on them."""
        assert self.resolver is not None
        sqs = self.session.client("sqs")
        dead_letters = self.resolver.attributes[("ShardDeadLetterQueue", "Arn")]
        redrive = json.dumps({"deadLetterTargetArn": dead_letters, "maxReceiveCount": 3})
        urls = {
            tier: sqs.create_queue(
                QueueName=f"{STACK}-{engine.served_model}-{tier}-shards",
                Attributes={"VisibilityTimeout": "900", "RedrivePolicy": redrive},
            )["QueueUrl"]
            for tier in ("urgent", "normal", "bulk")
        }
        self.stages.table.models.put_model(
            ServedModel(
                name=engine.served_model,
                queue_url=urls["normal"],
                urgent_queue_url=urls["urgent"],
                bulk_queue_url=urls["bulk"],
                created_at=int(time.time()),
            )
        )
        queue = self.stages.shard_queue.of_model(
            urls["normal"], urgent_url=urls["urgent"], bulk_url=urls["bulk"]
        )
        return self.start_worker(f"worker-{engine.served_model}", engine=engine, queue=queue)

    def _run_worker(self, worker: Worker) -> None:
        try:
            worker.run()
        except Exception as error:
            logger.exception("worker crashed")
            self.handler_errors.append(error)

    # -- what a user does (see outbox.Outbox) ---------------------------------------------

    def drop(
        self, path: Path, name: str | None = None, *, metadata: dict[str, str] | None = None
    ) -> str:
        """Upload a file into inbox/ as `aws s3 cp [--metadata ...]` would; returns its outbox
        name (`name` may hold folders, e.g. `endpoint=embeddings/run1`)."""
        return self.outbox.drop(path, name, metadata=metadata)

    def outbox_batch(self, name: str) -> Batch | None:
        return self.outbox.batch(name)

    def wait_for_outbox(
        self,
        name: str,
        *,
        timeout: float = 1800,
        on_progress: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """Wait until outbox/<name>/batch.json shows a terminal status."""
        return self.outbox.wait(name, timeout=timeout, on_progress=on_progress)

    def download_outbox(self, name: str, out_dir: Path) -> dict[str, Path]:
        """Copy outbox/<name>/ into out_dir: batch.json, output.jsonl, errors.jsonl."""
        return self.outbox.download(name, out_dir)
