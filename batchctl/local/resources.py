"""The stack's resources on moto, built from template.yaml's own properties."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3

from batchctl.template import (
    FLEET_PATH,
    Resolver,
    load_template,
    resources_of_type,
    state_machine_definition,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "openbatch-local"
STACK_ID = (
    f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/0c9a8f00-5e2b-11ef-9b1a-0a1b2c3d4e5f"
)
"""As CloudFormation names a stack: the template takes unique, lowercase names from its id."""


@dataclass(frozen=True)
class ResourceOptions:
    """What a local stack changes from the template's defaults."""

    served_models: list[str] = field(default_factory=list)
    poll_seconds: int = 1
    shard_size: int | None = None
    part_size: int | None = None
    shards_ahead: int | None = None
    """A batch's shards queued or running at once (None: the template's default)."""
    worker_fleet: bool = False
    """The stack's own workers as their scaling sees them (DeployWorkers): their ECS
    cluster and service, and the service's scalable target, as infra/worker-fleet.yaml
    makes them. No task runs there: the local workers are threads."""


def create_resources(
    session: boto3.session.Session, options: ResourceOptions
) -> tuple[Resolver, dict[str, str]]:
    """Every queue, table, state machine and bucket of template.yaml on moto; returns the
    resolver (logical names to local ids) and the functions' environment."""
    template = load_template()
    resolver = Resolver(
        pseudo={
            "AWS::StackName": STACK,
            "AWS::StackId": STACK_ID,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
        },
        parameters=_parameters(template, options),
        conditions=template.get("Conditions", {}),
    )
    sqs = session.client("sqs")
    queues = resources_of_type(template, "AWS::SQS::Queue")
    # Dead-letter queues first: the others point at them.
    for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n]):
        _create_queue(sqs, name, queues[name], resolver)
    dynamodb = session.client("dynamodb")
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
        created = dynamodb.create_table(TableName=table_name, **spec)
        resolver.refs[name] = table_name
        resolver.attributes[(name, "Arn")] = created["TableDescription"]["TableArn"]
    sfn = session.client("stepfunctions")
    for name, props in resources_of_type(template, "AWS::Serverless::StateMachine").items():
        definition = state_machine_definition(props, resolver)
        arn = sfn.create_state_machine(
            name=resolver.resolve(props["Name"]),
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
            type=props.get("Type", "STANDARD"),
        )["stateMachineArn"]
        resolver.refs[name] = arn
    s3 = session.client("s3")
    for name, props in resources_of_type(template, "AWS::S3::Bucket").items():
        bucket = resolver.resolve(props["BucketName"])
        s3.create_bucket(Bucket=bucket)
        versioning = props.get("VersioningConfiguration", {}).get("Status")
        if versioning:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": versioning})
        resolver.refs[name] = bucket
        # The console's fetch of a presigned URL (CloudFormation's names -> S3's).
        cors: list[Any] = [
            {("MaxAgeSeconds" if k == "MaxAge" else k): v for k, v in rule.items() if k != "Id"}
            for rule in props.get("CorsConfiguration", {}).get("CorsRules", [])
        ]
        if cors:
            s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": cors})
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
    if options.worker_fleet:
        create_worker_fleet(session, str(environment["WORKER_CLUSTER"]))
    # Locally every tier of the tracker's poll is the same short wait.
    overrides = {
        "TRACKER_POLL_SECONDS": str(options.poll_seconds),
        "TRACKER_POLL_LATER_SECONDS": str(options.poll_seconds),
        "TRACKER_POLL_LATEST_SECONDS": str(options.poll_seconds),
        # The receivers of a local run are on this machine; retries come soon after.
        "WEBHOOK_ALLOW_INTERNAL_TARGETS": "true",
        "WEBHOOK_RETRY_BASE_SECONDS": "1",
    }
    if options.shard_size:
        overrides["MAX_REQUESTS_PER_SHARD"] = str(options.shard_size)
    if options.part_size:
        overrides["RESULTS_PART_SIZE"] = str(options.part_size)
    return resolver, {**{k: str(v) for k, v in environment.items()}, **overrides}


def _parameters(template: dict[str, Any], options: ResourceOptions) -> dict[str, str]:
    """The template's parameters: its defaults, with what the local stack changes."""
    parameters = {
        name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()
    }
    parameters["ServedModels"] = ",".join(options.served_models)
    parameters["TrackerPollSeconds"] = str(options.poll_seconds)
    if options.shards_ahead is not None:
        parameters["ShardsAheadPerBatch"] = str(options.shards_ahead)
    if options.worker_fleet:
        parameters["DeployWorkers"] = "true"
    return parameters


def _create_queue(sqs: SQSClient, name: str, props: dict[str, Any], resolver: Resolver) -> None:
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


def create_worker_fleet(
    session: boto3.session.Session, cluster: str, parameters: dict[str, str] | None = None
) -> str:
    """A worker fleet's cluster, service and scalable target (infra/worker-fleet.yaml's, its
    `parameters` over the defaults); returns the target's resource id."""
    fleet = load_template(FLEET_PATH)
    resolver = Resolver(
        pseudo={"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        parameters={
            name: str(spec.get("Default", "")) for name, spec in fleet["Parameters"].items()
        }
        | (parameters or {}),
        conditions=fleet.get("Conditions", {}),
    )
    ecs = session.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    family = f"{cluster}-WorkerTaskDefinition"
    ecs.register_task_definition(
        family=family, containerDefinitions=[{"name": "worker", "image": "local", "memory": 512}]
    )
    service = f"{cluster}-WorkerService-LOCAL"
    # No DesiredCount in the template: a new service starts none here (the sizing does).
    ecs.create_service(cluster=cluster, serviceName=service, taskDefinition=family, desiredCount=0)
    props = fleet["Resources"]["WorkerScalableTarget"]["Properties"]
    target = f"service/{cluster}/{service}"
    session.client("application-autoscaling").register_scalable_target(
        ServiceNamespace=props["ServiceNamespace"],
        ScalableDimension=props["ScalableDimension"],
        ResourceId=target,
        MinCapacity=int(resolver.resolve(props["MinCapacity"])),
        MaxCapacity=int(resolver.resolve(props["MaxCapacity"])),
    )
    return target
