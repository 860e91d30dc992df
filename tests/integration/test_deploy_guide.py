"""docs/deploy.md runs as written: its own shell and Python blocks, read from the doc (not a
copy), in order, in one shell, against the local stack on a moto server that stands in for
the deployed stack (a CloudFormation stack of that name answers the outputs the guide reads).
The deploy itself (`make deploy`, `make undeploy`, a fleet's `aws cloudformation deploy`) is
the one thing replaced. Doc and code cannot drift: a changed command, output name, file or
model name in the guide fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3

from batchctl.template import PROJECT_ROOT
from gpu_worker.engines.fake import FakeEngine
from tests.conftest import lines_of, serve_api

GUIDE = PROJECT_ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
# The deploy, which the local stack replaces; a block of these runs nothing else.
DEPLOY = ("make deploy", "make undeploy", "git pull", "IMAGE=", "aws cloudformation deploy")
STACK = "openbatch"
MODEL_NAME = "qwen-7b"  # what the guide deploys and names in its first batch


def guide_blocks() -> list[tuple[str, str]]:
    return [(match.group(1), match.group(2)) for match in BLOCK.finditer(GUIDE.read_text())]


def commands_of(code: str) -> list[str]:
    """A shell block's commands: its lines, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def is_deploy(code: str) -> bool:
    return all(command.startswith(DEPLOY) for command in commands_of(code))


def script_of(blocks: list[tuple[str, str]]) -> str:
    parts = ["set -eo pipefail"]
    for language, code in blocks:
        if language == "python":
            parts.append(f"python - <<'GUIDE_PYTHON'\n{code}GUIDE_PYTHON")
        elif not is_deploy(code):
            parts.append(code)
    return "\n".join(parts) + "\n"


def test_the_deploy_is_the_only_part_of_the_guide_not_run() -> None:
    blocks = guide_blocks()
    shell = [code for language, code in blocks if language == "bash"]
    deploys = [code for code in shell if is_deploy(code)]
    # A block must be all deploy or all run: a command hidden in a deploy block is never run.
    for code in shell:
        kinds = {command.startswith(DEPLOY) for command in commands_of(code)}
        assert len(kinds) == 1, f"a block mixes the deploy with other commands:\n{code}"
    assert len(deploys) == 4, deploys  # deploy, a fleet, upgrade, tear down
    assert len(shell) - len(deploys) >= 5
    assert any(language == "python" for language, _ in blocks)


def test_the_guide_runs_as_written_from_keys_to_results(tmp_path: Path) -> None:
    # The guide runs from a checkout: its .venv and examples/ (linked), nothing else.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "examples").symlink_to(PROJECT_ROOT / "examples")
    with serve_api(FakeEngine(MODEL_NAME), {}, served_models=[MODEL_NAME]) as (stack, server):
        url = stack.endpoint_url
        assert url is not None
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        cloudformation = boto3.client(
            "cloudformation", region_name="us-east-1", endpoint_url=url, **credentials
        )
        # The deploy's result: a stack named as the guide names it, with its outputs.
        outputs = {
            "ApiBaseUrl": server.base_url,
            "BucketName": stack.physical_id("DataBucket"),
            "TableName": stack.physical_id("BatchTable"),
        }
        cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(
                {
                    "Resources": {"Deployed": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                    "Outputs": {name: {"Value": value} for name, value in outputs.items()},
                }
            ),
        )
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OPENAI_", "AWS_", "BUCKET", "TABLE", "SHARD", "VIRTUAL_ENV"))
        }
        environ |= {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "HOME": str(tmp_path),  # no profile, no saved credentials
        }
        result = subprocess.run(
            ["bash", "-c", script_of(guide_blocks())],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    # The key the guide created, the batch the SDK ran, the CLI's and the drop's results.
    assert "team A's key: sk-ob-" in result.stdout
    sdk_line = next(line for line in result.stdout.splitlines() if line.startswith("batch_"))
    assert " completed " in sdk_line, result.stdout
    requests = len((PROJECT_ROOT / "examples" / "chat.jsonl").read_text().splitlines())
    for out in ("results/cli", "results/drop"):
        output = lines_of(tmp_path / out / "output.jsonl")
        assert len(output) == requests, out
        assert {line["response"]["body"]["model"] for line in output} == {MODEL_NAME}
    batch = json.loads((tmp_path / "results" / "drop" / "batch.json").read_text())
    assert batch["status"] == "completed"
