"""Both stacks created in moto's CloudFormation, every resource of them.

The main stack is template.yaml as CloudFormation receives it (AWS's SAM translator, run
offline), its code, state machine definition and nested workers' template
(infra/worker-fleet.yaml) uploaded to S3 first as `sam package` would; it is created with the
GPU workers (that nested stack, on the main stack's queues) and every optional part on, and
again with the defaults. A worker fleet of its own (the same template) is then created
against the first: its
Fn::ImportValue reads the main stack's exports, and its Custom::ServedModel runs the main
stack's ModelRegistryFunction (functions/handlers/model_registry.py) with CloudFormation's
Create event, which must answer SUCCESS.

moto's CloudFormation creates the types it implements; every other resource is created
through the service API CloudFormation calls for it, with its properties resolved and checked
by botocore against the API's shapes (tests/stack_create.py). moto accepts much that AWS
refuses: the create-time rules are other tests'. What this proves is that every resource's
properties resolve and fit the API that creates it, in an order that works, and that no
resource is left out: each is created by CloudFormation, by its API, or is in NOT_CREATABLE.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batch_core.repository import BatchRepository
from batchctl.template import (
    FLEET_PATH,
    PROJECT_ROOT,
    TEMPLATE_PATH,
    WORKERS,
    load_template,
    sam_transformed,
)
from tests.stack_create import (
    CREATORS,
    THROUGH_API_THOUGH_MOTO_HAS_IT,
    CustomResources,
    StackCreation,
    StackCreator,
    TemplateResolver,
    check_parameters,
    creation_order,
    dependency_graph,
)

REGION = "us-east-1"
MAIN = "openbatch"
DEFAULTS = "openbatch-defaults"
FLEET = "openbatch-qwen-7b"
FLEET_TEMPLATE = FLEET_PATH
SHARD_QUEUES = ("UrgentShardQueue", "ShardQueue", "BulkShardQueue")

NOT_CREATABLE: dict[str, str] = {}
"""Resource types moto has no API for at all (type -> why), which this test therefore cannot
create. moto 5.2 has an API for every type of both templates, so there are none; a type added
to a template without one fails the test until it is listed here with its reason."""


@dataclass
class Aws:
    """moto in this process, and what the stacks are created with."""

    session: boto3.session.Session
    creator: StackCreator
    custom_resources: CustomResources
    vpc: str = ""
    subnets: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=REGION)  # type: ignore[call-overload]

    def outputs(self, stack: str) -> dict[str, str]:
        (described,) = self.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_METRICS_DISABLED": "true",
        }.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        with mock_aws():
            session = boto3.session.Session(region_name=REGION)
            with CustomResources(session, REGION) as custom_resources:
                creator = StackCreator(
                    session, not_creatable=NOT_CREATABLE, custom_resources=custom_resources
                )
                world = Aws(session, creator, custom_resources)
                ec2 = world.client("ec2")
                world.vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
                world.subnets = [
                    ec2.create_subnet(VpcId=world.vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"][
                        "SubnetId"
                    ]
                    for i in range(2)
                ]
                yield world


def upload_artifacts(aws: Aws, template: dict[str, Any]) -> None:
    """What `sam package` uploads: each function's code (a small zip holding its handler's
    module), the state machine's definition (the ASL file DefinitionUri names) and each nested
    stack's template (the file its TemplateURL names)."""
    s3 = aws.client("s3")
    source = load_template()["Resources"]
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            module = properties["Handler"].rsplit(".", 1)[0].replace(".", "/") + ".py"
            code = io.BytesIO()
            with zipfile.ZipFile(code, "w") as archive:
                archive.write(PROJECT_ROOT / "functions" / module, module)
            location = properties["Code"]
            s3.create_bucket(Bucket=location["S3Bucket"])
            s3.put_object(Bucket=location["S3Bucket"], Key=location["S3Key"], Body=code.getvalue())
        elif resource["Type"] == "AWS::CloudFormation::Stack":
            bucket, key = properties["TemplateURL"].removeprefix("https://").split("/", 1)
            nested = PROJECT_ROOT / source[name]["Properties"]["TemplateURL"]
            s3.create_bucket(Bucket=bucket.split(".s3", 1)[0])
            s3.put_object(Bucket=bucket.split(".s3", 1)[0], Key=key, Body=nested.read_bytes())
        elif resource["Type"] == "AWS::StepFunctions::StateMachine":
            location = properties["DefinitionS3Location"]
            definition = PROJECT_ROOT / source[name]["Properties"]["DefinitionUri"]
            s3.create_bucket(Bucket=location["Bucket"])
            s3.put_object(
                Bucket=location["Bucket"], Key=location["Key"], Body=definition.read_bytes()
            )


def declared(parameters: dict[str, str], template: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in parameters.items() if name in template["Parameters"]}


@pytest.fixture(scope="module")
def main_stack(aws: Aws) -> StackCreation:
    """The main stack with the workers and every optional part: access logs, a custom domain,
    an alarm email, the Hugging Face token, weights from S3."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="openbatch-access-logs")
    certificate = aws.client("acm").request_certificate(DomainName="batch.example.com")
    secret = aws.client("secretsmanager").create_secret(Name="hf-token", SecretString="hf_x")
    wanted = {
        "DeployWorkers": "true",
        "WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/openbatch-worker:1",
        "WorkerModel": "s3://openbatch-weights/qwen/7b/",
        "WorkerServedModelName": "qwen-7b-main",
        "WorkerHfTokenSecretArn": secret["ARN"],
        "WorkerVpcId": aws.vpc,
        "WorkerSubnetIds": ",".join(aws.subnets),
        "AlarmEmail": "ops@example.com",
        "AccessLogBucketName": "openbatch-access-logs",
        "ApiDomainName": "batch.example.com",
        "ApiCertificateArn": certificate["CertificateArn"],
    }
    parameters = declared(wanted, load_template())
    template = sam_transformed(TEMPLATE_PATH, **parameters)
    upload_artifacts(aws, template)
    return aws.creator.create(MAIN, template, parameters)


@pytest.fixture(scope="module")
def default_stack(aws: Aws) -> StackCreation:
    template = sam_transformed()
    upload_artifacts(aws, template)
    return aws.creator.create(DEFAULTS, template, {})


@pytest.fixture(scope="module")
def fleet_stack(aws: Aws, main_stack: StackCreation) -> StackCreation:
    secret = aws.client("secretsmanager").create_secret(Name="fleet-token", SecretString="hf_y")
    wanted = {
        "MainStackName": MAIN,
        "FleetName": "qwen-7b",
        "Model": "s3://openbatch-weights/qwen/7b/",
        "ServedModelName": "qwen-7b",
        "HfTokenSecretArn": secret["ARN"],
        "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/openbatch-worker:1",
        "ContextLength": "32768",
        "TokensPerSecond": "4000",
        "VpcId": aws.vpc,
        "SubnetIds": ",".join(aws.subnets),
    }
    template = load_template(FLEET_TEMPLATE)
    return aws.creator.create(FLEET, template, declared(wanted, template))


def assert_created_whole(aws: Aws, creation: StackCreation) -> dict[str, str]:
    """CREATE_COMPLETE, every resource the parameters call for in the stack with a physical
    id, each created after what it references or depends on. Returns logical -> physical id."""
    cloudformation = aws.client("cloudformation")
    (stack,) = cloudformation.describe_stacks(StackName=creation.name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    assert stack["StackId"] == creation.stack_id
    assert creation.stack_id.startswith(f"arn:aws:cloudformation:{REGION}:123456789012:stack/")
    summaries = cloudformation.list_stack_resources(StackName=creation.name)
    listed = {
        summary["LogicalResourceId"]: summary
        for summary in summaries["StackResourceSummaries"]
        if summary["LogicalResourceId"]  # moto lists a resource whose Condition is false blank
    }
    assert set(listed) == set(creation.graph), set(listed) ^ set(creation.graph)
    assert set(creation.how) == set(creation.graph)
    resources = creation.template["Resources"]
    for name, summary in listed.items():
        assert summary["ResourceType"] == resources[name]["Type"], name
        if summary["ResourceType"] == "AWS::Lambda::Permission":
            assert_permission_granted(aws, creation.resolved[name])
        else:
            assert summary["PhysicalResourceId"], f"{name} has no physical id"
    position = {name: index for index, name in enumerate(creation.order)}
    for name, dependencies in creation.graph.items():
        late = [other for other in dependencies if position[other] > position[name]]
        assert not late, f"{name} was created before {late}, which it needs"
    return {name: summary["PhysicalResourceId"] for name, summary in listed.items()}


def assert_permission_granted(aws: Aws, permission: dict[str, Any]) -> None:
    """moto keeps no physical id for a Lambda permission: look for it in the function's
    policy instead."""
    policy = json.loads(
        aws.client("lambda").get_policy(FunctionName=permission["FunctionName"])["Policy"]
    )
    granted = [
        statement
        for statement in policy["Statement"]
        if statement["Principal"] == {"Service": permission["Principal"]}
        and statement["Action"] == permission["Action"]
        and statement.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
        == permission.get("SourceArn")
    ]
    assert granted, (permission, policy)


def test_the_main_stack_with_workers_and_every_option_is_created_whole(
    aws: Aws, main_stack: StackCreation
) -> None:
    assert_created_whole(aws, main_stack)
    inactive = set(main_stack.template["Resources"]) - set(main_stack.graph)
    assert not inactive, f"resources some parameter of main_stack should switch on: {inactive}"
    workers = main_stack.nested[WORKERS]
    assert_created_whole(aws, workers)
    # Nested, the fleet has no queues or registry entry of its own: the main stack's are used.
    inactive = set(workers.template["Resources"]) - set(workers.graph)
    assert inactive == {*SHARD_QUEUES, "ModelRegistration"}


def test_the_main_stack_with_its_defaults_is_created_whole(
    aws: Aws, default_stack: StackCreation
) -> None:
    assert_created_whole(aws, default_stack)
    resources = default_stack.template["Resources"]
    workers = {name for name, r in resources.items() if r.get("Condition") == "CreateWorkers"}
    assert workers and not workers & set(default_stack.graph)
    dashboard = default_stack.resolved["Dashboard"]["DashboardBody"]
    assert '"ClusterName", "no-workers"' in dashboard
    json.loads(dashboard)  # CloudWatch takes only a JSON body


def test_every_resource_goes_the_way_its_type_says(
    main_stack: StackCreation, default_stack: StackCreation, fleet_stack: StackCreation
) -> None:
    """moto's CloudFormation creates what it implements (but the types it gets wrong, each
    with its reason), the service APIs the rest; the custom resource runs its function."""
    from moto.cloudformation.parsing import get_model_map

    implemented = set(get_model_map())
    assert set(THROUGH_API_THOUGH_MOTO_HAS_IT) == set(CREATORS) & implemented
    for creation in (main_stack, main_stack.nested[WORKERS], default_stack, fleet_stack):
        assert creation.types("cloudformation") <= implemented - set(CREATORS)
        assert creation.types("api") <= set(CREATORS)
        resources = creation.template["Resources"]
        template_types = {resources[name]["Type"] for name in creation.graph}  # those created
        assert creation.types("custom") == {t for t in template_types if t.startswith("Custom::")}


def test_only_the_allow_list_is_left_uncreated(
    main_stack: StackCreation, default_stack: StackCreation, fleet_stack: StackCreation
) -> None:
    creations = (main_stack, main_stack.nested[WORKERS], default_stack, fleet_stack)
    left = set().union(*(c.types("not created") for c in creations))
    assert left == set(NOT_CREATABLE)


def test_what_the_apis_created_is_what_the_template_says(
    aws: Aws, main_stack: StackCreation
) -> None:
    physical = assert_created_whole(aws, main_stack)
    attributes = main_stack.resolver.attributes
    outputs = aws.outputs(MAIN)
    uid = main_stack.stack_id.rsplit("-", 1)[1]

    # The names built from the stack id agree: moto's CloudFormation resolved the functions'
    # environment, this module the state machine's name and the queue policy.
    validate = aws.client("lambda").get_function_configuration(
        FunctionName=physical["ValidateFunction"]
    )
    assert validate["Environment"]["Variables"]["STATE_MACHINE_ARN"] == outputs["StateMachineArn"]
    assert outputs["StateMachineArn"].endswith(f":stateMachine:openbatch-tracker-{uid}")
    assert physical["DataBucket"] == f"openbatch-123456789012-{uid}"
    queue_policy = json.loads(
        aws.client("sqs").get_queue_attributes(
            QueueUrl=physical["IntakeQueue"], AttributeNames=["Policy"]
        )["Attributes"]["Policy"]
    )
    (statement,) = queue_policy["Statement"]
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"].endswith(
        f":::{physical['DataBucket']}"
    )

    # The API's stage: throttled, access-logged, behind the firewall, on the custom domain.
    apigateway = aws.client("apigateway")
    stage = apigateway.get_stage(restApiId=physical["Api"], stageName="prod")
    assert stage["webAclArn"] == attributes[("ApiFirewall", "Arn")]
    assert stage["methodSettings"]["*/*"]["throttlingRateLimit"] == 200.0
    assert stage["methodSettings"]["*/*"]["throttlingBurstLimit"] == 400
    assert stage["accessLogSettings"]["destinationArn"] == attributes[("ApiAccessLogGroup", "Arn")]
    paths = {r["path"] for r in apigateway.get_resources(restApiId=physical["Api"])["items"]}
    assert paths >= {"/", "/{proxy+}"}  # the OpenAPI body was imported
    mappings = apigateway.get_base_path_mappings(domainName="batch.example.com")["items"]
    assert [(m["restApiId"], m["stage"]) for m in mappings] == [(physical["Api"], "prod")]

    # Every alarm of the stack tells the topic; every one of its workers' (the nested stack)
    # scales them.
    cloudwatch = aws.client("cloudwatch")

    def alarms(creation: StackCreation) -> dict[str, Any]:
        return {
            name: cloudwatch.describe_alarms(AlarmNames=[creation.resolver.refs[name]])[
                "MetricAlarms"
            ][0]
            for name in creation.how
            if creation.template["Resources"][name]["Type"] == "AWS::CloudWatch::Alarm"
        }

    workers = main_stack.nested[WORKERS]
    target = workers.resolver.refs["WorkerScalableTarget"].split("|")[0]
    scaling = aws.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=target
    )["ScalingPolicies"]
    policy_arns = {p["PolicyARN"] for p in scaling}
    assert len(policy_arns) == 1  # scale-in only: the functions set the floor to the work
    for name, alarm in alarms(main_stack).items():
        assert set(alarm["AlarmActions"]) == {physical["AlarmTopic"]}, name
    scaling_alarms = alarms(workers)
    assert len(scaling_alarms) == 1
    for name, alarm in scaling_alarms.items():
        assert alarm["AlarmActions"] and set(alarm["AlarmActions"]) <= policy_arns, name

    # The workers: the capacity provider on the group, the AMI from SSM's public parameter.
    physical = assert_created_whole(aws, workers)
    ecs = aws.client("ecs")
    (provider,) = ecs.describe_capacity_providers(
        capacityProviders=[physical["WorkerCapacityProvider"]]
    )["capacityProviders"]
    group = provider["autoScalingGroupProvider"]["autoScalingGroupArn"]
    assert group.endswith(physical["WorkerAutoScalingGroup"])
    (cluster,) = ecs.describe_clusters(clusters=[physical["WorkerCluster"]])["clusters"]
    assert cluster["capacityProviders"] == [physical["WorkerCapacityProvider"]]
    # Named as the functions expect to find it (their WORKER_CLUSTER), its service's scalable
    # target under it.
    assert cluster["clusterName"] == f"{main_stack.resolver.pseudo['AWS::StackName']}-workers"
    assert target.startswith(f"service/{cluster['clusterName']}/")
    (version,) = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=physical["WorkerLaunchTemplate"]
    )["LaunchTemplateVersions"]
    assert version["LaunchTemplateData"]["ImageId"].startswith("ami-")


def test_the_main_stacks_workers_run_on_its_own_queues_with_no_registry_entry(
    aws: Aws, main_stack: StackCreation
) -> None:
    workers = main_stack.nested[WORKERS]
    main = assert_created_whole(aws, main_stack)
    assert "MainStackName" not in workers.parameters
    (container,) = workers.resolved["WorkerTaskDefinition"]["ContainerDefinitions"]
    environment = {v["Name"]: v["Value"] for v in container["Environment"]}
    assert environment["BUCKET_NAME"] == main["DataBucket"]
    assert environment["TABLE_NAME"] == main["BatchTable"]
    assert environment["URGENT_SHARD_QUEUE_URL"] == main["UrgentShardQueue"]
    assert environment["SHARD_QUEUE_URL"] == main["ShardQueue"]
    assert environment["BULK_SHARD_QUEUE_URL"] == main["BulkShardQueue"]
    assert environment["SERVED_MODEL_NAME"] == "qwen-7b-main"
    # The task role reaches exactly the main stack's queues and table, by their real ARNs.
    (policy,) = workers.resolved["WorkerTaskRole"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    (sqs,) = [s for s in statements if "sqs:ReceiveMessage" in s["Action"]]
    arns = main_stack.resolver.attributes
    assert sqs["Resource"] == [arns[(queue, "Arn")] for queue in SHARD_QUEUES]
    (table,) = [s for s in statements if "dynamodb:UpdateItem" in s["Action"]]
    assert table["Resource"] == arns[("BatchTable", "Arn")]
    # Not registered: the registry refuses the stack's own model, served from its queues.
    assert not [e for e in aws.custom_resources.events if e["StackId"] == workers.stack_id]
    repository = BatchRepository(aws.client("dynamodb"), main["BatchTable"])
    assert repository.models.get_model("qwen-7b-main") is None
    # The dashboard names the nested stack's cluster and service.
    dashboard = main_stack.resolved["Dashboard"]["DashboardBody"]
    physical = assert_created_whole(aws, workers)
    assert f'"ClusterName", "{physical["WorkerCluster"]}"' in dashboard
    service = physical["WorkerService"].rsplit("/", 1)[-1]
    assert f'"ServiceName", "{service}"' in dashboard


def test_the_worker_fleet_is_created_against_the_main_stack(
    aws: Aws, main_stack: StackCreation, fleet_stack: StackCreation
) -> None:
    physical = assert_created_whole(aws, fleet_stack)
    assert fleet_stack.how["ModelRegistration"] == "custom"
    main_outputs = aws.outputs(MAIN)

    # The custom resource: CloudFormation's Create event, answered SUCCESS.
    (event,) = [e for e in aws.custom_resources.events if e["StackId"] == fleet_stack.stack_id]
    properties = event["ResourceProperties"]
    assert event["ServiceToken"] == properties["ServiceToken"]
    assert properties["ServiceToken"] == main_outputs["ModelRegistryFunctionArn"]
    assert properties["QueueUrl"] == physical["ShardQueue"]
    assert properties["UrgentQueueUrl"] == physical["UrgentShardQueue"]
    assert properties["BulkQueueUrl"] == physical["BulkShardQueue"]
    assert all(isinstance(value, str) for value in properties.values())
    (answer,) = [a for a in aws.custom_resources.answers if a["RequestId"] == event["RequestId"]]
    assert answer["Status"] == "SUCCESS", answer
    assert answer["StackId"] == fleet_stack.stack_id
    assert answer["LogicalResourceId"] == "ModelRegistration"
    assert answer["PhysicalResourceId"] == physical["ModelRegistration"] == "qwen-7b"

    # ... registered in the main stack's table with the fleet's queues.
    repository = BatchRepository(aws.client("dynamodb"), main_outputs["TableName"])
    model = repository.models.get_model("qwen-7b")
    assert model is not None and model.status == "active"
    assert model.queue_url == physical["ShardQueue"] and model.fleet == FLEET
    assert (model.context_length, model.tokens_per_second) == (32768, 4000)

    # The imports: the main stack's dead-letter queue and bucket.
    sqs = aws.client("sqs")
    redrive = sqs.get_queue_attributes(
        QueueUrl=physical["UrgentShardQueue"], AttributeNames=["RedrivePolicy"]
    )["Attributes"]["RedrivePolicy"]
    assert json.loads(redrive)["deadLetterTargetArn"] == main_outputs["ShardDeadLetterQueueArn"]
    assert physical["ShardQueue"].endswith(f"/{MAIN}-model-qwen-7b-normal")


def test_the_resolver_does_what_cloudformation_does() -> None:
    stack_id = "arn:aws:cloudformation:us-east-1:1:stack/s/ab-cd-ef-01-23456789abcd"
    parameters: dict[str, Any] = {"Names": ["a", "b"], "Empty": ""}
    resolver = TemplateResolver(
        pseudo={"AWS::StackId": stack_id},
        parameters=parameters,
        conditions={"IsEmpty": {"Fn::Equals": [{"Ref": "Empty"}, ""]}},
        exports={"main-Arn": "arn:x"},
    )
    last_part = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    uid = {"Fn::Select": [4, {"Fn::Split": ["-", last_part]}]}
    assert resolver.resolve({"Fn::Sub": ["t-${Uid}-${!Literal}", {"Uid": uid}]}) == (
        "t-23456789abcd-${Literal}"
    )
    assert resolver.resolve({"Fn::Join": ["+", {"Ref": "Names"}]}) == "a+b"
    assert resolver.resolve({"Fn::ImportValue": {"Fn::Sub": "main-Arn"}}) == "arn:x"
    dropped = {"Keep": 1, "Drop": {"Fn::If": ["IsEmpty", {"Ref": "AWS::NoValue"}, 2]}}
    assert resolver.resolve(dropped) == {"Keep": 1}
    with pytest.raises(KeyError, match="no stack exports"):
        resolver.resolve({"Fn::ImportValue": "other-Arn"})


def test_the_dependency_graph_refuses_what_cloudformation_refuses() -> None:
    resolver = TemplateResolver(
        pseudo={},
        parameters={"On": "false"},
        conditions={"IsOn": {"Fn::Equals": ["true", "false"]}},
    )
    queue = {"Type": "AWS::SQS::Queue", "Condition": "IsOn"}
    taken = {
        "Type": "AWS::SNS::Topic",
        "Properties": {"TopicName": {"Fn::If": ["IsOn", {"Ref": "Q"}, "x"]}},
    }
    assert dependency_graph({"Resources": {"Q": queue, "T": taken}}, resolver) == {"T": set()}
    needs = {"Type": "AWS::SNS::Topic", "DependsOn": "Q"}
    with pytest.raises(ValueError, match=r"unresolved resource dependencies \['Q'\]"):
        dependency_graph({"Resources": {"Q": queue, "T": needs}}, resolver)
    assert creation_order({"a": {"b"}, "b": set(), "c": {"a"}}) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="dependency cycle: a -> b -> a"):
        creation_order({"a": {"b"}, "b": {"a"}})


def test_parameters_are_checked_as_cloudformation_checks_them() -> None:
    fleet = load_template(FLEET_TEMPLATE)
    good = {"MainStackName": MAIN, "FleetName": "qwen", "Model": "m", "Image": "i",
            "VpcId": "vpc-1", "SubnetIds": "subnet-1"}  # fmt: skip

    def exists(kind: str, values: list[str]) -> bool:
        return all(v.startswith(("vpc-", "subnet-")) for v in values)

    check_parameters(fleet, good, exists)
    for bad, message in [
        ({"FleetName": "Qwen"}, "must match pattern"),
        ({"MainStackName": "x" * 40}, "must match pattern"),
        ({"Gpus": "0"}, "must be at least 1"),
        ({"Retired": "yes"}, "AllowedValues"),
        ({"SubnetIds": "subnet-1,nope"}, "do not exist"),
        ({"Unknown": "1"}, "do not exist in the template"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_parameters(fleet, {**good, **bad}, exists)
