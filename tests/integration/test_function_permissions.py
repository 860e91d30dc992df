"""Every Lambda function's role allows what the function does, and refuses what it must never
do.

Each function of template.yaml runs through its own handler on the local stack, along its
paths and its error paths (a failed multipart write included, by a fault injected into one
call). Every AWS client that wiring builds for a function records its calls at botocore
(`provide-client-params`, which presigning emits too: whoever follows a presigned URL acts
with the signer's rights), and each call is checked against that function's role as the SAM
transform generates it (`<Function>Role`, its policy templates expanded), resolved by the
local stack's own resolver so that the ARNs are those the calls hit. A call the IAM mapping
does not know fails the test, and so does a function of the template the scenario never
drove."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import importlib
import itertools
import json
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import moto.s3.models
import pytest
from botocore.exceptions import ClientError

from batch_core import model_registry, storage, wiring
from batch_core.intake_jobs import BuildRetryInput, JoinUpload
from batch_core.models import TERMINAL_STATUSES
from batch_core.repository import batch_pk
from batch_core.settings import get_settings
from batch_core.storage import MIN_COPY_PART_BYTES
from batchctl.local import ACCOUNT, REGION, LocalLambdaContext, LocalStack
from batchctl.local.events import sqs_event
from batchctl.server import api_gateway_event
from batchctl.template import sam_transformed
from gpu_worker.engines.fake import FakeEngine
from gpu_worker.worker import Worker
from tests.conftest import MODEL, chat_request, expire_file_now, load_event, store_batch
from tests.iam_policy import Arns, Call, Policy, UnmappedCallError, role_policy
from tests.queues import drain
from tests.receivers import HttpReceiver

KEY = "sk-permissions-0123456789abcdef"
TENANT = "permissions"
EVENT_TYPES = ["batch.completed", "batch.failed", "batch.cancelled", "batch.expired"]
# Small thresholds, so that small files take the paths large ones take: content by a
# presigned URL, uploads joined by the intake job; and a 5 MiB part fits one request.
SETTINGS = {
    "MAX_INLINE_CONTENT_BYTES": "1024",
    "INLINE_JOIN_BYTES": "4096",
    "MAX_REQUEST_BODY_BYTES": str(8 * 1024**2),
    "API_REQUESTS_PER_SECOND": "1000",  # the limiter runs, and never refuses here
    "WEBHOOK_MAX_ATTEMPTS": "2",
}


# -- which function made each call ------------------------------------------------------


class Recorder:
    """Every AWS client wiring builds while `building(function)` records its calls as that
    function's; `faults[(function, operation)]` fails that many of those calls (after they
    were recorded: they were made)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.faults: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._building: str | None = None
        self._invoking = threading.local()

    @contextlib.contextmanager
    def building(self, function: str) -> Iterator[None]:
        self._building = function
        try:
            yield
        finally:
            self._building = None

    @contextlib.contextmanager
    def invoking(self, function: str) -> Iterator[None]:
        self._invoking.function = function
        try:
            yield
        finally:
            self._invoking.function = None

    def current(self) -> str | None:
        """The function whose handler runs on this thread now."""
        function: str | None = getattr(self._invoking, "function", None)
        return function

    def client_hook(self, service_name: str, client: Any) -> None:
        """The wiring's client hook: a client built for a function (or by one, while its
        handler runs) records that function's calls."""
        function = self._building or self.current()
        if function is None:
            return

        def record(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            call = Call(
                model.service_model.endpoint_prefix,
                model.name,
                {k: copy.deepcopy(v) for k, v in params.items() if k != "Body"},
                presigned=bool(context.get("is_presign_request")),
            )
            with self._lock:
                self.calls[function].append(call)

        def fault(model: Any, **_: Any) -> None:
            with self._lock:
                left = self.faults.get((function, model.name), 0)
                self.faults[(function, model.name)] = max(left - 1, 0)
            if left:
                error = {"Error": {"Code": "InternalError", "Message": "injected by the test"}}
                raise ClientError(error, model.name)  # type: ignore[arg-type]

        client.meta.events.register("provide-client-params.*.*", record)
        client.meta.events.register("before-call.*.*", fault)


def defaults() -> dict[str, Callable[[], Any]]:
    """What wiring gives a handler: its `default_*` callables."""
    return {n: v for n, v in vars(wiring).items() if n.startswith("default_") and callable(v)}


def wire(recorder: Recorder, function: str) -> dict[str, Any]:
    """What wiring's `default_*` give `function`, built by wiring's own code over clients
    of the function's own (as its Lambda container would build them)."""
    names = [n for n in defaults() if n != "default_stages"]
    with recorder.building(function), pytest.MonkeyPatch.context() as patch:
        stages = wiring.default_stages.__wrapped__()
        built: dict[str, Any] = {"default_stages": stages}
        patch.setattr(wiring, "default_stages", lambda: stages)
        for name in names:  # in wiring's order: one built of others gets the function's
            original = getattr(wiring, name)
            built[name] = getattr(original, "__wrapped__", original)()
            patch.setattr(wiring, name, lambda value=built[name]: value)
    return built


def dispatch_by_function(
    patch: pytest.MonkeyPatch, recorder: Recorder, wirings: dict[str, dict[str, Any]]
) -> None:
    """Every `default_*` of wiring, whether a handler module imported it or calls it on the
    module, gives the objects of the function whose handler is running."""
    originals = defaults()
    named = {id(value): name for name, value in originals.items()}

    def picker(name: str) -> Callable[[], Any]:
        def pick() -> Any:
            function = recorder.current()
            return originals[name]() if function is None else wirings[function][name]

        return pick

    pickers = {name: picker(name) for name in originals}
    for module_name, module in list(sys.modules.items()):
        if module_name == "handlers" or module_name.startswith("handlers."):
            for attribute, value in list(vars(module).items()):
                if id(value) in named:
                    patch.setattr(module, attribute, pickers[named[id(value)]])
    for name, pick in pickers.items():
        patch.setattr(wiring, name, pick)


# -- the functions, as Lambda runs them ------------------------------------------------


@dataclass
class Functions:
    """The template's functions on the local stack, invoked as Lambda would invoke them."""

    stack: LocalStack
    recorder: Recorder
    template: dict[str, Any]
    modules: dict[str, str] = field(default_factory=dict)
    """Each function's handler module."""
    sources: dict[str, tuple[str, int]] = field(default_factory=dict)
    """The queue (logical id) and batch size of each function's SQS event source."""
    worker: Worker | None = None

    def __post_init__(self) -> None:
        resources = self.template["Resources"]
        for name, resource in resources.items():
            properties = resource.get("Properties", {})
            if resource["Type"] == "AWS::Lambda::Function":
                self.modules[name] = str(properties["Handler"]).rsplit(".", 1)[0]
            elif resource["Type"] == "AWS::Lambda::EventSourceMapping":
                queue = properties["EventSourceArn"]["Fn::GetAtt"][0]
                function = properties["FunctionName"]["Ref"]
                self.sources[function] = (queue, int(properties.get("BatchSize", 10)))
        self.sqs: Any = self.stack.session.client("sqs")  # the event sources': not recorded

    def role(self, function: str) -> str:
        role: str = self.template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
        return role

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        module = importlib.import_module(self.modules[function])
        context = LocalLambdaContext(
            function_name=function,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}",
        )
        with self.recorder.invoking(function):
            return module.handler(event, context)

    def url(self, queue: str) -> str:
        return self.stack.physical_id(queue)

    def _receive(self, queue: str, count: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.url(queue),
            MaxNumberOfMessages=count,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def hand_over(self, function: str, messages: list[dict[str, Any]]) -> set[str]:
        """One invocation of the function on these messages of its queue, as its SQS event
        source makes it; returns the ids of the messages that failed."""
        queue = self.sources[function][0]
        assert self.stack.resolver is not None
        arn = self.stack.resolver.attributes[(queue, "Arn")]
        try:
            result = self.invoke(function, sqs_event(messages, arn))
        except Exception:  # every record failed (Powertools raises): all come back
            return {m["MessageId"] for m in messages}
        return {item["itemIdentifier"] for item in result["batchItemFailures"]}

    def deliver(self, function: str, rounds: int = 30) -> int:
        """What the function's SQS event source does with the messages visible now: hand them
        over in batches; failed ones come back at once. Returns how many were handled."""
        queue, batch_size = self.sources[function]
        handled = 0
        for _ in range(rounds):
            messages = self._receive(queue, batch_size)
            if not messages:
                break
            failed = self.hand_over(function, messages)
            for message in messages:
                handle = message["ReceiptHandle"]
                if message["MessageId"] in failed:
                    self.sqs.change_message_visibility(
                        QueueUrl=self.url(queue), ReceiptHandle=handle, VisibilityTimeout=0
                    )
                else:
                    self.sqs.delete_message(QueueUrl=self.url(queue), ReceiptHandle=handle)
                    handled += 1
        return handled

    def take(self, queue: str, containing: str) -> list[dict[str, Any]]:
        """Take the messages of `queue` whose body holds `containing` off it; the others
        stay."""
        taken, held = [], []
        for message in drain(self.sqs, self.url(queue), attributes=["All"]):
            handle = message["ReceiptHandle"]
            if containing in message["Body"]:
                self.sqs.delete_message(QueueUrl=self.url(queue), ReceiptHandle=handle)
                taken.append(message)
            else:
                held.append(handle)
        for handle in held:  # visible again at once
            self.sqs.change_message_visibility(
                QueueUrl=self.url(queue), ReceiptHandle=handle, VisibilityTimeout=0
            )
        return taken

    def move(self, source: str, target: str, containing: str) -> int:
        """Move the messages of `source` whose body holds `containing` to `target`, as SQS's
        redrive does after the last failed attempt."""
        taken = self.take(source, containing)
        for message in taken:
            self.send(target, message["Body"])
        return len(taken)

    def send(self, queue: str, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url(queue), MessageBody=body)

    def run_shards(self) -> int:
        """The GPU workers' part (not a function: its calls are not recorded here)."""
        assert self.worker is not None
        ran = 0
        while self.worker.poll_once():
            ran += 1
        return ran

    def status(self, batch_id: str) -> str:
        record = self.stack.stages.table.batches.get_batch(batch_id)
        assert record is not None, batch_id
        return record.status

    def pump(self, batch_ids: list[str], timeout: float = 40) -> None:
        """Run the pipeline (intake, workers, finalize, webhooks) until the batches ended."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self.deliver("ValidateFunction") + self.run_shards()
            busy += self.deliver("FinalizeFunction") + self.deliver("WebhookFunction")
            pending = [b for b in batch_ids if self.status(b) not in TERMINAL_STATUSES]
            if not pending:
                return
            assert time.monotonic() < deadline, {b: self.status(b) for b in pending}
            if not busy:
                time.sleep(0.2)

    # -- the API, as API Gateway calls it -------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        form: dict[str, str] | None = None,
        file: tuple[str, str, bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = httpx.Request(
            method,
            f"http://api.local{path}",
            json=body,
            data=form,
            files={file[0]: (file[1], file[2], "application/jsonl")} if file else None,
        )
        data = request.read()
        sent = {"Authorization": f"Bearer {KEY}", **(headers or {})}
        if data:
            sent["Content-Type"] = request.headers["content-type"]
        result = self.invoke("ApiFunction", api_gateway_event(method, path, sent, data))
        raw = result.get("body") or ""
        payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
        try:
            return int(result["statusCode"]), json.loads(payload)
        except ValueError:
            return int(result["statusCode"]), payload


def jsonl(count: int, prefix: str) -> bytes:
    return b"".join(json.dumps(chat_request(f"{prefix}{i}")).encode() + b"\n" for i in range(count))


# -- the scenario: every function along its paths ----------------------------------------


def backdate_batch(stack: LocalStack, batch_id: str, expires_at: int) -> None:
    stack.session.client("dynamodb").update_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": batch_pk(batch_id)}, "sk": {"S": "META"}},
        UpdateExpression="SET expires_at = :t",
        ExpressionAttributeValues={":t": {"N": str(expires_at)}},
    )


@dataclass
class Scenario:
    functions: Functions
    receivers: HttpReceiver  # webhook endpoints and CloudFormation's response URL
    directory: Path
    ids: dict[str, str] = field(default_factory=dict)

    def webhook_endpoints(self) -> None:
        api = self.functions.api
        for name in ("ok", "fail", "doomed"):
            body = {"url": self.receivers.url(f"/{name}"), "event_types": EVENT_TYPES}
            status, created = api("POST", "/v1/webhook_endpoints", body={**body, "name": name})
            assert status == 200, created
            self.ids[f"endpoint-{name}"] = created["id"]
        assert api("GET", "/v1/webhook_endpoints")[0] == 200
        assert api("GET", f"/v1/webhook_endpoints/{self.ids['endpoint-ok']}")[0] == 200
        doomed = self.ids["endpoint-doomed"]
        assert api("DELETE", f"/v1/webhook_endpoints/{doomed}")[0] == 200
        assert api("GET", f"/v1/webhook_endpoints/{doomed}")[0] == 404

    def files(self) -> None:
        api = self.functions.api
        for name, data in {
            "small": jsonl(3, "a"),  # its content inline
            "large": jsonl(12, "b"),  # its content by a presigned URL
            "deleted": jsonl(1, "c"),
            "expiring": jsonl(1, "d"),
        }.items():
            status, created = api(
                "POST", "/v1/files", form={"purpose": "batch"}, file=("file", f"{name}.jsonl", data)
            )
            assert status == 200, created
            self.ids[f"file-{name}"] = created["id"]
        assert api("GET", f"/v1/files/{self.ids['file-small']}/content")[0] == 200
        assert api("GET", f"/v1/files/{self.ids['file-large']}/content")[0] == 302
        assert api("GET", "/v1/files")[0] == 200
        assert api("GET", f"/v1/files/{self.ids['file-small']}")[0] == 200
        assert api("GET", "/v1/files/file-unknown")[0] == 404
        assert api("DELETE", f"/v1/files/{self.ids['file-deleted']}")[0] == 200
        assert api("GET", "/v1/files", headers={"Authorization": "Bearer sk-wrong"})[0] == 401

    def upload(self, name: str, data: bytes, cuts: list[int], md5: str | None = None) -> Any:
        api = self.functions.api
        params = {"filename": f"{name}.jsonl", "purpose": "batch", "bytes": len(data)}
        status, created = api("POST", "/v1/uploads", body=params)
        assert status == 200, created
        self.ids[f"upload-{name}"] = upload_id = created["id"]
        edges = [0, *cuts, len(data)]
        parts = []
        for start, end in itertools.pairwise(edges):
            status, part = api(
                "POST",
                f"/v1/uploads/{upload_id}/parts",
                file=("data", "part", data[start:end]),
            )
            assert status == 200, part
            parts.append(part["id"])
        if md5 == "wrong":
            # The join's multipart write fails first (a 500: the upload is aborted), then a
            # 409 for the wrong MD5 (the joined file is deleted); the upload stays open.
            self.functions.recorder.faults[("ApiFunction", "UploadPart")] = 1
            wrong = {"part_ids": parts, "md5": "0" * 32}
            assert api("POST", f"/v1/uploads/{upload_id}/complete", body=wrong)[0] == 500
            wrong = {"part_ids": parts, "md5": "0" * 32}
            assert api("POST", f"/v1/uploads/{upload_id}/complete", body=wrong)[0] == 409
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        body = {"part_ids": parts, **({"md5": md5} if md5 else {})}
        status, completed = api("POST", f"/v1/uploads/{upload_id}/complete", body=body)
        assert status == 200, completed
        return completed

    def uploads(self) -> None:
        # Joined within the request (a wrong MD5 first).
        inline = self.upload("inline", jsonl(4, "u"), [200], md5="wrong")
        assert inline["file"]["status"] == "processed"
        # Joined by the intake job, streamed (an MD5 to check).
        data = jsonl(40, "j")
        joined = self.upload("joined", data, [3000], hashlib.md5(data).hexdigest())
        assert joined["file"]["status"] == "uploaded"
        self.ids["file-joined"] = joined["file"]["id"]
        # Joined by the intake job server-side (UploadPartCopy): the first attempt's first
        # part fails, so the job aborts the multipart upload, and its retry joins the file.
        line = json.dumps(chat_request("x", "y" * 1000)).encode() + b"\n"
        big = line * (MIN_COPY_PART_BYTES // len(line) + 20)
        copied = self.upload("copied", big, [MIN_COPY_PART_BYTES + 7])
        self.ids["file-copied"] = copied["file"]["id"]
        self.functions.recorder.faults[("ValidateFunction", "UploadPartCopy")] = 1
        # Cancelled.
        params = {"filename": "cancelled.jsonl", "purpose": "batch", "bytes": 10}
        upload_id = self.functions.api("POST", "/v1/uploads", body=params)[1]["id"]
        part = ("data", "part", b'{"a": 1}\n')
        assert self.functions.api("POST", f"/v1/uploads/{upload_id}/parts", file=part)[0] == 200
        assert self.functions.api("POST", f"/v1/uploads/{upload_id}/cancel")[0] == 200

    def create_batch(self, name: str, file_id: str, key: str | None = None) -> str:
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        headers = {"Idempotency-Key": key} if key else None
        status, batch = self.functions.api("POST", "/v1/batches", body=body, headers=headers)
        assert status == 200, batch
        self.ids[f"batch-{name}"] = batch["id"]
        return str(batch["id"])

    def drops(self) -> None:
        stack = self.functions.stack
        for name, data in {
            "dead-intake": jsonl(2, "i"),
            "dead-shard": jsonl(2, "s"),
            "bad": b"this is not JSON\n",
            "urgent": jsonl(2, "e"),
            "overdue": jsonl(2, "o"),
        }.items():
            (self.directory / f"{name}.jsonl").write_bytes(data)
            stack.drop(self.directory / f"{name}.jsonl", name)
        # One intake fails after its batch was recorded (reading the input), every attempt,
        # so its notification goes to the intake dead-letter queue.
        (dead,) = self.functions.take("IntakeQueue", "dead-intake.jsonl")
        self.functions.recorder.faults[("ValidateFunction", "GetObject")] = 1
        assert self.functions.hand_over("ValidateFunction", [dead]) == {dead["MessageId"]}
        self.functions.send("IntakeDeadLetterQueue", dead["Body"])

    def batches(self) -> None:
        api = self.functions.api
        self.create_batch("small", self.ids["file-small"], key="same")
        assert (
            self.create_batch("again", self.ids["file-small"], key="same")
            == (self.ids["batch-small"])
        )
        self.create_batch("waiting", self.ids["file-joined"])  # waits for the join
        self.create_batch("cancelled", self.ids["file-large"])
        self.drops()
        assert self.functions.deliver("ValidateFunction", rounds=100)
        for name in ("dead-shard", "bad", "urgent", "overdue"):
            batch = self.functions.stack.outbox_batch(name)
            assert batch is not None, name
            self.ids[f"batch-{name}"] = batch.id
        assert self.functions.status(self.ids["batch-bad"]) == "failed"
        cancelled = self.ids["batch-cancelled"]
        assert api("POST", f"/v1/batches/{cancelled}/cancel")[0] == 200
        assert api("GET", "/v1/batches")[0] == 200
        assert api("GET", f"/v1/batches/{self.ids['batch-small']}")[0] == 200
        assert api("GET", "/v1/batches/batch_unknown")[0] == 404

    def dead_shards(self) -> None:
        batch_id = self.ids["batch-dead-shard"]
        moved = sum(
            self.functions.move(queue, "ShardDeadLetterQueue", batch_id)
            for queue in ("UrgentShardQueue", "ShardQueue", "BulkShardQueue")
        )
        assert moved
        self.functions.send("ShardDeadLetterQueue", "not a shard")
        assert self.functions.deliver("DeadShardFunction") == moved + 1

    def expiry(self) -> None:
        stack = self.functions.stack
        # Overdue for longer than a batch may stay unfinished: the sweep ends it itself,
        # merging its lines (its first multipart write fails: aborted, the sweep counts the
        # failure, goes on with the rest, and the next run ends the batch).
        backdate_batch(stack, self.ids["batch-overdue"], int(time.time()) - 2 * 3600)
        backdate_batch(stack, self.ids["batch-urgent"], int(time.time()) + 1800)
        expire_file_now(stack, self.ids["file-expiring"])
        self.functions.recorder.faults[("ExpireFunction", "UploadPart")] = 1
        first = self.functions.invoke("ExpireFunction", load_event("expire_schedule.json"))
        assert first["failures"] == {"expire": 1} and first["expired"] == []
        assert first["deleted_files"] == [self.ids["file-expiring"]]
        result = self.functions.invoke("ExpireFunction", load_event("expire_schedule.json"))
        assert result["expired"] == [self.ids["batch-overdue"]]
        assert result["failures"] == {}
        urgent = stack.stages.table.batches.get_batch(self.ids["batch-urgent"])
        assert urgent is not None and urgent.tier == "urgent"

    def run_batches(self) -> None:
        # The first finalize's multipart write fails (aborted); its message comes back.
        self.functions.recorder.faults[("FinalizeFunction", "UploadPart")] = 1
        names = ["small", "waiting", "cancelled", "dead-shard", "urgent", "overdue"]
        self.functions.pump([self.ids[f"batch-{name}"] for name in names])
        expected = {
            "small": "completed",
            "waiting": "completed",
            "cancelled": "cancelled",
            "dead-shard": "completed",
            "urgent": "completed",
            "overdue": "expired",
        }
        assert {n: self.functions.status(self.ids[f"batch-{n}"]) for n in names} == expected
        api = self.functions.api
        cancelled = self.ids["batch-cancelled"]
        status, child = api("POST", f"/v1/batches/{cancelled}/retry")
        assert status == 200, child
        self.ids["batch-retry"] = child["id"]
        self.functions.pump([child["id"]])
        small = self.ids["batch-small"]
        status, results = api("GET", f"/v1/batches/{small}/results")
        assert status == 200 and results["data"], results
        status, parts = api("GET", f"/v1/batches/{small}/result_parts")
        assert status == 200 and parts["data"], parts
        assert api("POST", f"/v1/batches/{small}/cancel")[0] == 409
        copied = self.ids["file-copied"]
        assert api("GET", f"/v1/files/{copied}")[1]["status"] == "processed"

    def webhooks(self) -> None:
        deadline = time.monotonic() + 20
        while not {"/ok", "/fail"} <= {hit.path for hit in self.receivers.requests}:
            assert time.monotonic() < deadline, self.receivers.requests
            if not self.functions.deliver("WebhookFunction"):
                time.sleep(0.2)
        time.sleep(1.5)  # a failed attempt comes back after a second: the last one is given up
        self.functions.deliver("WebhookFunction")

    def dead_intake(self) -> None:
        # Besides the dropped file's notification: each intake job, and a stray message.
        for job in (
            JoinUpload(upload_id=self.ids["upload-joined"]),
            BuildRetryInput(parent_id=self.ids["batch-cancelled"]),
        ):
            self.functions.send("IntakeDeadLetterQueue", job.model_dump_json())
        self.functions.send("IntakeDeadLetterQueue", "{}")
        assert self.functions.deliver("DeadIntakeFunction") == 4
        dropped = self.functions.stack.outbox_batch("dead-intake")
        assert dropped is not None and dropped.status == "failed"

    def model_registry(self) -> None:
        answers = self.receivers.url("/cloudformation")

        def request(name: str, **changes: Any) -> None:
            event = copy.deepcopy(load_event(name))
            event["ResponseURL"] = answers
            event["ResourceProperties"].update(changes.pop("properties", {}))
            event.update(changes)
            self.functions.invoke("ModelRegistryFunction", event)

        request("model_registry_create.json")
        request("model_registry_create.json", RequestType="Update", properties={"Retired": "true"})
        request("model_registry_delete.json")
        request("model_registry_delete.json", PhysicalResourceId="never-registered")
        # Refused while a batch for the model has not ended.
        request("model_registry_create.json", properties={"Name": "busy"})
        store_batch(self.functions.stack, "batch_busy", "in_progress", model="busy")
        request("model_registry_delete.json", PhysicalResourceId="busy")
        assert len([hit for hit in self.receivers.requests if hit.method == "PUT"]) == 6

    def run(self) -> None:
        self.webhook_endpoints()
        self.files()
        self.uploads()
        self.batches()
        self.dead_shards()
        self.expiry()
        self.run_batches()
        self.webhooks()
        self.dead_intake()
        self.model_registry()
        # The batches run above raised the workers' floor at intake; with them done, the
        # sweep lowers it.
        self.functions.invoke("ExpireFunction", load_event("expire_schedule.json"))


# -- the checks ---------------------------------------------------------------------------


@dataclass
class Permissions:
    calls: dict[str, list[Call]]
    policies: dict[str, Policy]
    arns: Arns
    stack: LocalStack


@pytest.fixture(scope="module")
def permissions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Permissions]:
    template = sam_transformed()
    recorder = Recorder()
    receivers = HttpReceiver(204)  # /ok answers 204, /fail 500
    receivers.answer("/fail", 500)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SETTINGS.items():
            patch.setenv(name, value)
        patch.setattr(model_registry, "MODEL_REGISTRY_SECONDS", 0)  # no minute's wait
        # Multipart writes from a few hundred bytes on (S3's 5 MiB parts, shrunk on both
        # sides), so that small batches take the multipart paths and their failures.
        patch.setattr(storage, "_PART_BYTES", 256)
        patch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
        with LocalStack(
            None,
            served_models=[MODEL],
            route_events=False,
            shard_size=4,
            part_size=3,
            worker_fleet=True,  # intake and the sweep size the stack's own workers
        ) as stack:
            wiring.default_api_keys().register(KEY, TENANT, name="permissions")
            functions = Functions(stack, recorder, template)
            for module in functions.modules.values():
                importlib.import_module(module)
            wiring.add_client_hook(recorder.client_hook)
            try:
                wirings = {function: wire(recorder, function) for function in functions.modules}
                # The workers are no function: a service of their own, not recorded.
                worker_stages = wiring.build_stages(get_settings())
                functions.worker = Worker(
                    worker_stages.runner,
                    worker_stages.shard_queue,
                    FakeEngine(MODEL),
                    wait_seconds=0,
                )
                with pytest.MonkeyPatch.context() as dispatch:
                    dispatch_by_function(dispatch, recorder, wirings)
                    Scenario(functions, receivers, tmp_path_factory.mktemp("drops")).run()
            finally:
                wiring.remove_client_hook(recorder.client_hook)
                receivers.close()
            assert stack.resolver is not None
            resolver = stack.resolver
            policies = {
                function: role_policy(
                    template, functions.role(function), resolver.resolve, resolver.condition
                )
                for function in functions.modules
            }
            arns = Arns.of_template(template, stack.physical_id, REGION, ACCOUNT)
            missing = sorted(set(functions.modules) - set(recorder.calls))
            assert not missing, f"functions the scenario never drove: {missing}"
            yield Permissions(dict(recorder.calls), policies, arns, stack)


def test_every_call_of_every_function_is_allowed_by_its_own_role(
    permissions: Permissions,
) -> None:
    refused: dict[str, set[str]] = defaultdict(set)
    unmapped: dict[str, set[str]] = defaultdict(set)
    for function, calls in permissions.calls.items():
        policy = permissions.policies[function]
        for call in calls:
            try:
                refused[function].update(policy.refusals(call, permissions.arns))
            except UnmappedCallError as error:
                unmapped[function].add(str(error))

    def listed(found: dict[str, set[str]]) -> str:
        return "\n".join(
            f"{f}: {item}" for f, items in sorted(found.items()) for item in sorted(items)
        )

    assert not listed(unmapped), f"calls with no IAM mapping (map them):\n{listed(unmapped)}"
    assert not listed(refused), f"calls the function's own role refuses:\n{listed(refused)}"


def test_the_scenario_took_the_paths_that_matter(permissions: Permissions) -> None:
    """The calls the error paths and the less common paths make were all recorded."""
    made = {(f, str(call)) for f, calls in permissions.calls.items() for call in calls}
    for expected in [
        # Failed multipart writes: a server-side join, the API's join, finalize's merge, the
        # sweep's merge of a batch it ends itself.
        ("ValidateFunction", "s3:AbortMultipartUpload"),
        ("ApiFunction", "s3:AbortMultipartUpload"),
        ("FinalizeFunction", "s3:AbortMultipartUpload"),
        ("ExpireFunction", "s3:AbortMultipartUpload"),
        ("ValidateFunction", "s3:UploadPartCopy"),
        ("ValidateFunction", "states:StartExecution"),
        ("ApiFunction", "presigned s3:GetObject"),  # file content and result parts
        ("ApiFunction", "sqs:SendMessage"),  # intake jobs
        ("FinalizeFunction", "states:SendTaskSuccess"),
        ("FinalizeFunction", "events:PutEvents"),
        ("DeadShardFunction", "s3:PutObject"),  # the shard_failed lines
        ("ExpireFunction", "sqs:SendMessageBatch"),  # escalation to the urgent tier
        ("ExpireFunction", "s3:DeleteObject"),  # an expired file
        ("WebhookFunction", "sqs:SendMessage"),  # a failed delivery, queued again
        ("WebhookFunction", "dynamodb:UpdateItem"),  # its tenant's time, the failures
        ("DeadIntakeFunction", "dynamodb:UpdateItem"),
        ("ModelRegistryFunction", "dynamodb:DeleteItem"),
        # The workers sized to the work, by intake and by the sweep.
        ("ValidateFunction", "application-autoscaling:RegisterScalableTarget"),
        ("ValidateFunction", "ecs:DescribeServices"),
        ("ExpireFunction", "application-autoscaling:DescribeScalableTargets"),
        ("ExpireFunction", "application-autoscaling:RegisterScalableTarget"),
    ]:
        assert expected in made, expected


def test_each_role_refuses_what_its_function_must_never_do(permissions: Permissions) -> None:
    stack, arns = permissions.stack, permissions.arns
    bucket = f"arn:aws:s3:::{stack.bucket}"
    table = arns.table(stack.physical_id("BatchTable"))
    assert stack.resolver is not None
    queue = {name: arn for (name, kind), arn in stack.resolver.attributes.items() if kind == "Arn"}
    machine = stack.physical_id("BatchTracker")
    everyone: list[tuple[str, str]] = [
        ("s3:GetObject", "arn:aws:s3:::another-bucket/files/x"),
        ("s3:PutBucketPolicy", bucket),
        ("s3:DeleteBucket", bucket),
        ("dynamodb:GetItem", arns.table("another-table")),
        ("dynamodb:DeleteTable", table),
        ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:another-queue"),
        ("sqs:DeleteQueue", queue["IntakeQueue"]),
        ("states:StartExecution", f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:other"),
        ("states:StopExecution", f"{machine}:x".replace(":stateMachine:", ":execution:")),
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/x"),
        # Sizing sets a floor; it never changes a fleet's task or deletes anything.
        ("ecs:DeleteService", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/c/s"),
        ("ecs:RunTask", f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/t:1"),
        ("application-autoscaling:DeregisterScalableTarget", "*"),
        ("application-autoscaling:PutScalingPolicy", "*"),
    ]
    scaling = [
        (
            "application-autoscaling:RegisterScalableTarget",
            f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/x",
        ),
        ("ecs:UpdateService", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/c/s"),
    ]
    no_s3 = [("s3:GetObject", f"{bucket}/files/x"), ("s3:ListBucket", bucket)]
    never: dict[str, list[tuple[str, str]]] = {
        # Reads its endpoints, updates their failures and its tenant's time budget, and
        # queues its own retries; nothing else.
        "WebhookFunction": [
            *scaling,  # only intake and the sweep size the workers
            *no_s3,
            ("dynamodb:PutItem", table),
            ("dynamodb:DeleteItem", table),
            ("sqs:SendMessage", queue["ShardQueue"]),
            ("sqs:SendMessage", queue["IntakeQueue"]),
            ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
            ("states:StartExecution", machine),
        ],
        # The registry's items only.
        "ModelRegistryFunction": [
            *scaling,  # only intake and the sweep size the workers
            *no_s3,
            ("sqs:SendMessage", queue["ShardQueue"]),
            ("sqs:SendMessage", queue["WebhookQueue"]),
            ("states:StartExecution", machine),
        ],
        # The API hands work to the validate function; it never queues shards or tracks.
        "ApiFunction": [
            *scaling,  # only intake and the sweep size the workers
            ("sqs:SendMessage", queue["ShardQueue"]),
            ("sqs:SendMessage", queue["UrgentShardQueue"]),
            ("sqs:SendMessage", queue["FinalizeQueue"]),
            ("states:StartExecution", machine),
            ("states:SendTaskSuccess", "*"),
        ],
        "FinalizeFunction": [
            *scaling,  # only intake and the sweep size the workers
            ("sqs:SendMessage", queue["ShardQueue"]),
            ("sqs:SendMessage", queue["IntakeQueue"]),
            ("states:StartExecution", machine),
        ],
        "ValidateFunction": [
            ("sqs:SendMessage", queue["FinalizeQueue"]),
            ("sqs:SendMessage", queue["IntakeQueue"]),
            ("states:SendTaskSuccess", "*"),
        ],
        "DeadShardFunction": [
            *scaling,  # only intake and the sweep size the workers
            ("sqs:SendMessage", queue["IntakeQueue"]),
            ("states:StartExecution", machine),
            ("states:SendTaskSuccess", "*"),
        ],
        "DeadIntakeFunction": [
            *scaling,  # only intake and the sweep size the workers
            ("sqs:SendMessage", queue["ShardQueue"]),
            ("states:StartExecution", machine),
        ],
        "ExpireFunction": [
            ("sqs:SendMessage", queue["IntakeQueue"]),
            ("states:StartExecution", machine),
            ("states:SendTaskSuccess", "*"),
        ],
    }
    assert set(never) == set(permissions.policies)  # every function of the template
    allowed = {
        function: [
            f"{action} on {resource}"
            for action, resource in [*everyone, *never[function]]
            if permissions.policies[function].allowed(action, resource)
        ]
        for function in never
    }
    assert allowed == {function: [] for function in never}
