"""Which handler module each queue's messages go to, read from template.yaml's SQS event
sources (a function's `Events` of type SQS and its `Handler`), so the local stack routes
exactly what a deploy maps and a new queue-driven function needs no second entry here."""

from __future__ import annotations

from typing import Any

from batchctl.template import load_template

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LOCAL_ENTRY = "handler"
"""The function the local event sources call in a handler module (`EventSources.route`)."""


def handler_of(template: dict[str, Any], properties: dict[str, Any]) -> tuple[str, str]:
    """A function's Handler (`package.module.function`, or the Globals' one) as its module
    and function names."""
    handler = properties.get("Handler") or template.get("Globals", {}).get("Function", {}).get(
        "Handler"
    )
    if not handler or "." not in str(handler):
        raise ValueError(f"not a module.function Handler: {handler!r}")
    module, function = str(handler).rsplit(".", 1)
    return module, function


def queue_of(event: dict[str, Any]) -> str:
    """The logical id of an SQS event's queue (`Queue: !GetAtt Name.Arn`)."""
    queue = event.get("Properties", {}).get("Queue")
    target = queue.get("Fn::GetAtt") if isinstance(queue, dict) else None
    if isinstance(target, str):  # the long form may spell it "Name.Arn"
        target = target.split(".", 1)
    if not isinstance(target, list) or target[1:] != ["Arn"]:
        raise ValueError(f"an SQS event's Queue must be the GetAtt of a queue's Arn: {queue!r}")
    return str(target[0])


def sqs_routes(template: dict[str, Any] | None = None) -> dict[str, str]:
    """Queue logical id -> handler module, for every SQS event source of every function."""
    template = load_template() if template is None else template
    routes: dict[str, str] = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != SERVERLESS_FUNCTION:
            continue
        properties = resource.get("Properties", {})
        events = [e for e in (properties.get("Events") or {}).values() if e["Type"] == "SQS"]
        if not events:
            continue
        module, function = handler_of(template, properties)
        if function != LOCAL_ENTRY:
            raise ValueError(
                f"{name}: the local stack calls {module}.{LOCAL_ENTRY}, not {function}"
            )
        for event in events:
            queue = queue_of(event)
            if routes.get(queue, module) != module:  # SQS hands a message to one consumer
                raise ValueError(f"{queue} feeds both {routes[queue]} and {module}")
            routes[queue] = module
    return routes
