"""The worker-fleet template's custom resource (`Custom::ServedModel`) -> the model registry.

Create and Update register the model with its queues (`Retired: "true"` retires it: new
batches refused, running ones finish); Delete removes it once no batch for it is left, and
fails with the reason while some are, so a fleet is never deleted under running batches.
A registration that breaks the registry's rules (a name outside the safe set, a queue not
`<stack>-model-*` of this account and region, the stack's own model or another fleet's) is
FAILED with the property and the reason; a Delete never removes another fleet's model.
CloudFormation waits for the answer PUT to the event's ResponseURL, so every outcome,
including an error of ours, is answered.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Literal

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import (
    CloudFormationCustomResourceEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batch_core.errors import BatchCoreError
from batch_core.fleet_sizing import engines_per_worker
from batch_core.records import ServedModel
from batch_core.wiring import default_stages

logger = Logger()
tracer = Tracer()

ResponseStatus = Literal["SUCCESS", "FAILED"]

_ECS_NAME = "[A-Za-z0-9_-]{1,255}"
"""An ECS cluster's or service's name."""

PROPERTIES = {
    "name": "Name",
    "queue_url": "QueueUrl",
    "urgent_queue_url": "UrgentQueueUrl",
    "bulk_queue_url": "BulkQueueUrl",
}
"""The registry's fields as the resource's properties, to name them in a refusal."""


class ServedModelProperties(BaseModel):
    """The resource's properties (CloudFormation passes every value as a string)."""

    model_config = ConfigDict(extra="ignore")

    Name: str = Field(min_length=1, max_length=256)
    """The name requests use (`body.model`)."""
    QueueUrl: str = Field(pattern=r"^https://")
    UrgentQueueUrl: str = Field(default="", pattern=r"^(https://.*)?$")
    BulkQueueUrl: str = Field(default="", pattern=r"^(https://.*)?$")
    Retired: bool = False
    Fleet: str = ""
    ContextLength: int = Field(default=0, ge=0)
    TokensPerSecond: int = Field(default=0, ge=0)
    ScalingTarget: str = Field(default="", pattern=f"^(service/{_ECS_NAME}/{_ECS_NAME})?$")
    """The fleet's ECS service as Application Auto Scaling names it."""
    Gpus: int = Field(default=1, ge=1)
    GpusPerEngine: int = Field(default=0, ge=0)
    ColdStartSeconds: int = Field(default=0, ge=0, le=86400)

    def served_model(self) -> ServedModel:
        return ServedModel(
            name=self.Name,
            queue_url=self.QueueUrl,
            urgent_queue_url=self.UrgentQueueUrl,
            bulk_queue_url=self.BulkQueueUrl,
            status="retiring" if self.Retired else "active",
            fleet=self.Fleet,
            context_length=self.ContextLength,
            tokens_per_second=self.TokensPerSecond,
            scaling_target=self.ScalingTarget,
            engines_per_worker=engines_per_worker(self.Gpus, self.GpusPerEngine),
            cold_start_seconds=self.ColdStartSeconds,
        )


def apply(event: CloudFormationCustomResourceEvent) -> tuple[ResponseStatus, str, str]:
    """Carry out the request: (status, reason, physical resource id: the model's name)."""
    registry = default_stages().registry
    if event.request_type == "Delete":
        name = event.physical_resource_id
        fleet = str((event.resource_properties or {}).get("Fleet", ""))
        if registry.remove(name, fleet=fleet):
            return "SUCCESS", f"removed {name}", name
        current = registry.repository.models.get_model(name)
        if current is None:
            return "SUCCESS", f"{name} was not registered", name
        # Another fleet's (or one added by hand): this stack's delete leaves it alone.
        return "SUCCESS", f"{name} is not this fleet's (it is {current.fleet!r}'s): kept", name
    properties = ServedModelProperties.model_validate(event.resource_properties)
    stored = registry.register(properties.served_model())
    return "SUCCESS", f"{stored.name} is {stored.status}", stored.name


def answer(event: CloudFormationCustomResourceEvent) -> dict[str, Any]:
    """The response document; a refused or failed request is FAILED with its reason."""
    # A Create that failed has no physical id of its own: its Delete then removes nothing.
    physical = event.get("PhysicalResourceId") or f"unregistered-{event.request_id}"
    try:
        status, reason, physical = apply(event)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        status, reason = "FAILED", f"invalid properties: {problems}"
    except BatchCoreError as error:
        field = PROPERTIES.get(error.param or "")
        status, reason = "FAILED", f"{field}: {error}" if field else str(error)
    except Exception as error:  # CloudFormation waits an hour for an answer that never comes
        logger.exception("the model registry request failed")
        status, reason = "FAILED", f"{type(error).__name__}: {error}"
    return {
        "Status": status,
        "Reason": reason[:1000],
        "PhysicalResourceId": physical,
        "StackId": event.stack_id,
        "RequestId": event.request_id,
        "LogicalResourceId": event.logical_resource_id,
        "Data": {"Name": physical},
    }


def respond(url: str, document: dict[str, Any]) -> None:
    """PUT the answer to the presigned URL CloudFormation gave (no content type: the URL
    was signed without one)."""
    body = json.dumps(document).encode()
    request = urllib.request.Request(  # CloudFormation's own presigned S3 URL
        url, data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=CloudFormationCustomResourceEvent)
def handler(event: CloudFormationCustomResourceEvent, context: LambdaContext) -> None:
    document = answer(event)
    logger.info("answering CloudFormation", extra={k: document[k] for k in ("Status", "Reason")})
    respond(event.response_url, document)
