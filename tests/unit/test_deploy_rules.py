"""The rules AWS enforces when it creates the stacks, which cfn-lint, `sam validate --lint` and
moto all let through, checked on the templates as CloudFormation receives them (after the SAM
transform, run offline by AWS's own translator), for the longest names the parameters and AWS
allow. Each rule here once rolled a stack back, or would have."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from batchctl.template import PROJECT_ROOT, Resolver, load_template, sam_transformed

FLEET = PROJECT_ROOT / "infra" / "worker-fleet.yaml"
ACCOUNT = "123456789012"
LONGEST_STACK = "A" + "b-9" * 42 + "c"  # 128 characters, capitals: every stack name AWS allows
assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,127}", LONGEST_STACK) and len(LONGEST_STACK) == 128

# What each named resource's name may be (AWS's API references).
NAME_RULES: dict[tuple[str, str], tuple[str, int]] = {
    ("AWS::S3::Bucket", "BucketName"): (r"[a-z0-9][a-z0-9.-]*[a-z0-9]", 63),
    ("AWS::SQS::Queue", "QueueName"): (r"[A-Za-z0-9_-]+", 80),
    ("AWS::StepFunctions::StateMachine", "StateMachineName"): (r"[A-Za-z0-9_-]+", 80),
    ("AWS::SNS::Topic", "TopicName"): (r"[A-Za-z0-9_-]+", 256),
    ("AWS::CloudWatch::Dashboard", "DashboardName"): (r"[A-Za-z0-9_-]+", 255),
    ("AWS::CloudWatch::Alarm", "AlarmName"): (r"[^\x00-\x1f]+", 255),
    ("AWS::Logs::LogGroup", "LogGroupName"): (r"[.\-_/#A-Za-z0-9]+", 512),
    ("AWS::ApplicationAutoScaling::ScalingPolicy", "PolicyName"): (r"[^\x00-\x1f]+", 256),
    ("AWS::IAM::Policy", "PolicyName"): (r"[\w+=,.@-]+", 128),
    ("AWS::ApiGateway::RestApi", "Name"): (r"[^\x00-\x1f]+", 1024),
}
WAF_METRIC = (r"[\w#:.\-/]+", 255)
EXPORT_NAME = (r"[A-Za-z0-9:-]+", 255)
# Lambda sets these itself; a function that names one fails to create.
RESERVED_LAMBDA_ENVIRONMENT = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}  # fmt: skip
LAMBDA_ENVIRONMENT_BYTES = 4096


def main_template() -> dict[str, Any]:
    return sam_transformed(DeployWorkers="true")


def longest_value(spec: dict[str, Any]) -> str:
    """The longest value a String parameter accepts: its AllowedPattern's widest repeat (the
    names' patterns are ^[class][class]{0,N}$, or ^$|... of it where empty is allowed too),
    else its MaxLength, else its default (a value with no bound must go nowhere that has one:
    the environment test holds that)."""
    pattern = spec.get("AllowedPattern", "")
    names = r"(?:\^\$\|)?\^\[([^\]]+)\]\[([^\]]+)\]\{0,(\d+)\}\$"
    if match := re.fullmatch(names, pattern):
        value = "a" * (int(match.group(3)) + 1)
        assert re.fullmatch(pattern, value), value
        return value
    if "MaxLength" in spec:
        return "a" * int(spec["MaxLength"])
    return str(spec.get("Default", ""))


def resolver_for(template: dict[str, Any], stack: str, parameters: dict[str, str]) -> Resolver:
    uid = "0c9a8f00-5e2b-11ef-9b1a-0a1b2c3d4e5f"
    resolver = Resolver(
        pseudo={
            "AWS::StackName": stack,
            "AWS::StackId": f"arn:aws:cloudformation:eu-central-1:{ACCOUNT}:stack/{stack}/{uid}",
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": "ap-southeast-2",  # among the longest region names
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": "",
        },
        parameters={
            name: longest_value(spec) for name, spec in template.get("Parameters", {}).items()
        },
        conditions=template.get("Conditions", {}),
    )
    resolver.parameters.update(parameters)
    # Physical ids of resources that are not named here: a generated name is within limits.
    for name in template["Resources"]:
        resolver.refs.setdefault(name, f"{stack[:20]}-{name}-1A2B3C4D5E6F")
    return resolver


def names(template: dict[str, Any], resolver: Resolver) -> Iterator[tuple[str, str, str, int]]:
    """(where, name, pattern, most characters) for every name the templates give AWS."""
    for logical, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for (kind, field), (pattern, most) in NAME_RULES.items():
            if resource["Type"] == kind and field in properties:
                yield f"{logical}.{field}", str(resolver.resolve(properties[field])), pattern, most
        if resource["Type"] == "AWS::WAFv2::WebACL":
            configs = [properties["VisibilityConfig"]]
            configs += [rule["VisibilityConfig"] for rule in properties.get("Rules", [])]
            for config in configs:
                yield f"{logical} metric", str(resolver.resolve(config["MetricName"])), *WAF_METRIC
    for logical, output in template.get("Outputs", {}).items():
        if "Export" in output:
            yield f"export {logical}", str(resolver.resolve(output["Export"]["Name"])), *EXPORT_NAME


def test_every_sqs_event_source_keeps_a_message_hidden_at_least_its_functions_timeout() -> None:
    # CreateEventSourceMapping refuses a queue whose visibility timeout is below the
    # function's timeout, and the whole stack rolls back (the intake dead-letter queue did).
    template = main_template()
    resources = template["Resources"]
    mappings = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert len(mappings) >= 5
    for name, mapping in mappings.items():
        queue = mapping["EventSourceArn"]["Fn::GetAtt"][0]
        assert resources[queue]["Type"] == "AWS::SQS::Queue", name
        function = mapping["FunctionName"]["Ref"]
        timeout = int(resources[function]["Properties"].get("Timeout", 3))
        visibility = int(resources[queue]["Properties"].get("VisibilityTimeout", 30))
        assert visibility >= timeout, f"{queue}: visibility {visibility} s < {function} {timeout} s"


@pytest.mark.parametrize("path", ["template.yaml", "infra/worker-fleet.yaml"])
def test_every_name_fits_aws_for_the_longest_stack_and_parameter_values(path: str) -> None:
    if path == "template.yaml":
        template, stack = main_template(), LONGEST_STACK
        fixed: dict[str, str] = {}
    else:
        template = load_template(FLEET)
        main = longest_value(template["Parameters"]["MainStackName"])
        stack, fixed = LONGEST_STACK, {"MainStackName": main}
    resolver = resolver_for(template, stack, fixed)
    checked = list(names(template, resolver))
    assert checked, "no names found"
    wrong = [
        f"{where}: {name!r} ({len(name)} characters)"
        for where, name, pattern, most in checked
        if len(name) > most or not re.fullmatch(pattern, name)
    ]
    assert wrong == []


def test_the_bucket_and_tracker_names_never_carry_the_stack_name() -> None:
    # A bucket name is lowercase and 63 characters at most; stack names have capitals and 128.
    template = main_template()
    resolver = resolver_for(template, "MyTeam-Batches", {})
    bucket = resolver.resolve(template["Resources"]["DataBucket"]["Properties"]["BucketName"])
    assert re.fullmatch(r"openbatch-123456789012-[0-9a-f]{12}", bucket), bucket


def dependencies(template: dict[str, Any], name: str) -> set[str]:
    """What `name` waits for when CloudFormation creates it: DependsOn, Ref, GetAtt, Sub."""
    resources = template["Resources"]
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and isinstance(value, str) and value in resources:
                    found.add(value)
                elif key == "Fn::GetAtt":
                    target = value[0] if isinstance(value, list) else str(value).split(".")[0]
                    found.add(target)
                elif key == "Fn::Sub":
                    text = value if isinstance(value, str) else value[0]
                    for ref in re.findall(r"\$\{([^}!]+)\}", text):
                        if ref.split(".")[0] in resources:
                            found.add(ref.split(".")[0])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    resource = resources[name]
    depends = resource.get("DependsOn", [])
    found |= {depends} if isinstance(depends, str) else set(depends)
    walk(resource.get("Properties", {}))
    return found


def waits_for(template: dict[str, Any], name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for each in dependencies(template, todo.pop()):
            if each not in seen:
                seen.add(each)
                todo.append(each)
    return seen


def test_account_settings_are_created_before_what_needs_them() -> None:
    # A stage's access logs need the region's API Gateway CloudWatch role (set by
    # AWS::ApiGateway::Account) when the stage is created: in a fresh account it fails
    # without it.
    template = main_template()
    resources = template["Resources"]
    (account,) = [n for n, r in resources.items() if r["Type"] == "AWS::ApiGateway::Account"]
    stages = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::ApiGateway::Stage" and "AccessLogSetting" in r["Properties"]
    ]
    assert stages
    for stage in stages:
        assert account in waits_for(template, stage), f"{stage} may be created before {account}"


def test_account_settings_outlive_the_stack() -> None:
    # Deleting the stack must not leave the region's setting naming a deleted role.
    resources = load_template()["Resources"]
    role = resources["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    for name in ("ApiGatewayAccount", role):
        assert resources[name].get("DeletionPolicy") == "Retain", name


def test_no_function_sets_an_environment_name_lambda_reserves_or_passes_its_size() -> None:
    template = main_template()
    resolver = resolver_for(template, LONGEST_STACK, {})
    functions = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function"
    }
    assert len(functions) >= 8
    for name, function in functions.items():
        variables = resolver.resolve(function.get("Environment", {}).get("Variables", {}))
        assert not set(variables) & RESERVED_LAMBDA_ENVIRONMENT, name
        size = sum(len(key) + len(str(value)) for key, value in variables.items())
        assert size <= LAMBDA_ENVIRONMENT_BYTES, f"{name}: {size} bytes of environment"
