"""A small IAM policy evaluator for the permission tests: what a role's policies allow, and
which IAM action on which resource each recorded botocore call needs.

The evaluator covers what the template's roles use: actions and resources with wildcards,
Allow and Deny (an explicit Deny wins, nothing allowed is refused), NotAction/NotResource,
and the condition operators below (with ForAllValues:/ForAnyValue: and IfExists). An
operator it does not know raises, and so does a call it cannot map to IAM (`requests_of`):
a new kind of call fails the tests instead of slipping through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class UnmappedCallError(Exception):
    """A call whose IAM action and resource this module does not know yet: map it."""


@dataclass(frozen=True)
class Call:
    """One botocore API call as a `provide-client-params` hook saw it."""

    service: str
    """The endpoint prefix: s3, dynamodb, sqs, states, events, monitoring..."""
    operation: str
    params: Mapping[str, Any]
    presigned: bool = False
    """A URL presigned for this operation: whoever follows it acts with the signer's rights."""

    def __str__(self) -> str:
        return f"{'presigned ' if self.presigned else ''}{self.service}:{self.operation}"


@dataclass(frozen=True)
class Request:
    """What IAM evaluates: an action on a resource, with its condition keys."""

    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __str__(self) -> str:
        keys = "".join(f" {key}={list(values)}" for key, values in sorted(self.context.items()))
        return f"{self.action} on {self.resource}{keys}"


# -- matching ---------------------------------------------------------------------------


@cache
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (`/` and `:` included), `?` one."""
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda pattern, value: pattern == value,
    "StringEqualsIgnoreCase": lambda pattern, value: pattern.lower() == value.lower(),
    "StringLike": matches,
    # ArnEquals and ArnLike both take wildcards (IAM treats them alike).
    "ArnEquals": matches,
    "ArnLike": matches,
    "Bool": lambda pattern, value: pattern.lower() == value.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _condition_holds(operator: str, key: str, expected: Any, request: Request) -> bool:
    """One condition key under one operator, as IAM evaluates it (missing keys included)."""
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    negated = name in _NEGATED
    test = _STRING_TESTS.get(_NEGATED.get(name, name))
    if test is None or qualifier not in {"", "ForAllValues", "ForAnyValue"}:
        raise ValueError(f"condition operator {operator!r} is not known to the evaluator")
    patterns = [str(p) for p in _listed(expected)]
    values = request.context.get(key)

    def one(value: str) -> bool:
        hit = any(test(pattern, value) for pattern in patterns)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(value) for value in values or ())  # a missing key: vacuously true
    if qualifier == "ForAnyValue":
        return any(one(value) for value in values or ())
    if not values:
        # A missing key matches nothing, but a negated operator or IfExists holds.
        return if_exists or negated
    return any(one(value) for value in values)


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        actions = _listed(statement["Action"])
        if not any(matches(a, request.action, ignore_case=True) for a in actions):
            return False
    elif any(matches(a, request.action, ignore_case=True) for a in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(matches(r, request.resource) for r in _listed(statement["Resource"])):
            return False
    elif any(matches(r, request.resource) for r in _listed(statement["NotResource"])):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, expected, request):
                return False
    return True


@dataclass(frozen=True)
class Policy:
    """A role's statements (every intrinsic already resolved to a plain string)."""

    statements: tuple[Mapping[str, Any], ...]

    def allows(self, request: Request) -> bool:
        """IAM's decision: an explicit Deny wins, then any Allow, else an implicit deny."""
        applying = [s for s in self.statements if _statement_applies(s, request)]
        if any(s["Effect"] == "Deny" for s in applying):
            return False
        return any(s["Effect"] == "Allow" for s in applying)

    def allowed(self, action: str, resource: str, **context: str | Iterable[str]) -> bool:
        """`allows` for a request written out (condition keys as keyword arguments, with
        `__` for `:`: dynamodb__LeadingKeys="BATCH#x")."""
        keys = {
            name.replace("__", ":"): (value,) if isinstance(value, str) else tuple(value)
            for name, value in context.items()
        }
        return self.allows(Request(action, resource, keys))

    def refusals(self, call: Call, arns: Arns) -> list[str]:
        """Why the role refuses the call: each request it needs that is not allowed."""
        return [
            f"{call}: {request}" for request in requests_of(call, arns) if not self.allows(request)
        ]


# -- a role's policies in the (SAM-transformed) template ---------------------------------

# What AWS's managed policies that the template's roles name allow (as AWS publishes them).
# A managed policy not listed here is taken to allow nothing.
_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": _LOGS, "Resource": "*"}
    ],
    "service-role/AWSLambdaSQSQueueExecutionRole": [
        {
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                *_LOGS,
            ],
            "Resource": "*",
        }
    ],
    "AWSXrayWriteOnlyAccess": [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ],
            "Resource": "*",
        }
    ],
}


def role_policy(
    template: Mapping[str, Any],
    role: str,
    resolve: Callable[[Any], Any],
    condition: Callable[[str], bool],
) -> Policy:
    """Every statement that applies to `role` of a (SAM-transformed) template: its inline
    policies, the stand-alone AWS::IAM::Policy resources that name it (those whose Condition
    holds), and the AWS managed policies it lists. `resolve` turns the template's intrinsic
    functions into strings, `condition` tells whether one of its Conditions holds."""
    resources = template["Resources"]
    properties = resources[role]["Properties"]
    documents = [p["PolicyDocument"] for p in _listed(resolve(properties.get("Policies", [])))]
    for resource in resources.values():
        if (
            resource["Type"] == "AWS::IAM::Policy"
            and {"Ref": role} in resource["Properties"].get("Roles", [])
            and ("Condition" not in resource or condition(resource["Condition"]))
        ):
            documents.append(resolve(resource["Properties"]["PolicyDocument"]))
    statements: list[Mapping[str, Any]] = []
    for document in documents:
        statements.extend(_listed(resolve(document["Statement"])))
    for arn in _listed(resolve(properties.get("ManagedPolicyArns", []))):
        statements.extend(MANAGED_POLICIES.get(str(arn).split(":policy/", 1)[-1], []))
    for statement in statements:
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            for value in _listed(statement.get(key, [])):
                if not isinstance(value, str):
                    raise ValueError(f"{role}: {key} {value!r} did not resolve to a string")
    return Policy(tuple(statements))


# -- which IAM request each botocore call makes -------------------------------------------


@dataclass(frozen=True)
class Arns:
    """What the ARNs of the calls' resources need that the calls do not say."""

    region: str
    account: str
    partition_keys: Mapping[str, str]
    """The partition key attribute of each table and index ("<table>/index/<name>")."""

    @classmethod
    def of_template(
        cls, template: Mapping[str, Any], ref: Callable[[str], str], region: str, account: str
    ) -> Arns:
        """The partition keys of the template's tables and their indexes, by the names
        `ref` gives the tables (their Ref)."""
        keys: dict[str, str] = {}
        for logical, resource in template["Resources"].items():
            if resource["Type"] != "AWS::DynamoDB::Table":
                continue
            properties = resource["Properties"]
            name = ref(logical)
            keys[name] = _hash_key(properties["KeySchema"])
            for index in properties.get("GlobalSecondaryIndexes", []):
                keys[f"{name}/index/{index['IndexName']}"] = _hash_key(index["KeySchema"])
        return cls(region, account, keys)

    def table(self, name: str, index: str | None = None) -> str:
        if name.startswith("arn:"):
            name = name.split(":table/", 1)[1]
        suffix = f"/index/{index}" if index else ""
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}{suffix}"


def _hash_key(schema: list[Mapping[str, str]]) -> str:
    return next(key["AttributeName"] for key in schema if key["KeyType"] == "HASH")


def _s3(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" if key is None else f"arn:aws:s3:::{bucket}/{key}"


def _copy_source(source: Any) -> tuple[str, str, str | None]:
    """(bucket, key, version) of a CopySource: a dict, or 'bucket/key[?versionId=v]'."""
    if isinstance(source, Mapping):
        return str(source["Bucket"]), str(source["Key"]), source.get("VersionId")
    path, _, query = str(source).lstrip("/").partition("?")
    bucket, _, key = unquote(path).partition("/")
    version = parse_qs(query).get("versionId", [None])[0]
    return bucket, key, version


def _read(version: str | None) -> str:
    return "s3:GetObjectVersion" if version else "s3:GetObject"


def _s3_requests(operation: str, params: Mapping[str, Any]) -> list[Request]:
    bucket = str(params.get("Bucket", ""))
    key = params.get("Key")
    version = params.get("VersionId")
    prefix = params.get("Prefix")
    listing = {"s3:prefix": (str(prefix),)} if prefix is not None else {}
    if operation in {"GetObject", "HeadObject"}:
        return [Request(_read(version), _s3(bucket, key))]
    if operation in {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    }:
        return [Request("s3:PutObject", _s3(bucket, key))]
    if operation in {"CopyObject", "UploadPartCopy"}:
        source_bucket, source_key, source_version = _copy_source(params["CopySource"])
        return [
            Request(_read(source_version), _s3(source_bucket, source_key)),
            Request("s3:PutObject", _s3(bucket, key)),
        ]
    if operation == "AbortMultipartUpload":
        return [Request("s3:AbortMultipartUpload", _s3(bucket, key))]
    if operation == "ListParts":
        return [Request("s3:ListMultipartUploadParts", _s3(bucket, key))]
    if operation == "DeleteObject":
        action = "s3:DeleteObjectVersion" if version else "s3:DeleteObject"
        return [Request(action, _s3(bucket, key))]
    if operation == "DeleteObjects":
        return [
            Request(
                "s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject",
                _s3(bucket, str(item["Key"])),
            )
            for item in params["Delete"]["Objects"]
        ]
    if operation in {"ListObjectsV2", "ListObjects"}:
        return [Request("s3:ListBucket", _s3(bucket), listing)]
    if operation == "ListObjectVersions":
        return [Request("s3:ListBucketVersions", _s3(bucket), listing)]
    if operation == "ListMultipartUploads":
        return [Request("s3:ListBucketMultipartUploads", _s3(bucket), listing)]
    raise UnmappedCallError(f"s3:{operation}")


def _attribute(value: Mapping[str, Any]) -> str:
    ((kind, raw),) = value.items()
    if kind not in {"S", "N", "B"}:
        raise UnmappedCallError(f"a {kind} key value")
    return str(raw)


def _leading_key(item: Mapping[str, Any], table: str, arns: Arns) -> tuple[str, ...]:
    attribute = arns.partition_keys[table]
    return (_attribute(item[attribute]),) if attribute in item else ()


def _query_leading_key(params: Mapping[str, Any], table: str, arns: Arns) -> tuple[str, ...]:
    index = params.get("IndexName")
    attribute = arns.partition_keys[f"{table}/index/{index}" if index else table]
    names = params.get("ExpressionAttributeNames", {})
    values = params.get("ExpressionAttributeValues", {})
    expression = str(params.get("KeyConditionExpression", ""))
    for name, placeholder in re.findall(r"([#\w.]+)\s*=\s*(:\w+)", expression):
        if names.get(name, name) == attribute:
            return (_attribute(values[placeholder]),)
    for name, condition in params.get("KeyConditions", {}).items():
        if name == attribute and condition.get("ComparisonOperator") == "EQ":
            return (_attribute(condition["AttributeValueList"][0]),)
    raise UnmappedCallError(f"dynamodb:Query without an equality on {attribute}")


_TRANSACT_ACTIONS = {
    "Put": ("dynamodb:PutItem", "Item"),
    "Update": ("dynamodb:UpdateItem", "Key"),
    "Delete": ("dynamodb:DeleteItem", "Key"),
    "ConditionCheck": ("dynamodb:ConditionCheckItem", "Key"),
    "Get": ("dynamodb:GetItem", "Key"),
}


def _dynamodb_requests(operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    def keyed(action: str, table: str, *items: Mapping[str, Any]) -> Request:
        keys = sorted({key for item in items for key in _leading_key(item, table, arns)})
        return Request(action, arns.table(table), {"dynamodb:LeadingKeys": tuple(keys)})

    table = str(params.get("TableName", ""))
    if operation in {"GetItem", "UpdateItem", "DeleteItem"}:
        return [keyed(f"dynamodb:{operation}", table, params["Key"])]
    if operation == "PutItem":
        return [keyed("dynamodb:PutItem", table, params["Item"])]
    if operation == "Query":
        index = params.get("IndexName")
        leading = {"dynamodb:LeadingKeys": _query_leading_key(params, table, arns)}
        return [Request("dynamodb:Query", arns.table(table, index), leading)]
    if operation == "Scan":
        return [Request("dynamodb:Scan", arns.table(table, params.get("IndexName")))]
    if operation == "DescribeTable":
        return [Request("dynamodb:DescribeTable", arns.table(table))]
    if operation in {"TransactWriteItems", "TransactGetItems"}:
        requests = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            if kind not in _TRANSACT_ACTIONS:
                raise UnmappedCallError(f"dynamodb:{operation} {kind}")
            action, item = _TRANSACT_ACTIONS[kind]
            requests.append(keyed(action, str(body["TableName"]), body[item]))
        return requests
    if operation == "BatchGetItem":
        return [
            keyed("dynamodb:BatchGetItem", name, *request["Keys"])
            for name, request in params["RequestItems"].items()
        ]
    if operation == "BatchWriteItem":
        return [
            keyed(
                "dynamodb:BatchWriteItem",
                name,
                *(
                    write["PutRequest"]["Item"]
                    if "PutRequest" in write
                    else write["DeleteRequest"]["Key"]
                    for write in writes
                ),
            )
            for name, writes in params["RequestItems"].items()
        ]
    raise UnmappedCallError(f"dynamodb:{operation}")


def _queue_arn(url: str, arns: Arns) -> str:
    """sqs.<region>.amazonaws.com/<account>/<name> (or a local endpoint's same path)."""
    parts = urlsplit(url)
    account, name = parts.path.strip("/").split("/")[-2:]
    host = parts.hostname or ""
    found = re.fullmatch(r"sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?", host) or re.fullmatch(
        r"([a-z0-9-]+)\.queue\.amazonaws\.com", host
    )
    region = found.group(1) if found else arns.region
    return f"arn:aws:sqs:{region}:{account}:{name}"


_SQS_ACTIONS = {
    "SendMessage": "SendMessage",
    "SendMessageBatch": "SendMessage",
    "ReceiveMessage": "ReceiveMessage",
    "DeleteMessage": "DeleteMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibility": "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "GetQueueAttributes": "GetQueueAttributes",
    "PurgeQueue": "PurgeQueue",
}


def _sqs_requests(operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    if operation == "GetQueueUrl":
        account = params.get("QueueOwnerAWSAccountId", arns.account)
        arn = f"arn:aws:sqs:{arns.region}:{account}:{params['QueueName']}"
        return [Request("sqs:GetQueueUrl", arn)]
    if operation not in _SQS_ACTIONS:
        raise UnmappedCallError(f"sqs:{operation}")
    return [Request(f"sqs:{_SQS_ACTIONS[operation]}", _queue_arn(str(params["QueueUrl"]), arns))]


def _states_requests(operation: str, params: Mapping[str, Any]) -> list[Request]:
    if operation in {"StartExecution", "StartSyncExecution", "ListExecutions"}:
        return [Request(f"states:{operation}", str(params["stateMachineArn"]))]
    if operation == "DescribeStateMachine":
        return [Request("states:DescribeStateMachine", str(params["stateMachineArn"]))]
    if operation in {"DescribeExecution", "StopExecution", "GetExecutionHistory"}:
        return [Request(f"states:{operation}", str(params["executionArn"]))]
    if operation in {"SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"}:
        # A task token names no resource IAM can scope: these take "*".
        return [Request(f"states:{operation}", "*")]
    raise UnmappedCallError(f"states:{operation}")


def _event_bus(name: str, arns: Arns) -> str:
    return (
        name
        if name.startswith("arn:")
        else (f"arn:aws:events:{arns.region}:{arns.account}:event-bus/{name}")
    )


def _ecs_service(cluster: str, service: str, arns: Arns) -> str:
    if service.startswith("arn:"):
        return service
    return f"arn:aws:ecs:{arns.region}:{arns.account}:service/{cluster}/{service}"


def _scaling_requests(operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    if operation == "DescribeScalableTargets":
        return [Request("application-autoscaling:DescribeScalableTargets", "*")]
    if operation == "RegisterScalableTarget":
        # A target's ARN ends in an id AWS makes up (not its ResourceId): any id stands in.
        # Application Auto Scaling then checks that the caller may describe and update the
        # ECS service itself.
        _, cluster, service = str(params["ResourceId"]).split("/", 2)
        target = (
            f"arn:aws:application-autoscaling:{arns.region}:{arns.account}:scalable-target/0a1b2c"
        )
        return [
            Request("application-autoscaling:RegisterScalableTarget", target),
            Request("ecs:DescribeServices", _ecs_service(cluster, service, arns)),
            Request("ecs:UpdateService", _ecs_service(cluster, service, arns)),
        ]
    raise UnmappedCallError(f"application-autoscaling:{operation}")


def _ecs_requests(operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    if operation == "DescribeServices":
        cluster = str(params.get("cluster", "default"))
        return [
            Request("ecs:DescribeServices", _ecs_service(cluster, str(s), arns))
            for s in params["services"]
        ]
    raise UnmappedCallError(f"ecs:{operation}")


def requests_of(call: Call, arns: Arns) -> list[Request]:
    """The IAM requests `call` is authorized as (UnmappedCallError for one not known)."""
    operation, params = call.operation, call.params
    if call.presigned and (call.service, operation) != ("s3", "GetObject"):
        raise UnmappedCallError(f"a URL presigned for {call}")
    if call.service == "s3":
        return _s3_requests(operation, params)
    if call.service == "dynamodb":
        return _dynamodb_requests(operation, params, arns)
    if call.service == "sqs":
        return _sqs_requests(operation, params, arns)
    if call.service == "states":
        return _states_requests(operation, params)
    if call.service == "application-autoscaling":
        return _scaling_requests(operation, params, arns)
    if call.service == "ecs":
        return _ecs_requests(operation, params, arns)
    if call.service == "events" and operation == "PutEvents":
        buses = sorted({str(e.get("EventBusName") or "default") for e in params["Entries"]})
        return [Request("events:PutEvents", _event_bus(bus, arns)) for bus in buses]
    if call.service == "monitoring" and operation == "PutMetricData":
        namespace = {"cloudwatch:namespace": (str(params["Namespace"]),)}
        return [Request("cloudwatch:PutMetricData", "*", namespace)]
    raise UnmappedCallError(str(call))
