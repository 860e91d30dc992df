"""infra/worker-fleet.yaml deployed on its own, against the main template: what it imports is
exported, its queues are named as the main stack's functions may send to, its workers run on
those queues, and its registry entry carries what the custom resource reads. (Nested in the
main template, the same workers: tests/unit/test_worker_template.py.)"""

from __future__ import annotations

import fnmatch
from typing import Any

from batchctl.template import FLEET_PATH, Resolver, load_template, resources_of_type
from handlers.model_registry import ServedModelProperties

FLEET = FLEET_PATH
QUEUES = ("UrgentShardQueue", "ShardQueue", "BulkShardQueue")


def standalone(fleet: dict[str, Any]) -> Resolver:
    """The fleet deployed on its own against the stack "main", its queues' ids made up."""
    defaults = {name: str(spec.get("Default", "")) for name, spec in fleet["Parameters"].items()}
    resolver = Resolver(
        # AWS::NoValue as "": a list item it leaves out reads as "".
        pseudo={"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::NoValue": ""},
        refs={queue: f"url-{queue}" for queue in QUEUES},
        attributes={(queue, "Arn"): f"arn-{queue}" for queue in QUEUES},
        parameters=defaults | {"MainStackName": "main", "FleetName": "qwen", "Model": "org/qwen"},
        conditions=fleet["Conditions"],
    )
    assert resolver.condition("Standalone")
    return resolver


def walk(node: Any) -> list[Any]:
    """Every dict and list inside `node`."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += walk(child)
    return found


def imported_names(template: dict[str, Any]) -> set[str]:
    names = set()
    for node in walk(template):
        if isinstance(node, dict) and "Fn::ImportValue" in node:
            value = node["Fn::ImportValue"]
            names.add(value["Fn::Sub"] if isinstance(value, dict) else value)
    return names


def test_the_fleet_passes_cfn_lint() -> None:
    from cfnlint.api import lint_file

    assert [str(match) for match in lint_file(FLEET)] == []


def test_what_the_fleet_imports_the_main_stack_exports() -> None:
    main, fleet = load_template(), load_template(FLEET)
    exports = {
        output["Export"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", "${MainStackName}")
        for output in main["Outputs"].values()
        if "Export" in output
    }
    imports = imported_names(fleet)
    assert imports, "the fleet imports nothing"
    assert imports <= exports, imports - exports


def test_the_fleets_queues_are_the_ones_the_main_functions_may_send_to() -> None:
    main, fleet = load_template(), load_template(FLEET)
    queues = resources_of_type(fleet, "AWS::SQS::Queue")
    assert set(queues) == set(QUEUES)
    # Its own only on its own: nested, the workers take the main stack's queues.
    assert {fleet["Resources"][name]["Condition"] for name in queues} == {"Standalone"}
    names = [q["QueueName"]["Fn::Sub"].replace("${MainStackName}", "main") for q in queues.values()]
    functions = resources_of_type(main, "AWS::Serverless::Function")
    for function in ("ValidateFunction", "ExpireFunction", "DeadShardFunction"):
        patterns = [
            p["SQSSendMessagePolicy"]["QueueName"]["Fn::Sub"].replace("${AWS::StackName}", "main")
            for p in functions[function]["Policies"]
            if isinstance(p, dict)
            and "SQSSendMessagePolicy" in p
            and isinstance(p["SQSSendMessagePolicy"]["QueueName"], dict)
            and "Fn::Sub" in p["SQSSendMessagePolicy"]["QueueName"]
        ]
        for name in names:
            assert any(fnmatch.fnmatchcase(name, p) for p in patterns), (function, name)
    for queue in queues.values():  # poison shards end in the main stack's dead-letter queue
        target = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::ImportValue"]["Fn::Sub"]
        assert target == "${MainStackName}-ShardDeadLetterQueueArn"


def test_a_fleet_of_its_own_runs_on_its_own_queues_and_the_main_stacks_data() -> None:
    fleet = load_template(FLEET)
    resolver = standalone(fleet)
    (task,) = resources_of_type(fleet, "AWS::ECS::TaskDefinition").values()
    (container,) = task["ContainerDefinitions"]
    environment = {v["Name"]: resolver.resolve(v["Value"]) for v in container["Environment"]}
    assert environment["SHARD_QUEUE_URL"] == "url-ShardQueue"
    assert environment["URGENT_SHARD_QUEUE_URL"] == "url-UrgentShardQueue"
    assert environment["BULK_SHARD_QUEUE_URL"] == "url-BulkShardQueue"
    assert environment["BUCKET_NAME"] == {"Fn::ImportValue": "main-BucketName"}
    assert environment["TABLE_NAME"] == {"Fn::ImportValue": "main-TableName"}
    (policy,) = fleet["Resources"]["WorkerTaskRole"]["Properties"]["Policies"]
    statements = resolver.resolve(policy["PolicyDocument"]["Statement"])
    (sqs,) = [s for s in statements if "sqs:ReceiveMessage" in s["Action"]]
    assert sqs["Resource"] == [f"arn-{queue}" for queue in QUEUES]
    (table,) = [s for s in statements if "dynamodb:UpdateItem" in s["Action"]]
    assert table["Resource"] == {"Fn::ImportValue": "main-TableArn"}
    assert {"Ref": "MaxWorkers"} in walk(fleet["Resources"]["WorkerScalableTarget"])


def test_the_registration_passes_what_the_custom_resource_reads() -> None:
    fleet = load_template(FLEET)
    registration = fleet["Resources"]["ModelRegistration"]
    assert registration["Type"] == "Custom::ServedModel"
    # Nested, the main stack's own model: the registry refuses it (no entry).
    assert registration["Condition"] == "Standalone"
    # It names the workers' service, so it is removed before its workers go.
    target = registration["Properties"]["ScalingTarget"]
    assert target == {"Fn::Sub": "service/${WorkerCluster}/${WorkerService.Name}"}
    passed = set(registration["Properties"]) - {"ServiceToken"}
    assert passed == set(ServedModelProperties.model_fields)
    resolver = standalone(fleet)
    resolver.pseudo["AWS::StackName"] = "qwen-fleet"
    resolver.refs |= {q: f"https://sqs.eu-west-1.amazonaws.com/1/main-model-{q}" for q in QUEUES}
    resolver.refs["WorkerCluster"] = "qwen-WorkerCluster-AbC123"
    resolver.attributes[("WorkerService", "Name")] = "qwen-WorkerService-XyZ789"
    passed_values = {k: registration["Properties"][k] for k in passed}
    properties = ServedModelProperties.model_validate(
        {k: str(resolver.resolve(v)) for k, v in passed_values.items()}
    )
    served = properties.served_model()
    assert served.scaling_target == "service/qwen-WorkerCluster-AbC123/qwen-WorkerService-XyZ789"
    assert served.engines_per_worker == 1  # one GPU, one engine
    resolver.parameters |= {"Gpus": "8", "GpusPerEngine": "1"}
    properties = ServedModelProperties.model_validate(
        {k: str(resolver.resolve(v)) for k, v in passed_values.items()}
    )
    assert properties.served_model().engines_per_worker == 8


def test_scaling_out_is_the_sizings_and_no_alarm_adds_workers_in_steps() -> None:
    resources = load_template(FLEET)["Resources"]
    policies = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    # The one policy left scales in, to zero: no step adds a worker per cooldown while one
    # shard waits out a cold start (what grew one shard's fleet to MaxWorkers).
    assert list(policies) == ["WorkerScaleInPolicy"]
    config = policies["WorkerScaleInPolicy"]["StepScalingPolicyConfiguration"]
    assert config["AdjustmentType"] == "ExactCapacity"
    assert [s["ScalingAdjustment"] for s in config["StepAdjustments"]] == [0]
    target = resources["WorkerScalableTarget"]["Properties"]
    assert target["MinCapacity"] == 0  # the sizing raises it while work is due
