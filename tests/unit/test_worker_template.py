"""What the GPU workers and the API's firewall get from the templates (the workers are
infra/worker-fleet.yaml's, nested in template.yaml for the stack's own model), for the
defects a first deploy met: upgrades that stopped every worker, gated models that could not
load, weights downloaded by every task, and uploads the firewall refused for their content."""

from __future__ import annotations

import json
from typing import Any

from batchctl.template import (
    FLEET_PATH,
    WORKERS,
    Resolver,
    load_template,
    nested_fleet,
    resources_of_type,
)


def one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (properties,) = resources_of_type(template, kind).values()
    return properties


def test_the_main_stacks_workers_are_the_fleet_nested_with_its_worker_parameters() -> None:
    main, fleet = load_template(), load_template(FLEET_PATH)
    workers = main["Resources"][WORKERS]
    assert workers["Type"] == "AWS::CloudFormation::Stack"
    assert workers["Condition"] == "CreateWorkers"
    assert workers["Properties"]["TemplateURL"] == "infra/worker-fleet.yaml"
    passed = workers["Properties"]["Parameters"]
    # Each Worker* parameter reaches the fleet's of the same name (MaxWorkers: WorkerMaxCount).
    renamed = {"WorkerMaxCount": "MaxWorkers"}
    for name in main["Parameters"]:
        if name.startswith("Worker"):
            target = renamed.get(name, name.removeprefix("Worker"))
            given = passed[target]
            assert {"Ref": name} in (given, given.get("Fn::Join", [None, None])[1]), name
    assert set(passed) <= set(fleet["Parameters"])
    required = {name for name, spec in fleet["Parameters"].items() if "Default" not in spec}
    assert required <= set(passed)
    # Nested: no MainStackName (nothing imported, no queues or registry entry of its own),
    # and everything the fleet's rule asks of a nested fleet.
    assert "MainStackName" not in passed
    nested_only = {"Fn::Equals": [{"Ref": "MainStackName"}, ""]}
    (rule,) = [r for r in fleet["Rules"].values() if r["RuleCondition"] == nested_only]
    asserted = {a["Assert"]["Fn::Not"][0]["Fn::Equals"][0]["Ref"] for a in rule["Assertions"]}
    assert asserted <= set(passed)
    # No worker resource of its own besides: one copy of the worker block.
    kinds = {r["Type"].split("::")[1] for r in main["Resources"].values()}
    assert not kinds & {"ECS", "EC2", "AutoScaling", "ApplicationAutoScaling"}


def test_the_nested_fleet_gets_the_main_stacks_parts_and_creates_none_of_its_own() -> None:
    main = load_template()
    region, account = "eu-west-1", "123456789012"
    queues = ("UrgentShardQueue", "ShardQueue", "BulkShardQueue")
    parameters: dict[str, Any] = {name: "x" for name in main["Parameters"]}
    parameters["WorkerSubnetIds"] = ["subnet-1", "subnet-2"]  # a CommaDelimitedList
    resolver = Resolver(
        pseudo={
            "AWS::Partition": "aws",
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::StackName": "main",
            "AWS::NoValue": "",
        },
        refs={"DataBucket": "data-bucket", "BatchTable": "main-BatchTable"}
        | {q: f"https://sqs.{region}.amazonaws.com/{account}/main-{q}" for q in queues},
        attributes={(q, "QueueName"): f"main-{q}" for q in queues},
        parameters=parameters,
    )
    fleet, nested = nested_fleet(main, resolver)
    assert not nested.condition("Standalone")
    # Its cluster is the one the main stack's functions size (named before it exists).
    cluster = nested.resolve(fleet["Resources"]["WorkerCluster"]["Properties"]["ClusterName"])
    variables = main["Globals"]["Function"]["Environment"]["Variables"]
    resolver.conditions = main["Conditions"]
    resolver.parameters["DeployWorkers"] = "true"
    assert cluster == resolver.resolve(variables["WORKER_CLUSTER"]) == "main-workers"
    standalone_only = {
        name for name, r in fleet["Resources"].items() if r.get("Condition") == "Standalone"
    }
    assert standalone_only == {*queues, "ModelRegistration"}  # the main stack's queues, no entry
    (container,) = one(fleet, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    environment = {e["Name"]: nested.resolve(e["Value"]) for e in container["Environment"]}
    assert environment["BUCKET_NAME"] == "data-bucket"
    assert environment["TABLE_NAME"] == "main-BatchTable"
    assert environment["SHARD_QUEUE_URL"] == resolver.refs["ShardQueue"]
    assert environment["URGENT_SHARD_QUEUE_URL"] == resolver.refs["UrgentShardQueue"]
    assert environment["BULK_SHARD_QUEUE_URL"] == resolver.refs["BulkShardQueue"]
    (policy,) = fleet["Resources"]["WorkerTaskRole"]["Properties"]["Policies"]
    resources = json.dumps(nested.resolve(policy["PolicyDocument"]["Statement"]))
    for q in queues:
        assert f'"arn:aws:sqs:{region}:{account}:main-{q}"' in resources
    assert f'"arn:aws:dynamodb:{region}:{account}:table/main-BatchTable"' in resources
    assert '"arn:aws:s3:::data-bucket/batches/*"' in resources
    # The scale-in alarm watches the main stack's queues.
    for alarm in ("WorkerScaleInAlarm",):
        metrics = fleet["Resources"][alarm]["Properties"]["Metrics"]
        watched = {
            nested.resolve(m["MetricStat"]["Metric"]["Dimensions"][0]["Value"])
            for m in metrics
            if "MetricStat" in m
        }
        assert watched == {f"main-{q}" for q in queues}, alarm


def test_an_update_never_resets_the_workers_or_stops_them_all() -> None:
    service = one(load_template(FLEET_PATH), "AWS::ECS::Service")
    # A DesiredCount in the template is applied on every update that touches the service
    # (a new image): 0 stopped every worker mid-batch.
    assert "DesiredCount" not in service
    deployment = service["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == 100  # an old worker stops once a new one runs
    assert deployment["MaximumPercent"] > 100


def test_weights_live_on_the_instance_and_a_gated_models_token_comes_from_its_secret() -> None:
    template = load_template(FLEET_PATH)
    token = "HfTokenSecretArn"
    task = one(template, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    (volume,) = task["Volumes"]
    assert volume["Host"]["SourcePath"].startswith("/var/lib/")
    mounts = {m["SourceVolume"]: m["ContainerPath"] for m in container["MountPoints"]}
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert mounts == {volume["Name"]: "/models"}
    assert environment["HF_HOME"].startswith("/models/")
    assert environment["MODEL_CACHE_DIR"].startswith("/models/")
    # The token is a secret ECS reads for the container, never a plain environment value.
    _, given, absent = container["Secrets"]["Fn::If"]
    assert given == [{"Name": "HF_TOKEN", "ValueFrom": {"Ref": token}}]
    assert absent == {"Ref": "AWS::NoValue"}
    roles = resources_of_type(template, "AWS::IAM::Role")
    execution = task["ExecutionRoleArn"]["Fn::GetAtt"][0]
    _, policies, _ = template["Resources"][execution]["Properties"]["Policies"]["Fn::If"]
    (statement,) = policies[0]["PolicyDocument"]["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": {"Ref": token},
    }
    task_role = task["TaskRoleArn"]["Fn::GetAtt"][0]
    assert "secretsmanager" not in json.dumps(roles[task_role])  # the process cannot read it


def test_s3_weights_are_readable_only_under_their_prefix() -> None:
    template = load_template(FLEET_PATH)
    model, from_s3 = "Model", "ModelFromS3"
    (policy,) = resources_of_type(template, "AWS::IAM::Policy").values()
    resolver = Resolver(
        pseudo={"AWS::Partition": "aws"},
        parameters={model: "s3://my-models/llm/qwen-7b/"},
        conditions=template["Conditions"],
    )
    assert resolver.condition(from_s3)
    read, listing = resolver.resolve(policy["PolicyDocument"]["Statement"])
    assert read["Action"] == "s3:GetObject"
    assert read["Resource"] == "arn:aws:s3:::my-models/llm/qwen-7b/*"
    assert listing["Resource"] == "arn:aws:s3:::my-models"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "llm/*"}}
    for other in ("Qwen/Qwen2.5-7B-Instruct", "/models/baked-in", ""):
        resolver.parameters[model] = other
        assert not resolver.condition(from_s3), other


def test_the_firewall_never_refuses_a_body_for_its_content_and_answers_in_openais_shape() -> None:
    # A JSONL of prompts may quote `${jndi:` (no Java reads it); the managed group blocked
    # such uploads with WAF's bare 403.
    firewall = load_template()["Resources"]["ApiFirewall"]["Properties"]
    (managed,) = [
        rule for rule in firewall["Rules"] if "ManagedRuleGroupStatement" in rule["Statement"]
    ]
    overrides = {
        o["Name"]: o["ActionToUse"]
        for o in managed["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
    }
    body_rules = [name for name in overrides if name.endswith("_BODY")]
    assert {"Log4JRCE_BODY", "JavaDeserializationRCE_BODY"} <= set(body_rules)
    assert all(overrides[name] == {"Count": {}} for name in body_rules)
    bodies = firewall["CustomResponseBodies"]
    for name, action in overrides.items():
        if name in body_rules:
            continue
        response = action["Block"]["CustomResponse"]
        body = json.loads(bodies[response["CustomResponseBodyKey"]]["Content"])
        assert set(body["error"]) == {"message", "type", "param", "code"}, name
        assert 400 <= response["ResponseCode"] < 500
