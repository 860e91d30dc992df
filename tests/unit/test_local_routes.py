"""The local stack's queue routes are the template's: every SQS event source mapping that
SAM's own translator makes of template.yaml, to the module of its function's Handler, and
each of those modules has the function the Handler names."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from batchctl.local.routes import LOCAL_ENTRY, sqs_routes
from batchctl.template import load_template, sam_transformed


def deployed_sqs_sources() -> dict[str, str]:
    """Queue logical id -> the Handler of the function it feeds, from the event source
    mappings of the template as CloudFormation receives it (after the SAM transform)."""
    resources: dict[str, Any] = sam_transformed()["Resources"]
    sources: dict[str, str] = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        properties = resource["Properties"]
        queue, _ = properties["EventSourceArn"]["Fn::GetAtt"]
        if resources[queue]["Type"] != "AWS::SQS::Queue":
            continue
        function = resources[properties["FunctionName"]["Ref"]]
        sources[queue] = function["Properties"]["Handler"]
    return sources


def test_the_routes_are_every_sqs_event_source_of_the_template() -> None:
    sources = deployed_sqs_sources()
    assert len(sources) >= 5  # intake, finalize, both dead letters, webhooks
    assert sqs_routes() == {queue: h.rsplit(".", 1)[0] for queue, h in sources.items()}


def test_each_routed_module_has_the_function_its_handler_names() -> None:
    for queue, handler in deployed_sqs_sources().items():
        module_name, function = handler.rsplit(".", 1)
        assert function == LOCAL_ENTRY, f"{queue}: the local event sources call {LOCAL_ENTRY}"
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function, None)), f"{queue}: {handler}"


def _with_function(properties: dict[str, Any]) -> dict[str, Any]:
    """template.yaml with one more function, these its properties."""
    template = load_template()  # a copy of its own
    template["Resources"]["ExtraFunction"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": properties,
    }
    return template


def _sqs(queue: Any) -> dict[str, Any]:
    return {"Events": {"Messages": {"Type": "SQS", "Properties": {"Queue": queue}}}}


def test_a_new_queue_driven_function_is_routed_without_a_second_entry() -> None:
    extra = {"Handler": "handlers.extra.handler", **_sqs({"Fn::GetAtt": "ExtraQueue.Arn"})}
    routes = sqs_routes(_with_function(extra))
    assert routes["ExtraQueue"] == "handlers.extra"
    assert routes.items() > sqs_routes().items()  # the others unchanged


@pytest.mark.parametrize(
    ("properties", "refusal"),
    [
        # The local event sources would call `handler`, not what the template deploys.
        ({"Handler": "handlers.extra.main", **_sqs({"Fn::GetAtt": ["ExtraQueue", "Arn"]})},
         "calls handlers.extra.handler"),
        # A queue already feeding the intake function: SQS hands a message to one of them.
        ({"Handler": "handlers.extra.handler", **_sqs({"Fn::GetAtt": ["IntakeQueue", "Arn"]})},
         "IntakeQueue feeds both"),
        ({"Handler": "handlers.extra.handler", **_sqs({"Ref": "ExtraQueue"})}, "GetAtt"),
        ({**_sqs({"Fn::GetAtt": ["ExtraQueue", "Arn"]})}, "Handler"),
    ],
)  # fmt: skip
def test_a_route_the_local_stack_could_not_honour_is_refused(
    properties: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        sqs_routes(_with_function(properties))
