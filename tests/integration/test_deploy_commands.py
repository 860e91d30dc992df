"""`make deploy` / `make undeploy` (batchctl/deploy.py) and the first key: the dry run prints the
whole sequence without reaching AWS, the teardown lets protected GPU instances go and empties
a versioned bucket past one page, and `batchctl keys create` works with what the guide
exports (TABLE_NAME and AWS_REGION, in a region other than us-east-1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchctl.deploy import Deploy, DeployError, DeploySettings, Runner, Teardown
from batchctl.moto_server import start_moto_server, stop_moto_server
from batchctl.template import FLEET_PATH, PROJECT_ROOT, WORKERS, load_template

BIN = Path(sys.executable).parent
# Nothing may reach AWS in a dry run: any call would go to a closed port and fail.
NO_AWS = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "none",
    "AWS_SECRET_ACCESS_KEY": "none",
    "PATH": f"{BIN}:{os.environ['PATH']}",
}


def make(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    # -o: the venv counts as installed (the test runs in it), so make never reinstalls.
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **NO_AWS, **environ},
        timeout=120,
        check=False,
    )


def test_make_deploy_dry_run_prints_the_whole_sequence_and_touches_nothing() -> None:
    result = make("deploy", "DRY_RUN=1", "AWS_REGION=eu-west-1", "STACK=team-batches")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    commands = [line for line in lines if line and not line.startswith("#")]

    def index(start: str) -> int:
        return next(i for i, line in enumerate(commands) if line.startswith(start))

    order = [
        index("sam build"),
        index("sam deploy --stack-name team-batches --region eu-west-1"),
        index("aws ecr get-login-password --region eu-west-1 | docker login"),
        index("docker build --platform linux/amd64 -f infra/worker.Dockerfile"),
        index("docker push"),
        index("batchctl keys create --tenant default"),
    ]
    assert order == sorted(order), commands
    deploys = [line for line in commands if line.startswith("sam deploy")]
    assert len(deploys) == 2
    assert "DeployWorkers=true" in deploys[1] and "WorkerImage=" in deploys[1]
    assert "DeployWorkers" not in deploys[0]  # the first creates the image repository
    assert "base URL" in result.stdout and "OpenAI(base_url=" in result.stdout
    assert any("GPU quota" in line for line in lines)


def test_make_deploy_without_workers_builds_no_image() -> None:
    result = make("deploy", "DRY_RUN=1", "AWS_REGION=eu-west-1", "WORKERS=false")
    assert result.returncode == 0, result.stderr
    assert "docker" not in result.stdout
    assert result.stdout.count("sam deploy") == 1


def test_make_undeploy_dry_run_drains_empties_and_deletes() -> None:
    result = make("undeploy", "DRY_RUN=1", "AWS_REGION=eu-west-1")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert (
        text.index("scale")
        < text.index("scale-in protection off")
        < text.index("every object version")
        < text.index("sam delete --stack-name openbatch --region eu-west-1 --no-prompts")
    )


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"STACK": "Team_Batches", "AWS_REGION": "eu-west-1"}, "lowercase"),
        ({"STACK": "a" * 41, "AWS_REGION": "eu-west-1"}, "1 to 40"),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, "AWS_REGION"),
    ],
)
def test_a_bad_setting_is_refused_before_anything_runs(environ: dict[str, str], says: str) -> None:
    with pytest.raises(DeployError, match=says):
        DeploySettings.from_environment(environ)
    result = make("deploy", *(f"{k}={v}" for k, v in environ.items()))
    assert result.returncode != 0
    assert says in result.stderr and "sam build" not in result.stdout


@pytest.fixture
def aws() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(region_name="eu-west-1")


def test_undeploy_lets_the_protected_worker_instances_go(aws: boto3.session.Session) -> None:
    # ECS's managed termination protection marks every worker instance protected from
    # scale-in; CloudFormation's delete of the group then waits on them until it times out.
    template = load_template(FLEET_PATH)["Resources"]  # the workers' one template
    assert template["WorkerAutoScalingGroup"]["Properties"]["NewInstancesProtectedFromScaleIn"]
    ec2, autoscaling, ecs = (aws.client(n) for n in ("ec2", "autoscaling", "ecs"))
    ec2.create_launch_template(
        LaunchTemplateName="workers",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="workers",
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=3,
        LaunchTemplate={"LaunchTemplateName": "workers"},
        VPCZoneIdentifier=subnet,
        NewInstancesProtectedFromScaleIn=True,
    )
    ecs.create_cluster(clusterName="cluster")
    ecs.create_service(cluster="cluster", serviceName="workers", desiredCount=0)

    def instances() -> list[Any]:
        (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])[
            "AutoScalingGroups"
        ]
        return list(group["Instances"])

    # What CloudFormation's delete does first, and why it hangs: the group shrinks to zero
    # but its protected instances stay.
    autoscaling.update_auto_scaling_group(
        AutoScalingGroupName="workers", MinSize=0, MaxSize=0, DesiredCapacity=0
    )
    assert len(instances()) == 3
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="workers", MaxSize=4)
    Teardown(Runner(dry_run=False, out=lambda _: None), aws, "eu-west-1").drain_workers(
        "cluster", "workers", "workers", timeout=30
    )
    assert instances() == []
    (service,) = ecs.describe_services(cluster="cluster", services=["workers"])["services"]
    assert service["desiredCount"] == 0


def test_undeploy_drains_the_workers_its_nested_stack_names(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The main stack's workers are a nested stack (infra/worker-fleet.yaml): what to drain is
    # in its outputs, not among the main stack's own resources.
    names = {"WorkerClusterName", "WorkerServiceName", "WorkerAutoScalingGroupName"}
    assert names <= set(load_template(FLEET_PATH)["Outputs"])
    nested = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": f"the-{name}"} for name in names},
    }
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="tpl", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="tpl", Key="workers.json", Body=json.dumps(nested).encode())
    url = "https://tpl.s3.eu-west-1.amazonaws.com/workers.json"
    main = {
        "Resources": {
            WORKERS: {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": url}}
        },
        "Outputs": {"BucketName": {"Value": "data"}},
    }
    aws.client("cloudformation").create_stack(StackName="openbatch", TemplateBody=json.dumps(main))
    drained: list[tuple[str, ...]] = []
    monkeypatch.setattr(Teardown, "refuse_with_fleets", lambda *_: None)  # moto: no ListImports
    monkeypatch.setattr(Teardown, "drain_workers", lambda _, *given: drained.append(given))
    monkeypatch.setattr(Teardown, "empty_bucket", lambda *_: 0)
    commands: list[str] = []
    runner = Runner(dry_run=False, out=commands.append)
    monkeypatch.setattr(runner, "_execute", lambda *_: "")
    Teardown(runner, aws, "eu-west-1").run("openbatch")
    assert drained == [
        ("the-WorkerClusterName", "the-WorkerServiceName", "the-WorkerAutoScalingGroupName")
    ]
    assert commands[-1].startswith("sam delete --stack-name openbatch")


LEGACY_STACK = {
    # What a stack deployed before the nesting holds: its workers among its own resources.
    "Resources": {
        "WorkerCluster": {"Type": "AWS::ECS::Cluster"},
        "WorkerService": {"Type": "AWS::SQS::Queue"},  # moto: any type, a physical id
        "WorkerAutoScalingGroup": {"Type": "AWS::SQS::Queue"},
    },
    "Outputs": {"BucketName": {"Value": "data"}},
}


def test_undeploy_drains_the_workers_of_a_stack_deployed_before_the_nesting(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(StackName="openbatch", TemplateBody=json.dumps(LEGACY_STACK))
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName="openbatch")["StackResources"]
    }
    drained: list[tuple[str, ...]] = []
    monkeypatch.setattr(Teardown, "refuse_with_fleets", lambda *_: None)  # moto: no ListImports
    monkeypatch.setattr(Teardown, "drain_workers", lambda _, *given: drained.append(given))
    monkeypatch.setattr(Teardown, "empty_bucket", lambda *_: 0)
    runner = Runner(dry_run=False, out=lambda _: None)
    monkeypatch.setattr(runner, "_execute", lambda *_: "")
    Teardown(runner, aws, "eu-west-1").run("openbatch")
    assert drained == [
        (
            physical["WorkerCluster"],
            physical["WorkerService"].rsplit("/", 1)[-1],
            physical["WorkerAutoScalingGroup"],
        )
    ]


def test_an_upgrade_drains_the_workers_still_in_the_main_template_first(
    aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their block leaves the template in the update; CloudFormation would delete it only
    after creating the nested one, held by its scale-in-protected instances."""
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(StackName="openbatch", TemplateBody=json.dumps(LEGACY_STACK))
    order: list[str] = []
    monkeypatch.setattr(Teardown, "drain_workers", lambda _, *given: order.append("drain"))
    runner = Runner(dry_run=False, out=lambda _: None)
    monkeypatch.setattr(runner, "_execute", lambda command, *_: order.append(command[:2]) or "")
    settings = DeploySettings(region="eu-west-1", workers=False)
    outputs = {"ApiBaseUrl": "u", "BucketName": "b", "TableName": "t"}
    monkeypatch.setattr(Deploy, "outputs", lambda _: outputs)
    Deploy(settings, runner, aws).run()
    assert order[:3] == [["sam", "build"], "drain", ["sam", "deploy"]]
    # A stack already nested (or new) drains nothing.
    cloudformation.delete_stack(StackName="openbatch")
    order.clear()
    Deploy(settings, runner, aws).run()
    assert "drain" not in order


def test_undeploy_empties_a_versioned_bucket_past_one_page(aws: boto3.session.Session) -> None:
    # The guide's old one-liner (one list-object-versions, one delete-objects) fails past
    # 1,000 versions and with none.
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
    for i in range(700):
        s3.put_object(Bucket="data", Key=f"batches/{i % 350}.jsonl", Body=b"x")
    for i in range(0, 350, 2):
        s3.delete_object(Bucket="data", Key=f"batches/{i}.jsonl")  # a delete marker each
    teardown = Teardown(Runner(dry_run=False, out=lambda _: None), aws, "eu-west-1")
    assert teardown.empty_bucket("data") == 700 + 175
    assert "Versions" not in s3.list_object_versions(Bucket="data")
    assert teardown.empty_bucket("data") == 0  # an empty bucket is no error
    s3.delete_bucket(Bucket="data")


def test_the_first_key_needs_only_the_table_and_the_guides_region(tmp_path: Path) -> None:
    # The guide exports TABLE_NAME and AWS_REGION (not BUCKET_NAME, SHARD_QUEUE_URL or
    # AWS_DEFAULT_REGION); the key must land in that region's table.
    server, url = start_moto_server(execute_state_machines=False)
    try:
        dynamodb = boto3.client(
            "dynamodb", region_name="eu-west-1", endpoint_url=url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        dynamodb.create_table(
            TableName="batches",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
        environ = {
            key: value
            for key, value in os.environ.items()
            if key not in {"AWS_DEFAULT_REGION", "BUCKET_NAME", "SHARD_QUEUE_URL"}
        }
        environ |= {
            "TABLE_NAME": "batches",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "HOME": str(tmp_path),  # no profile's region either
        }
        result = subprocess.run(
            [str(BIN / "batchctl"), "keys", "create", "--tenant", "team-a", "--name", "first"],
            capture_output=True, text=True, env=environ, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert key.startswith("sk-ob-")
        items = dynamodb.scan(TableName="batches")["Items"]
        assert [item["pk"]["S"] for item in items if item["pk"]["S"].startswith("APIKEY#")]
    finally:
        stop_moto_server(server)
