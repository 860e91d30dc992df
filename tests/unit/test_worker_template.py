"""What the GPU workers and the API's firewall get from both templates (the main stack's
workers and infra/worker-fleet.yaml), for the defects a first deploy met: upgrades that
stopped every worker, gated models that could not load, weights downloaded by every task,
and uploads the firewall refused for their content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchctl.template import PROJECT_ROOT, Resolver, load_template, resources_of_type

FLEET = PROJECT_ROOT / "infra" / "worker-fleet.yaml"
TEMPLATES = {"main": PROJECT_ROOT / "template.yaml", "fleet": FLEET}
# (model parameter, token parameter, condition that the model comes from S3)
NAMES = {
    "main": ("WorkerModel", "WorkerHfTokenSecretArn", "WorkerModelFromS3"),
    "fleet": ("Model", "HfTokenSecretArn", "ModelFromS3"),
}


def one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (properties,) = resources_of_type(template, kind).values()
    return properties


@pytest.mark.parametrize("which", TEMPLATES)
def test_an_update_never_resets_the_workers_or_stops_them_all(which: str) -> None:
    service = one(load_template(TEMPLATES[which]), "AWS::ECS::Service")
    # A DesiredCount in the template is applied on every update that touches the service
    # (a new image): 0 stopped every worker mid-batch.
    assert "DesiredCount" not in service
    deployment = service["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == 100  # an old worker stops once a new one runs
    assert deployment["MaximumPercent"] > 100


@pytest.mark.parametrize("which", TEMPLATES)
def test_weights_live_on_the_instance_and_a_gated_models_token_comes_from_its_secret(
    which: str,
) -> None:
    template = load_template(TEMPLATES[which])
    _, token, _ = NAMES[which]
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


@pytest.mark.parametrize("which", TEMPLATES)
def test_s3_weights_are_readable_only_under_their_prefix(which: str) -> None:
    template = load_template(TEMPLATES[which])
    model, _, from_s3 = NAMES[which]
    (policy,) = resources_of_type(template, "AWS::IAM::Policy").values()
    resolver = Resolver(
        pseudo={"AWS::Partition": "aws"},
        parameters={model: "s3://my-models/llm/qwen-7b/", "DeployWorkers": "true"},
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
