"""Creates a CloudFormation template's stack in moto (in-process `mock_aws`), every resource
of it, the way CloudFormation would.

moto's CloudFormation implements only some resource types: it skips the others (a warning,
then a Ref to them resolves to nothing) or fails on them. So one `create_stack` runs with
moto's resource creation hooked (`StackCreator.hooked`). Each resource's properties are
resolved here (`TemplateResolver`: Ref, GetAtt, Sub, Select, Split, Join, If, ImportValue,
Base64 and `{{resolve:ssm:...}}`, against the stack's parameters, pseudo parameters with
moto's real-looking stack id, and the physical ids of the resources already created), then:

- a resource of a type moto's CloudFormation implements is created by it, from the resolved
  properties (but for the types it gets wrong, `THROUGH_API_THOUGH_MOTO_HAS_IT`);
- every other resource is created by the service API CloudFormation itself calls for that
  type (`CREATORS`), through boto3, so botocore checks the resolved properties against the
  API's parameter shapes before moto sees them (a property no creator maps is refused);
- a custom resource (`Custom::...`) runs the Lambda function its ServiceToken names, in this
  process (`CustomResources`), with a Create event, and must answer SUCCESS;
- a nested stack (`AWS::CloudFormation::Stack`) is a stack created the same way, from the
  template its TemplateURL names in S3, with its Parameters; its Outputs are its attributes;
- a type moto has no API for at all is left out if the caller's `not_creatable` names it.

Every resource is created after the resources it references or depends on (the Ref, GetAtt,
Sub and DependsOn graph, `dependency_graph`), in the one stack, so Outputs and Exports are
moto's own and a later stack's Fn::ImportValue finds them.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import json
import os
import re
import secrets
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import boto3
from botocore import xform_name
from botocore.model import Shape, StructureShape

from batchctl.template import Resolver, parse_template
from tests.receivers import HttpReceiver

NO_VALUE: Any = object()
"""What `Ref: AWS::NoValue` resolves to: the property (or list item) is left out."""

_INTRINSICS = frozenset(
    {
        "Ref",
        "Fn::GetAtt",
        "Fn::Sub",
        "Fn::If",
        "Fn::Join",
        "Fn::Split",
        "Fn::Select",
        "Fn::ImportValue",
        "Fn::Base64",
    }
)
_SUB_NAME = re.compile(r"\$\{([^}]+)\}")
_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:([a-z-]+):([^}]+)\}\}")


# -- intrinsic functions ---------------------------------------------------------------------


class _Attributes(dict[tuple[str, str], Any]):
    """GetAtt values: those of resources created through their APIs are stored; those of
    resources moto's CloudFormation created are asked of moto's resource object."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, Any] = {}

    def __missing__(self, key: tuple[str, str]) -> Any:
        logical, attribute = key
        if logical not in self.models:
            raise KeyError(f"Fn::GetAtt {logical}.{attribute}: {logical} was not created yet")
        return self.models[logical].get_cfn_attribute(attribute)


@dataclass
class TemplateResolver(Resolver):
    """batchctl's Resolver with the rest of the intrinsic functions CloudFormation resolves:
    Sub with its variable map, Select, Split, Join, ImportValue, Base64, `Ref: AWS::NoValue`
    (the property is left out) and dynamic references `{{resolve:ssm:name}}`."""

    exports: Mapping[str, Any] = field(default_factory=dict)
    """Export name -> value, for Fn::ImportValue."""
    ssm_parameter: Callable[[str], str] | None = None
    """Reads an SSM parameter, for `{{resolve:ssm:name}}`."""

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if isinstance(value, str):
            return self._dynamic_references(value)
        if not isinstance(value, dict):
            return value
        if len(value) == 1 and (next(iter(value)) in _INTRINSICS or "Fn::" in next(iter(value))):
            ((function, argument),) = value.items()
            if function not in _INTRINSICS:
                raise NotImplementedError(f"{function} is not resolved here")
            return self._intrinsic(function, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _intrinsic(self, function: str, argument: Any) -> Any:
        if function == "Ref":
            return NO_VALUE if argument == "AWS::NoValue" else self._ref(argument)
        if function == "Fn::GetAtt":
            logical, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.attributes[(logical, attribute)]
        if function == "Fn::Sub":
            return self._substitute(argument)
        if function == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if self.condition(name) else when_false)
        if function == "Fn::Join":
            delimiter, items = argument
            return str(delimiter).join(str(item) for item in self.resolve(items))
        if function == "Fn::Split":
            delimiter, text = argument
            return str(self.resolve(text)).split(delimiter)
        if function == "Fn::Select":
            index, items = argument
            return self.resolve(items)[int(self.resolve(index))]
        if function == "Fn::ImportValue":
            name = self.resolve(argument)
            if name not in self.exports:
                raise KeyError(f"Fn::ImportValue: no stack exports {name!r}")
            return self.exports[name]
        assert function == "Fn::Base64"
        return base64.b64encode(str(self.resolve(argument)).encode()).decode()

    def _substitute(self, argument: Any) -> str:
        template, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: self.resolve(value) for name, value in variables.items()}

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name:
                logical, attribute = name.split(".", 1)
                return str(self.attributes[(logical, attribute)])
            return str(self._ref(name))

        return _SUB_NAME.sub(one, template)

    def _dynamic_references(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            service, name = match.groups()
            if service != "ssm" or self.ssm_parameter is None:
                raise KeyError(f"dynamic reference {match.group(0)!r} is not resolved here")
            return self.ssm_parameter(name)

        return _DYNAMIC_REFERENCE.sub(one, text)


def parameter_values(template: dict[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    """What `Ref` gives for each parameter: the given value or the default, a list for the
    list types (CloudFormation hands Number parameters to Ref as strings)."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        if name not in given and "Default" not in spec:
            raise KeyError(f"parameter {name} has no value and no default")
        value = str(given.get(name, spec.get("Default", "")))
        kind = str(spec.get("Type", "String"))
        values[name] = value.split(",") if "List" in kind else value
    return values


def check_parameters(
    template: dict[str, Any], given: Mapping[str, str], exists: Callable[[str, list[str]], bool]
) -> None:
    """What CloudFormation checks of the parameters before it creates anything: every given
    one is declared, and each value (given or default) keeps its declared constraints and, for
    the AWS-specific types, names something that exists (`exists(type, values)`)."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"Parameters: {unknown} do not exist in the template")
    for name, spec in declared.items():
        value = str(given.get(name, spec.get("Default", "")))
        kind = str(spec.get("Type", "String"))
        values = value.split(",") if "List" in kind else [value]
        for one in values:
            problem = _parameter_problem(spec, kind, one)
            if problem:
                raise ValueError(f"Parameter '{name}' {problem} (value {one!r})")
        if kind.startswith(("AWS::", "List<AWS::")) and not exists(kind, values):
            raise ValueError(f"Parameter '{name}': {values} do not exist ({kind})")


def _parameter_problem(spec: Mapping[str, Any], kind: str, value: str) -> str | None:
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return f"must be one of AllowedValues {spec['AllowedValues']}"
    if "AllowedPattern" in spec and not re.fullmatch(str(spec["AllowedPattern"]), value):
        return f"must match pattern {spec['AllowedPattern']}"
    if len(value) > int(spec.get("MaxLength", len(value))):
        return f"must contain at most {spec['MaxLength']} characters"
    if len(value) < int(spec.get("MinLength", 0)):
        return f"must contain at least {spec['MinLength']} characters"
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            return "must be a number"
        if number < float(spec.get("MinValue", number)):
            return f"must be at least {spec['MinValue']}"
        if number > float(spec.get("MaxValue", number)):
            return f"must be at most {spec['MaxValue']}"
    return None


# -- the dependency graph --------------------------------------------------------------------


def active_resources(template: dict[str, Any], resolver: Resolver) -> list[str]:
    """The resources the stack has with these parameters (their Condition holds)."""
    return [
        name
        for name, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    ]


def references(value: Any, resolver: Resolver) -> set[str]:
    """Every name a value's Ref, GetAtt and Sub name (only the branch an Fn::If takes)."""
    if isinstance(value, list):
        return set().union(*(references(item, resolver) for item in value))
    if not isinstance(value, dict):
        return set()
    if set(value) == {"Ref"}:
        return {value["Ref"]}
    if set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        return {target[0] if isinstance(target, list) else target.split(".", 1)[0]}
    if set(value) == {"Fn::If"}:
        name, when_true, when_false = value["Fn::If"]
        return references(when_true if resolver.condition(name) else when_false, resolver)
    if set(value) == {"Fn::Sub"}:
        argument = value["Fn::Sub"]
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        named = {
            name.split(".", 1)[0]
            for name in _SUB_NAME.findall(text)
            if not name.startswith("!") and name not in variables
        }
        return named | references(list(variables.values()), resolver)
    return set().union(*(references(item, resolver) for item in value.values()))


def dependency_graph(template: dict[str, Any], resolver: Resolver) -> dict[str, set[str]]:
    """Active resource -> the active resources it must be created after (Ref, GetAtt, Sub,
    DependsOn). A reference to a resource whose Condition is false (outside an Fn::If branch
    not taken) is refused, as CloudFormation refuses it (Unresolved resource dependencies)."""
    active = active_resources(template, resolver)
    graph: dict[str, set[str]] = {}
    for name in active:
        resource = template["Resources"][name]
        depends_on = resource.get("DependsOn", [])
        named = references(resource.get("Properties", {}), resolver)
        named |= {depends_on} if isinstance(depends_on, str) else set(depends_on)
        missing = sorted(other for other in named - set(active) if other in template["Resources"])
        if missing:
            raise ValueError(
                f"{name}: unresolved resource dependencies {missing} (Condition false)"
            )
        graph[name] = {other for other in named if other in active and other != name}
    return graph


def creation_order(graph: Mapping[str, set[str]]) -> list[str]:
    """A topological order of the graph (template order where free); refuses a cycle."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"dependency cycle: {' -> '.join((*path, name))}")
        state[name] = "visiting"
        for dependency in sorted(graph[name], key=list(graph).index):
            visit(dependency, (*path, name))
        state[name] = "done"
        order.append(name)

    for name in graph:
        visit(name, ())
    return order


# -- calling a service API with CloudFormation's properties ----------------------------------


def conform(value: Any, shape: Shape | None) -> Any:
    """CloudFormation's properties in the API's parameter shape, as CloudFormation converts
    them: member names matched regardless of case (CFN's PascalCase for the API's camelCase),
    scalars to the shape's type (a Ref to a Number parameter is a string), `[{Key, Value}]`
    tags to a map. A key the shape lacks is passed on as it is, for botocore to refuse."""
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        assert isinstance(shape, StructureShape)
        names: dict[str, str] = {str(name).lower(): str(name) for name in shape.members}
        conformed = {}
        for key, item in value.items():
            member = names.get(str(key).lower(), str(key))
            conformed[member] = conform(item, shape.members.get(member))
        return conformed
    if kind == "list" and isinstance(value, list):
        return [conform(item, shape.member) for item in value]  # type: ignore[attr-defined]
    if kind == "map" and isinstance(value, list):
        value = {tag["Key"]: tag["Value"] for tag in value}
    if kind == "map" and isinstance(value, dict):
        return {key: conform(item, shape.value) for key, item in value.items()}  # type: ignore[attr-defined]
    return _scalar(value, kind)


def _scalar(value: Any, kind: str) -> Any:
    if kind in ("integer", "long") and isinstance(value, str):
        return int(value)
    if kind in ("float", "double") and isinstance(value, str | int):
        return float(value)
    if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "string" and isinstance(value, bool):
        return str(value).lower()
    if kind == "string" and isinstance(value, int | float):
        return str(value)
    return value


def call(client: Any, operation: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """`client.<operation>(**parameters)` with the parameters conformed to its input shape;
    botocore validates them before the request is sent."""
    model = client.meta.service_model.operation_model(operation)
    arguments = conform(dict(parameters), model.input_shape)
    response: dict[str, Any] = getattr(client, xform_name(operation))(**arguments)
    return response


@dataclass
class Created:
    """A resource created through its API: what Ref and GetAtt give for it."""

    physical_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApiContext:
    """What a creator needs: clients, and CloudFormation's way of naming what is unnamed."""

    session: boto3.session.Session
    stack_name: str
    region: str
    account: str
    stack_id: str = ""
    nest: Callable[[str, str, Mapping[str, Any]], Created] | None = None
    """Creates a nested stack of this one: (logical id, TemplateURL, Parameters)."""
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.region)  # type: ignore[call-overload]
        return self._clients[service]

    def generated_name(self, logical: str, max_length: int = 255, *, lower: bool = False) -> str:
        """CloudFormation's name for a resource whose template gives none:
        <stack>-<logical id>-<random>, cut to the type's limit."""
        suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12))
        prefix = f"{self.stack_name}-{logical}"[: max_length - len(suffix) - 1]
        name = f"{prefix}-{suffix}"
        return name.lower() if lower else name


def _done(logical: str, properties: Mapping[str, Any]) -> None:
    """Every property a creator does not hand to the API must have been consumed by it."""
    if properties:
        raise ValueError(f"{logical}: properties not mapped to any API call: {sorted(properties)}")


Creator = Callable[[ApiContext, str, dict[str, Any]], Created]


def _apigateway_account(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    role = props.pop("CloudWatchRoleArn", None)
    _done(logical, props)
    operations = [{"op": "replace", "path": "/cloudwatchRoleArn", "value": role}] if role else []
    call(ctx.client("apigateway"), "UpdateAccount", {"patchOperations": operations})
    return Created(ctx.generated_name(logical))


def _rest_api(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    """CreateRestApi, then the OpenAPI body through PutRestApi, as CloudFormation does."""
    body = props.pop("Body", None)
    body_keys: tuple[str, ...] = ("Mode", "FailOnWarnings", "Parameters")
    body_options = {key: props.pop(key) for key in body_keys if key in props}
    if "BodyS3Location" in props:
        raise NotImplementedError(f"{logical}: BodyS3Location is not read here")
    if isinstance(props.get("Policy"), dict):
        props["Policy"] = json.dumps(props["Policy"])
    if "ApiKeySourceType" in props:
        props["apiKeySource"] = props.pop("ApiKeySourceType")
    client = ctx.client("apigateway")
    api = call(client, "CreateRestApi", props)
    if body is not None:
        request: dict[str, Any] = {"restApiId": api["id"], "mode": "overwrite", **body_options}
        try:
            call(client, "PutRestApi", {**request, "body": json.dumps(body).encode()})
        except client.exceptions.BadRequestException as error:
            # moto imports OpenAPI 3 only; API Gateway takes SAM's Swagger 2.0 too. The paths
            # and x-amazon-apigateway-integration SAM writes read the same in both.
            if "swagger" not in body or "OpenAPI 3" not in str(error):
                raise
            relabelled = {"openapi": "3.0.1", **{k: v for k, v in body.items() if k != "swagger"}}
            call(client, "PutRestApi", {**request, "body": json.dumps(relabelled).encode()})
    return Created(api["id"], {"RootResourceId": api["rootResourceId"], "RestApiId": api["id"]})


def _deployment(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    if "StageDescription" in props:  # CloudFormation's own: the stage's settings, not a text
        raise NotImplementedError(f"{logical}: StageDescription is not mapped here")
    if "DeploymentCanarySettings" in props:
        props["canarySettings"] = props.pop("DeploymentCanarySettings")
    deployment = call(ctx.client("apigateway"), "CreateDeployment", props)
    return Created(deployment["id"], {"DeploymentId": deployment["id"]})


_METHOD_SETTING_PATHS = {
    "ThrottlingRateLimit": "throttling/rateLimit",
    "ThrottlingBurstLimit": "throttling/burstLimit",
    "LoggingLevel": "logging/loglevel",
    "DataTraceEnabled": "logging/dataTrace",
    "MetricsEnabled": "metrics/enabled",
    "CachingEnabled": "caching/enabled",
    "CacheTtlInSeconds": "caching/ttlInSeconds",
    "CacheDataEncrypted": "caching/dataEncrypted",
}


def _stage_patches(access_log: Mapping[str, Any], methods: list[Any]) -> list[dict[str, str]]:
    """A stage's AccessLogSetting and MethodSettings: UpdateStage patches, as CloudFormation
    applies them (CreateStage takes neither)."""
    patches = []
    for key, value in access_log.items():
        name = {"DestinationArn": "destinationArn", "Format": "format"}[key]
        patches.append({"op": "replace", "path": f"/accessLogSettings/{name}", "value": value})
    for method in methods:
        setting = dict(method)
        where = f"{setting.pop('ResourcePath')}/{setting.pop('HttpMethod')}"
        for key, value in setting.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if key not in _METHOD_SETTING_PATHS:
                raise ValueError(f"MethodSettings: {key} is not mapped to a stage setting")
            path = f"{where}/{_METHOD_SETTING_PATHS[key]}"
            patches.append({"op": "replace", "path": path, "value": text})
    return patches


def _apigateway_stage(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    patches = _stage_patches(props.pop("AccessLogSetting", {}), props.pop("MethodSettings", []))
    if "CanarySetting" in props:
        props["canarySettings"] = props.pop("CanarySetting")
    client = ctx.client("apigateway")
    stage = call(client, "CreateStage", props)
    if patches:
        call(
            client,
            "UpdateStage",
            {
                "restApiId": props["RestApiId"],
                "stageName": stage["stageName"],
                "patchOperations": patches,
            },
        )
    return Created(stage["stageName"])


def _apigateway_domain_name(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    domain = call(ctx.client("apigateway"), "CreateDomainName", props)
    keys = ("RegionalDomainName", "RegionalHostedZoneId", "DistributionDomainName")
    attributes = {key: domain.get(key[0].lower() + key[1:], "") for key in keys}
    return Created(domain["domainName"], attributes)


def _apigateway_base_path_mapping(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    mapping = call(ctx.client("apigateway"), "CreateBasePathMapping", props)
    return Created(f"{props['DomainName']}/{mapping.get('basePath', '(none)')}")


def _scalable_target(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    call(ctx.client("application-autoscaling"), "RegisterScalableTarget", props)
    target = "|".join(props[key] for key in ("ResourceId", "ScalableDimension", "ServiceNamespace"))
    return Created(target, {"Id": target})


def _scaling_policy(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    target = props.pop("ScalingTargetId", None)
    if target:  # CloudFormation's own: ResourceId|ScalableDimension|ServiceNamespace
        resource, dimension, namespace = target.split("|")
        props.update(ResourceId=resource, ScalableDimension=dimension, ServiceNamespace=namespace)
    policy = call(ctx.client("application-autoscaling"), "PutScalingPolicy", props)
    return Created(policy["PolicyARN"], {"Arn": policy["PolicyARN"]})


def _alarm(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    props.setdefault("AlarmName", ctx.generated_name(logical))
    client = ctx.client("cloudwatch")
    call(client, "PutMetricAlarm", props)
    (alarm,) = client.describe_alarms(AlarmNames=[props["AlarmName"]])["MetricAlarms"]
    return Created(props["AlarmName"], {"Arn": alarm["AlarmArn"]})


def _capacity_provider(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    props.setdefault("Name", ctx.generated_name(logical))
    provider = call(ctx.client("ecs"), "CreateCapacityProvider", props)["capacityProvider"]
    return Created(provider["name"], {"Arn": provider["capacityProviderArn"]})


def _cluster_capacity_providers(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    cluster = call(ctx.client("ecs"), "PutClusterCapacityProviders", props)["cluster"]
    return Created(cluster["clusterName"])


def _ecr_repository(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    props.pop("EmptyOnDelete", None)  # what a stack delete does: no API call at create
    lifecycle = props.pop("LifecyclePolicy", None)
    policy = props.pop("RepositoryPolicyText", None)
    # CloudFormation's generated repository names are lower case (ECR allows no other).
    props.setdefault("RepositoryName", ctx.generated_name(logical, 256, lower=True))
    client = ctx.client("ecr")
    repository = call(client, "CreateRepository", props)["repository"]
    name = repository["repositoryName"]
    if lifecycle:
        call(client, "PutLifecyclePolicy", {"repositoryName": name, **lifecycle})
    if policy:
        text = policy if isinstance(policy, str) else json.dumps(policy)
        call(client, "SetRepositoryPolicy", {"repositoryName": name, "policyText": text})
    return Created(
        name, {"Arn": repository["repositoryArn"], "RepositoryUri": repository["repositoryUri"]}
    )


def _bucket_policy(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    bucket = props.pop("Bucket")
    document = props.pop("PolicyDocument")
    _done(logical, props)
    call(ctx.client("s3"), "PutBucketPolicy", {"Bucket": bucket, "Policy": json.dumps(document)})
    return Created(bucket)


_SUBSCRIPTION_ATTRIBUTES = (
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "ReplayPolicy",
    "SubscriptionRoleArn",
)


def _subscription(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    props.pop("Region", None)  # the topic's region: this one here
    attributes = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key in _SUBSCRIPTION_ATTRIBUTES
        if (value := props.pop(key, None)) is not None
    }
    request = {**props, "ReturnSubscriptionArn": True}
    if attributes:
        request["Attributes"] = attributes
    subscription = call(ctx.client("sns"), "Subscribe", request)
    return Created(subscription["SubscriptionArn"])


def _topic_policy(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    topics, document = props.pop("Topics"), json.dumps(props.pop("PolicyDocument"))
    _done(logical, props)
    for topic in topics:
        request = {"TopicArn": topic, "AttributeName": "Policy", "AttributeValue": document}
        call(ctx.client("sns"), "SetTopicAttributes", request)
    return Created(ctx.generated_name(logical))


def _queue_policy(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    queues, document = props.pop("Queues"), json.dumps(props.pop("PolicyDocument"))
    _done(logical, props)
    for queue in queues:
        request = {"QueueUrl": queue, "Attributes": {"Policy": document}}
        call(ctx.client("sqs"), "SetQueueAttributes", request)
    return Created(ctx.generated_name(logical))


def _web_acl(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    props.setdefault("Name", ctx.generated_name(logical, 128))
    summary = call(ctx.client("wafv2"), "CreateWebACL", props)["Summary"]
    return Created(
        f"{summary['Name']}|{summary['Id']}|{props['Scope']}",
        {"Arn": summary["ARN"], "Id": summary["Id"]},
    )


def _web_acl_association(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    call(ctx.client("wafv2"), "AssociateWebACL", props)
    return Created(f"{props['ResourceArn']}|{props['WebACLArn']}")


def _nested_stack(ctx: ApiContext, logical: str, props: dict[str, Any]) -> Created:
    assert ctx.nest is not None, "nested stacks are created by a StackCreator"
    url = props.pop("TemplateURL")
    parameters = props.pop("Parameters", {})
    _done(logical, props)
    return ctx.nest(logical, url, parameters)


CREATORS: dict[str, Creator] = {
    "AWS::ApiGateway::Account": _apigateway_account,
    "AWS::ApiGateway::RestApi": _rest_api,
    "AWS::ApiGateway::Deployment": _deployment,
    "AWS::ApiGateway::Stage": _apigateway_stage,
    "AWS::ApiGateway::DomainName": _apigateway_domain_name,
    "AWS::ApiGateway::BasePathMapping": _apigateway_base_path_mapping,
    "AWS::ApplicationAutoScaling::ScalableTarget": _scalable_target,
    "AWS::ApplicationAutoScaling::ScalingPolicy": _scaling_policy,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::CloudFormation::Stack": _nested_stack,
    "AWS::ECR::Repository": _ecr_repository,
    "AWS::ECS::CapacityProvider": _capacity_provider,
    "AWS::ECS::ClusterCapacityProviderAssociations": _cluster_capacity_providers,
    "AWS::S3::BucketPolicy": _bucket_policy,
    "AWS::SNS::Subscription": _subscription,
    "AWS::SNS::TopicPolicy": _topic_policy,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::WAFv2::WebACL": _web_acl,
    "AWS::WAFv2::WebACLAssociation": _web_acl_association,
}
"""Resource type -> its creation through the service API CloudFormation calls for it."""

THROUGH_API_THOUGH_MOTO_HAS_IT: dict[str, str] = {
    "AWS::ApiGateway::RestApi": (
        "moto's CloudFormation drops Body (the OpenAPI definition): the API gets no methods "
        "and its Deployment is refused (The REST API doesn't contain any methods)"
    ),
    "AWS::ApiGateway::Deployment": (
        "moto's Deployment has no physical id: a Ref to it (a Stage's DeploymentId) "
        "resolves to moto's Python object instead of the deployment id"
    ),
    "AWS::CloudFormation::Stack": (
        "moto's nested stack creates its resources with moto's CloudFormation alone, which "
        "lacks types the workers use (capacity providers, scaling policies, alarms)"
    ),
    "AWS::ECR::Repository": (
        "moto's CloudFormation names an unnamed repository <stack>-<LogicalId>-<random> with "
        "capitals, which its own ECR then refuses (CloudFormation's names are lower case)"
    ),
}
"""Types moto's CloudFormation implements but cannot create as CloudFormation does."""


# -- custom resources ------------------------------------------------------------------------


class CustomResources:
    """A custom resource's Lambda function (its ServiceToken), run in this process as Lambda
    would: its configured handler with its configured environment. CloudFormation's presigned
    response URL is a local HTTP server that keeps each answer."""

    def __init__(self, session: boto3.session.Session, region: str) -> None:
        self.session = session
        self.region = region
        self.events: list[dict[str, Any]] = []
        self._receiver: HttpReceiver | None = None

    def __enter__(self) -> CustomResources:
        self._receiver = HttpReceiver()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.close()

    @property
    def answers(self) -> list[dict[str, Any]]:
        assert self._receiver is not None, "use CustomResources as a context manager"
        return [json.loads(put.body) for put in self._receiver.requests]

    @property
    def response_url(self) -> str:
        assert self._receiver is not None, "use CustomResources as a context manager"
        return self._receiver.url("/cloudformation-response?X-Amz-Signature=local")

    def create(self, stack_id: str, logical: str, kind: str, props: dict[str, Any]) -> Created:
        event = {
            "RequestType": "Create",
            "ServiceToken": props["ServiceToken"],
            "ResponseURL": self.response_url,
            "StackId": stack_id,
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": logical,
            "ResourceType": kind,
            # CloudFormation hands a custom resource every scalar property as a string.
            "ResourceProperties": _strings(props),
        }
        self.events.append(event)
        self.invoke(event)
        answer = next((a for a in self.answers if a.get("RequestId") == event["RequestId"]), None)
        if answer is None:
            raise RuntimeError(f"{logical}: the function never answered CloudFormation")
        if answer.get("Status") != "SUCCESS":
            raise RuntimeError(f"{logical}: the function answered {answer}")
        return Created(answer["PhysicalResourceId"], dict(answer.get("Data") or {}))

    def invoke(self, event: dict[str, Any]) -> None:
        lambda_client = self.session.client("lambda", region_name=self.region)
        config = lambda_client.get_function_configuration(FunctionName=event["ServiceToken"])
        module_name, function_name = config["Handler"].rsplit(".", 1)
        environment = {
            **config.get("Environment", {}).get("Variables", {}),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
        }
        from batch_core import wiring
        from batchctl.local import LocalLambdaContext

        with _environment(environment):
            wiring.reset()  # the function's own settings, not a previous process's
            try:
                handler = getattr(importlib.import_module(module_name), function_name)
                context = LocalLambdaContext(
                    config["FunctionName"],
                    memory_limit_in_mb=config.get("MemorySize", 128),
                    aws_request_id=str(uuid.uuid4()),
                    invoked_function_arn=config["FunctionArn"],
                )
                handler(copy.deepcopy(event), context)
            finally:
                wiring.reset()


def _strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strings(item) for item in value]
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- the stack -------------------------------------------------------------------------------


class ResourceCreationError(RuntimeError):
    """A resource's creation failed: which one, and why (botocore's or moto's refusal, a
    reference that does not resolve, a property no creator maps)."""


class ApiCreatedResource:
    """What moto's CloudFormation holds for a resource created through its API (or a custom
    resource): its Ref and GetAtt values, as moto's own resource objects give them."""

    def __init__(self, logical: str, kind: str, created: Created) -> None:
        self.logical_resource_id = logical
        self.cf_resource_type = kind
        self.physical_resource_id = created.physical_id
        self.attributes = created.attributes

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute: str) -> Any:
        if attribute not in self.attributes:
            raise KeyError(f"{self.logical_resource_id} has no attribute {attribute!r}")
        return self.attributes[attribute]

    def is_created(self) -> bool:
        return True


@dataclass
class StackCreation:
    """One stack's creation: how and in what order each resource was created."""

    name: str
    template: dict[str, Any]
    parameters: dict[str, str]
    resolver: TemplateResolver
    graph: dict[str, set[str]]
    attributes: _Attributes
    stack_id: str = ""
    planned: list[str] = field(default_factory=list)
    """The dependency order (`creation_order`) the resources are created in."""
    order: list[str] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)
    """Logical id -> "cloudformation", "api", "custom" or "not created"."""
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Logical id -> the properties as resolved here (every resource)."""
    nested: dict[str, StackCreation] = field(default_factory=dict)
    """Logical id -> the creation of that nested stack."""

    def types(self, how: str) -> set[str]:
        resources = self.template["Resources"]
        return {resources[name]["Type"] for name, done in self.how.items() if done == how}


class StackCreator:
    """Creates stacks in moto's CloudFormation, every resource of them (see the module)."""

    def __init__(
        self,
        session: boto3.session.Session,
        *,
        not_creatable: Mapping[str, str],
        custom_resources: CustomResources | None = None,
    ) -> None:
        self.session = session
        self.region = session.region_name or "us-east-1"
        self.not_creatable = dict(not_creatable)
        self.custom_resources = custom_resources
        self._creations: dict[str, StackCreation] = {}
        self._hooked = False

    def route(self, kind: str) -> str:
        """How a resource type is created: "api", "custom", "cloudformation" (moto's own) or
        "not created" (no moto API for it: `not_creatable` says why)."""
        from moto.cloudformation.parsing import get_model_map

        if kind in CREATORS:
            return "api"
        if kind.startswith("Custom::") or kind == "AWS::CloudFormation::CustomResource":
            return "custom"
        if kind in get_model_map():
            return "cloudformation"
        if kind in self.not_creatable:
            return "not created"
        raise NotImplementedError(f"no way to create a {kind}: add a creator or explain why not")

    def create(
        self, name: str, template: dict[str, Any], parameters: Mapping[str, str]
    ) -> StackCreation:
        """Create the stack (the template is uploaded to S3 and passed as TemplateURL, as
        `sam deploy` does); returns the record of it. Its status is for the caller to check."""
        account = self.session.client("sts").get_caller_identity()["Account"]
        check_parameters(template, parameters, self._exists)
        values = parameter_values(template, parameters)
        resolver = TemplateResolver(
            pseudo={
                "AWS::StackName": name,
                "AWS::AccountId": account,
                "AWS::Region": self.region,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
            },
            parameters=values,
            conditions=template.get("Conditions", {}),
            ssm_parameter=self._ssm_parameter,
        )
        attributes = resolver.attributes = _Attributes()
        graph = dependency_graph(template, resolver)
        creation = StackCreation(name, template, dict(parameters), resolver, graph, attributes)
        creation.planned = creation_order(graph)
        for resource in creation.graph:
            self.route(template["Resources"][resource]["Type"])  # refuse the unknown early
        self._creations[name] = creation
        s3 = self.session.client("s3")
        bucket = f"cfn-templates-{account}-{self.region}"
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        body = json.dumps(template).encode()
        # CloudFormation's limits: a template passed by URL (51,200 bytes inline) and its size.
        if len(body) > 1_000_000 or len(template["Resources"]) > 500:
            raise ValueError(f"{name}: {len(body)} bytes, {len(template['Resources'])} resources")
        s3.put_object(Bucket=bucket, Key=f"{name}.json", Body=body)
        with self.hooked():
            self.session.client("cloudformation").create_stack(
                StackName=name,
                TemplateURL=f"https://{bucket}.s3.amazonaws.com/{name}.json",
                Parameters=[
                    {"ParameterKey": key, "ParameterValue": value}
                    for key, value in parameters.items()
                ],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        return creation

    def _exists(self, kind: str, values: list[str]) -> bool:
        """Whether the VPCs, subnets, ... an AWS-specific parameter names exist."""
        ec2 = self.session.client("ec2", region_name=self.region)
        found: list[Any]
        if "AWS::EC2::VPC::Id" in kind:
            found = ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": values}])["Vpcs"]
        elif "AWS::EC2::Subnet::Id" in kind:
            subnets = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": values}])
            found = subnets["Subnets"]
        else:
            raise NotImplementedError(f"parameter type {kind} is not checked here")
        return len(found) == len(set(values))

    def _ssm_parameter(self, name: str) -> str:
        ssm = self.session.client("ssm", region_name=self.region)
        value: str = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        return value

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """moto's CloudFormation creating resources through `_create` (and knowing the types
        created through their APIs, for its checks of the Outputs' GetAtt). A nested stack is
        created while its parent's hooks are in place: they serve it too."""
        from moto.cloudformation import parsing

        if self._hooked:
            yield
            return

        create_original = parsing.parse_and_create_resource
        class_original = parsing.resource_class_from_type
        order_name = "_ResourceMap__get_resources_in_dependency_order"
        order_original = getattr(parsing.ResourceMap, order_name)

        def create(
            logical: str, resource_json: dict[str, Any], resources_map: Any, *args: Any, **kw: Any
        ) -> Any:
            creation = self._creations.get(resources_map["AWS::StackName"])
            if creation is None:
                return create_original(logical, resource_json, resources_map, *args, **kw)

            def moto_creates(resolved_json: dict[str, Any]) -> Any:
                return create_original(logical, resolved_json, resources_map, *args, **kw)

            return self._create(creation, logical, resources_map, moto_creates)

        def resource_class(kind: str) -> Any:
            known = kind in parsing.get_model_map() or kind.startswith("Custom::")
            if kind in CREATORS or (not known and kind in self.not_creatable):
                return ApiCreatedResource
            return class_original(kind)

        def order(resources_map: Any) -> list[str]:
            creation = self._creations.get(resources_map["AWS::StackName"])
            if creation is None:
                return list(order_original(resources_map))
            inactive = [name for name in resources_map.resources if name not in creation.graph]
            return creation.planned + inactive

        with (
            mock.patch.object(parsing, "parse_and_create_resource", create),
            mock.patch.object(parsing, "resource_class_from_type", resource_class),
            mock.patch.object(parsing.ResourceMap, order_name, order),
        ):
            self._hooked = True
            try:
                yield
            finally:
                self._hooked = False

    def _create(
        self,
        creation: StackCreation,
        logical: str,
        resources_map: Any,
        moto_creates: Callable[[dict[str, Any]], Any],
    ) -> Any:
        resolver = creation.resolver
        if not creation.stack_id:
            creation.stack_id = resources_map.stack_id
            resolver.pseudo["AWS::StackId"] = creation.stack_id
            exports = resources_map.cross_stack_resources or {}
            resolver.exports = {name: export.value for name, export in exports.items()}
        if logical not in creation.graph:  # its Condition is false: moto leaves it out too
            return None
        for dependency in sorted(creation.graph[logical], key=creation.planned.index):
            resources_map[dependency]  # created first (moto creates on first lookup)
        kind = creation.template["Resources"][logical]["Type"]
        try:
            created = self._create_one(creation, logical, moto_creates)
        except ResourceCreationError:
            raise
        except Exception as error:
            raise ResourceCreationError(f"{logical} ({kind}): {error!r}") from error
        creation.order.append(logical)
        creation.how[logical] = self.route(kind)
        return created

    def _create_one(
        self,
        creation: StackCreation,
        logical: str,
        moto_creates: Callable[[dict[str, Any]], Any],
    ) -> Any:
        resolver = creation.resolver
        resource = creation.template["Resources"][logical]
        kind = resource["Type"]
        properties = resolver.resolve(copy.deepcopy(resource.get("Properties", {})))
        creation.resolved[logical] = copy.deepcopy(properties)
        if self.route(kind) == "cloudformation":
            created = moto_creates({**resource, "Properties": properties})
            if created is None:
                raise RuntimeError(f"moto's CloudFormation did not create {logical} ({kind})")
            if hasattr(created, "physical_resource_id"):  # some of moto's models have none
                resolver.refs[logical] = created.physical_resource_id
            creation.attributes.models[logical] = created
        else:
            outside = self._outside(creation, logical, kind, properties)
            created = ApiCreatedResource(logical, kind, outside)
            resolver.refs[logical] = created.physical_resource_id
            for attribute, value in created.attributes.items():
                resolver.attributes[(logical, attribute)] = value
        return created

    def _outside(
        self, creation: StackCreation, logical: str, kind: str, properties: dict[str, Any]
    ) -> Created:
        how = self.route(kind)
        if how == "not created":
            return Created(f"not-created-{logical}")
        if how == "custom":
            if self.custom_resources is None:
                raise RuntimeError(f"{logical}: a custom resource, but no CustomResources given")
            return self.custom_resources.create(creation.stack_id, logical, kind, properties)
        account = creation.resolver.pseudo["AWS::AccountId"]
        context = ApiContext(self.session, creation.name, self.region, account, creation.stack_id)
        context.nest = lambda nested, url, parameters: self._nest(creation, nested, url, parameters)
        return CREATORS[kind](context, logical, copy.deepcopy(properties))

    def _nest(
        self, parent: StackCreation, logical: str, url: str, parameters: Mapping[str, Any]
    ) -> Created:
        """A nested stack: its template read from S3 (where `sam package` put it), created as
        every stack is, under the name CloudFormation gives it; Outputs.* its attributes."""
        location = urlparse(url)
        bucket, key = location.netloc.split(".s3", 1)[0], location.path.lstrip("/")
        body = self.session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12))
        name = f"{parent.name}-{logical}-{suffix}"
        given = {key: str(value) for key, value in parameters.items()}
        parent.nested[logical] = self.create(name, parse_template(body.decode()), given)
        cloudformation = self.session.client("cloudformation", region_name=self.region)
        (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(
                f"{logical}: {stack['StackStatus']} {stack.get('StackStatusReason')}"
            )
        outputs = {f"Outputs.{o['OutputKey']}": o["OutputValue"] for o in stack.get("Outputs", [])}
        return Created(stack["StackId"], outputs)
