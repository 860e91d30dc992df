"""`make deploy` and `make undeploy`: from configured AWS credentials to a working stack and a
first API key, and back to nothing, without a question asked.

    python -m batchctl.deploy deploy [--dry-run]
    python -m batchctl.deploy undeploy [--dry-run]

Settings come from the environment (the Makefile passes its variables): STACK, AWS_REGION,
MODEL, SERVED_MODEL_NAME, INSTANCE_TYPES (or INSTANCE_TYPE; comma-separated), MAX_WORKERS,
VPC_ID, SUBNET_IDS, HF_TOKEN_SECRET_ARN, WORKERS (false: the stack without GPU workers), TENANT
(the first key's). `--dry-run`
(DRY_RUN=1) prints every step and touches nothing, AWS included.

The deploy: `sam build`; `sam deploy` of the stack without workers (which creates the image
repository); the worker image built for linux/amd64 with docker, finch or podman and pushed;
`sam deploy` again with the workers on that image; on a first deploy, the first API key. The
undeploy: no worker fleet may remain; the workers scaled to zero and their instances let go
(ECS protects them from scale-in, which otherwise holds `sam delete` until it times out);
every version of every object deleted (paginated); `sam delete`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from batchctl.template import WORKERS

STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
"""What make deploy accepts: the template needs no more (its bounded names come from the stack
id), but a short lowercase name keeps the generated names readable and fleets possible
(worker-fleet's MainStackName: 36 characters)."""
# EC2 "All G and VT Spot Instance Requests" (vCPUs): the workers are spot unless the stack's
# WorkerOnDemand* parameters say otherwise, and `make deploy` leaves them at all spot.
GPU_QUOTA_CODE = "L-3819A6DF"
CONTAINER_TOOLS = ("docker", "finch", "podman")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys a call


class DeployError(Exception):
    """A step that cannot go on, said plainly."""


@dataclass(frozen=True)
class DeploySettings:
    stack: str = "openbatch"
    region: str = ""
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    served_model_name: str = "qwen-7b"
    # The workers' types, comma-separated (the template's WorkerInstanceTypes).
    instance_types: str = "g6.xlarge,g5.xlarge,g6.2xlarge,g5.2xlarge"
    max_workers: int = 4
    vpc_id: str = ""
    subnet_ids: str = ""
    hf_token_secret_arn: str = ""
    workers: bool = True
    tenant: str = "default"

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> DeploySettings:
        def get(name: str, default: str) -> str:
            return environ.get(name) or default

        settings = cls(
            stack=get("STACK", cls.stack),
            region=get("AWS_REGION", get("AWS_DEFAULT_REGION", "")),
            model=get("MODEL", cls.model),
            served_model_name=get("SERVED_MODEL_NAME", cls.served_model_name),
            instance_types=get("INSTANCE_TYPES", get("INSTANCE_TYPE", cls.instance_types)),
            max_workers=int(get("MAX_WORKERS", str(cls.max_workers))),
            vpc_id=get("VPC_ID", ""),
            subnet_ids=get("SUBNET_IDS", ""),
            hf_token_secret_arn=get("HF_TOKEN_SECRET_ARN", ""),
            workers=get("WORKERS", "true").lower() not in {"false", "0", "no"},
            tenant=get("TENANT", cls.tenant),
        )
        if not STACK_NAME.fullmatch(settings.stack):
            raise DeployError(
                f"STACK={settings.stack!r}: 1 to 40 lowercase letters, digits and hyphens, "
                "starting with a letter"
            )
        if not settings.region:
            raise DeployError("set AWS_REGION (or AWS_DEFAULT_REGION) to the stack's region")
        return settings


@dataclass
class Runner:
    """Runs or, dry, prints each step: a command, or a call through boto3 described in words."""

    dry_run: bool
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    out: Callable[[str], None] = print

    def run(self, argv: Sequence[str], *, capture: bool = False) -> str:
        """Runs a command (its output returned when `capture`); dry, prints it and returns
        the shell's way of saying its output."""
        line = shlex.join(argv)
        self.out(line)
        if self.dry_run:
            return f"$({line})" if capture else ""
        return self._execute(argv, line, None, capture)

    def pipe(self, source: Sequence[str], sink: Sequence[str]) -> None:
        """`source | sink`, the first's output never printed (a registry password)."""
        self.out(f"{shlex.join(source)} | {shlex.join(sink)}")
        if not self.dry_run:
            secret = self._execute(source, shlex.join(source), None, True)
            self._execute(sink, shlex.join(sink), secret, False)

    def _execute(self, argv: Sequence[str], line: str, stdin: str | None, capture: bool) -> str:
        result = subprocess.run(
            list(argv),
            input=stdin,
            text=True,
            env=self.environ,
            stdout=subprocess.PIPE if capture else None,
            check=False,
        )
        if result.returncode != 0:
            raise DeployError(f"`{line}` failed (exit {result.returncode})")
        return (result.stdout or "").strip()

    def step(self, words: str) -> bool:
        """Says a step done through boto3; returns whether to do it."""
        self.out(f"# {words}")
        return not self.dry_run


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str] | None:
    """The stack's outputs, or None when it does not exist."""
    try:
        (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


LEGACY_WORKERS = ("WorkerCluster", "WorkerService", "WorkerAutoScalingGroup")
"""The worker resources of a stack deployed before its workers became the nested `Workers`
stack (infra/worker-fleet.yaml): what must be drained before an upgrade or a delete."""


def stack_resources(cloudformation: Any, stack: str) -> dict[str, str]:
    """The stack's resources: logical id -> physical id."""
    described = cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in described}


def legacy_workers(physical: dict[str, str]) -> tuple[str, str, str] | None:
    """The cluster, service and group of workers still in the main template, if any."""
    if not all(name in physical for name in LEGACY_WORKERS):
        return None
    cluster, service, group = (physical[name] for name in LEGACY_WORKERS)
    return cluster, service.rsplit("/", 1)[-1], group


def container_tool() -> str:
    for tool in CONTAINER_TOOLS:
        if shutil.which(tool):
            return tool
    raise DeployError(
        "no container tool: install docker, finch or podman to build the worker image "
        "(or WORKERS=false for the stack without GPU workers)"
    )


class Deploy:
    def __init__(self, settings: DeploySettings, runner: Runner, session: Any | None) -> None:
        self.settings = settings
        self.runner = runner
        self.session = session  # None when dry: nothing may reach AWS

    def client(self, name: str) -> Any:
        assert self.session is not None
        return self.session.client(name, region_name=self.settings.region)

    def sam_deploy(self, overrides: dict[str, str]) -> None:
        s = self.settings
        parameters = [f"{key}={value}" for key, value in overrides.items()]
        # samconfig.toml holds the rest (capabilities, --resolve-s3, no changeset prompt).
        self.runner.run(
            ["sam", "deploy", "--stack-name", s.stack, "--region", s.region,
             "--no-confirm-changeset", "--no-fail-on-empty-changeset",
             "--parameter-overrides", *parameters]
        )  # fmt: skip

    def outputs(self) -> dict[str, str]:
        self.runner.step(f"read the outputs of {self.settings.stack} (DescribeStacks)")
        if self.session is None:
            names = ("ApiBaseUrl", "BucketName", "TableName", "WorkerImageRepositoryUri")
            return {name: f"<{name} output>" for name in names}
        found = stack_outputs(self.client("cloudformation"), self.settings.stack)
        if found is None:
            raise DeployError(f"the stack {self.settings.stack} was not created")
        return found

    def network(self) -> tuple[str, str]:
        """The workers' VPC and subnets: as given, else the account's default VPC (public
        subnets: the instances reach AWS's APIs, the registry and the hub without a NAT)."""
        s = self.settings
        if s.vpc_id and s.subnet_ids:
            return s.vpc_id, s.subnet_ids
        if not self.runner.step("VPC_ID/SUBNET_IDS unset: the region's default VPC"):
            return "<default VPC>", "<its subnets>"
        ec2 = self.client("ec2")
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise DeployError("no default VPC in the region: set VPC_ID and SUBNET_IDS")
        vpc = vpcs[0]["VpcId"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        return vpc, ",".join(subnet["SubnetId"] for subnet in subnets)

    def check_gpu_quota(self) -> None:
        s = self.settings
        types = [name.strip() for name in s.instance_types.split(",") if name.strip()]
        words = f"the GPU quota for spot ({GPU_QUOTA_CODE}) holds one of {', '.join(types)}"
        if not self.runner.step(words):
            return
        ec2 = self.client("ec2")
        # describe_instance_types refuses the whole list if one type is not offered here (g6
        # is in fewer regions than g5); the group simply skips such a type.
        offered = ec2.describe_instance_type_offerings(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": types}]
        )["InstanceTypeOfferings"]
        here = [t for t in types if t in {o["InstanceType"] for o in offered}]
        if not here:
            raise DeployError(
                f"none of {', '.join(types)} is offered in this region: set INSTANCE_TYPES "
                "to GPU types it has (docs/deploy.md)"
            )
        found = ec2.describe_instance_types(InstanceTypes=here)["InstanceTypes"]
        smallest = min(found, key=lambda t: t["VCpuInfo"]["DefaultVCpus"])
        needed = smallest["VCpuInfo"]["DefaultVCpus"]
        quota = self.client("service-quotas").get_service_quota(
            ServiceCode="ec2", QuotaCode=GPU_QUOTA_CODE
        )["Quota"]["Value"]
        if quota < needed:
            raise DeployError(
                f"the region's 'All G and VT Spot Instance Requests' quota is {quota:g} vCPUs; "
                f"a {smallest['InstanceType']} needs {needed}. Ask for more in Service Quotas "
                "(docs/deploy.md, 'GPU quota'), or WORKERS=false for now."
            )

    def image(self, repository: str) -> str:
        tool = container_tool() if not self.runner.dry_run else "docker"
        # A new tag per build: the repository's tags are immutable.
        commit = self.runner.run(["git", "rev-parse", "--short", "HEAD"], capture=True)
        stamp = "$(date +%s)" if self.runner.dry_run else str(int(time.time()))
        tag = f"{commit}-{stamp}"
        registry = repository.split("/", 1)[0]
        self.runner.pipe(
            ["aws", "ecr", "get-login-password", "--region", self.settings.region],
            [tool, "login", "--username", "AWS", "--password-stdin", registry],
        )
        image = f"{repository}:{tag}"
        self.runner.run(
            [tool, "build", "--platform", "linux/amd64", "-f", "infra/worker.Dockerfile",
             "-t", image, "."]
        )  # fmt: skip
        self.runner.run([tool, "push", image])
        return image

    def drain_legacy_workers(self) -> None:
        """A stack deployed before its workers became the nested `Workers` stack: its old
        worker block leaves the template in this update, and CloudFormation deletes it only
        after creating the new one; its scale-in-protected instances would hold that delete
        until it times out. So they are drained first (their shards go back to the queue,
        nothing is lost); the new workers start cold once the update creates them."""
        assert self.session is not None
        legacy = legacy_workers(stack_resources(self.client("cloudformation"), self.settings.stack))
        if legacy is None:
            return
        self.runner.out(
            f"# {self.settings.stack}'s workers are in the main template (an earlier version): "
            "they are drained before this update moves them into the nested Workers stack"
        )
        Teardown(self.runner, self.session, self.settings.region).drain_workers(*legacy)

    def first_key(self, outputs: dict[str, str]) -> str:
        environ = {"TABLE_NAME": outputs["TableName"], "AWS_REGION": self.settings.region}
        self.runner.environ |= environ
        return self.runner.run(
            ["batchctl", "keys", "create", "--tenant", self.settings.tenant,
             "--name", "make deploy"], capture=True
        )  # fmt: skip

    def run(self) -> None:
        s = self.settings
        self.runner.step(f"is {s.stack} new in {s.region}? (a new stack gets a first key)")
        if self.session is not None:
            existed = stack_outputs(self.client("cloudformation"), s.stack) is not None
            if s.workers:
                container_tool()  # before anything is created
        else:
            existed = False
        self.runner.run(["sam", "build"])
        if existed:
            self.drain_legacy_workers()
        base = {"ServedModels": s.served_model_name}
        self.sam_deploy(base)
        outputs = self.outputs()
        if s.workers:
            self.check_gpu_quota()
            image = self.image(outputs["WorkerImageRepositoryUri"])
            vpc, subnets = self.network()
            workers = {
                "DeployWorkers": "true",
                "WorkerImage": image,
                "WorkerModel": s.model,
                "WorkerServedModelName": s.served_model_name,
                "WorkerInstanceTypes": s.instance_types,
                "WorkerMaxCount": str(s.max_workers),
                "WorkerVpcId": vpc,
                "WorkerSubnetIds": subnets,
            }
            if s.hf_token_secret_arn:
                workers["WorkerHfTokenSecretArn"] = s.hf_token_secret_arn
            self.sam_deploy(base | workers)
        key = (
            self.first_key(outputs)
            if not existed
            else "<your key: batchctl keys create --tenant T>"
        )
        self.runner.out(ready_message(outputs, key, s.served_model_name))


def ready_message(outputs: dict[str, str], key: str, model: str) -> str:
    return f"""
openbatch is deployed.
  base URL  {outputs["ApiBaseUrl"]}
  API key   {key}   (shown once: the table keeps its hash)
  bucket    s3://{outputs["BucketName"]}/inbox/   (drop JSONL files here)

from openai import OpenAI
client = OpenAI(base_url="{outputs["ApiBaseUrl"]}", api_key="{key}")
batch_input = client.files.create(file=open("first-batch.jsonl", "rb"), purpose="batch")
batch = client.batches.create(input_file_id=batch_input.id,
                              endpoint="/v1/chat/completions", completion_window="24h")
# each line's body.model: "{model}"
"""


class Teardown:
    """What `sam delete` cannot do alone: let the protected worker instances go, and empty the
    versioned bucket."""

    def __init__(self, runner: Runner, session: Any | None, region: str) -> None:
        self.runner = runner
        self.session = session
        self.region = region

    def client(self, name: str) -> Any:
        assert self.session is not None
        return self.session.client(name, region_name=self.region)

    def refuse_with_fleets(self, stack: str) -> None:
        if not self.runner.step(f"no worker-fleet stack imports {stack}'s exports"):
            return
        cloudformation = self.client("cloudformation")
        importers: set[str] = set()
        for export in (f"{stack}-BucketName", f"{stack}-ModelRegistryFunctionArn"):
            try:
                importers |= set(cloudformation.list_imports(ExportName=export)["Imports"])
            except cloudformation.exceptions.ClientError as error:
                if "is not imported" not in str(error):
                    raise
        if importers:
            raise DeployError(
                f"delete the worker-fleet stacks first (they use this stack): "
                f"{', '.join(sorted(importers))}"
            )

    def drain_workers(self, cluster: str, service: str, group: str, timeout: float = 1800) -> None:
        """Workers to zero (each finishes its part and releases its shard), then their
        instances unprotected and the group to zero, waiting until none is left."""
        if not self.runner.step(f"scale {service} to 0 and wait for its tasks to stop"):
            self.runner.step(f"let {group}'s instances go (scale-in protection off) and wait")
            return
        scaling = self.client("application-autoscaling")
        resource = f"service/{cluster}/{service}"
        # Held at zero: the scaling alarms would otherwise start workers for waiting shards.
        scaling.register_scalable_target(
            ServiceNamespace="ecs", ResourceId=resource,
            ScalableDimension="ecs:service:DesiredCount", MinCapacity=0, MaxCapacity=0,
        )  # fmt: skip
        ecs = self.client("ecs")
        ecs.update_service(cluster=cluster, service=service, desiredCount=0)
        wait_until(
            lambda: not ecs.list_tasks(cluster=cluster, serviceName=service)["taskArns"],
            timeout,
            f"the tasks of {service} to stop",
        )
        self.runner.step(f"let {group}'s instances go (scale-in protection off) and wait")
        autoscaling = self.client("autoscaling")

        def instances() -> list[str]:
            (described,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
                "AutoScalingGroups"
            ]
            return [i["InstanceId"] for i in described["Instances"]]

        held = instances()
        for start in range(0, len(held), 50):  # SetInstanceProtection takes 50 at a time
            autoscaling.set_instance_protection(
                AutoScalingGroupName=group,
                InstanceIds=held[start : start + 50],
                ProtectedFromScaleIn=False,
            )
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=group, MinSize=0, MaxSize=0, DesiredCapacity=0
        )
        wait_until(lambda: not instances(), timeout, f"the instances of {group} to end")

    def empty_bucket(self, bucket: str) -> int:
        """Every version and delete marker, 1,000 per call; returns how many were deleted."""
        if not self.runner.step(f"delete every object version and delete marker in {bucket}"):
            return 0
        s3 = self.client("s3")
        deleted = 0
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for chunk in chunks(
            (
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for page in pages
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ),
            DELETE_BATCH,
        ):
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise DeployError(f"could not delete {first['Key']}: {first['Message']}")
            deleted += len(chunk)
        return deleted

    def run(self, stack: str) -> None:
        self.refuse_with_fleets(stack)
        if self.session is None:
            self.drain_workers("<WorkerCluster>", "<WorkerService>", "<WorkerAutoScalingGroup>")
            self.empty_bucket("<BucketName output>")
        else:
            cloudformation = self.client("cloudformation")
            outputs = stack_outputs(cloudformation, stack)
            if outputs is None:
                self.runner.out(f"# no stack {stack} in {self.region}: nothing to delete")
                return
            physical = stack_resources(cloudformation, stack)
            # The workers are a nested stack (infra/worker-fleet.yaml): its outputs name them.
            workers = (
                stack_outputs(cloudformation, physical[WORKERS]) if WORKERS in physical else None
            )
            legacy = legacy_workers(physical)  # a stack last deployed before the nesting
            if workers:
                self.drain_workers(
                    workers["WorkerClusterName"],
                    workers["WorkerServiceName"],
                    workers["WorkerAutoScalingGroupName"],
                )
            elif legacy is not None:
                self.drain_workers(*legacy)
            self.empty_bucket(outputs["BucketName"])
        self.runner.run(
            ["sam", "delete", "--stack-name", stack, "--region", self.region, "--no-prompts"]
        )


def chunks(items: Iterator[dict[str, str]] | Any, size: int) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def wait_until(done: Callable[[], bool], timeout: float, what: str, every: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise DeployError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchctl.deploy")
    parser.add_argument("action", choices=["deploy", "undeploy"])
    parser.add_argument("--dry-run", action="store_true", help="print every step, run none")
    args = parser.parse_args(argv)
    dry = args.dry_run or os.environ.get("DRY_RUN", "") not in {"", "0"}
    try:
        settings = DeploySettings.from_environment(dict(os.environ))
        runner = Runner(dry_run=dry)
        session = None if dry else boto3.session.Session(region_name=settings.region)
        if args.action == "deploy":
            Deploy(settings, runner, session).run()
        else:
            Teardown(runner, session, settings.region).run(settings.stack)
    except DeployError as error:
        print(f"make {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
