"""The functions run with only what `sam build` packages: functions/requirements.txt plus the
boto3 of the Lambda runtime. A fresh virtual environment catches a dependency that only the
development environment happens to have (it caught aws-xray-sdk, which Tracer needs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batchctl.template import PROJECT_ROOT

SCRIPT = """
import json, sys
from handlers import api, dead_shard, expire, finalize, validate

class Context:
    function_name = "api"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self):
        return 10_000

event = json.load(open(sys.argv[1]))
event["headers"].pop("Authorization")
event["multiValueHeaders"].pop("Authorization")
answer = api.handler(event, Context())
print(json.dumps({"status": answer["statusCode"], "body": json.loads(answer["body"])}))
"""


def test_the_handlers_import_and_answer_with_the_packaged_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "lambda"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    requirements = PROJECT_ROOT / "functions" / "requirements.txt"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements), "boto3"],
        check=True,
        timeout=600,
    )
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "BUCKET_NAME": "bucket",
        "TABLE_NAME": "table",
        "SHARD_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/shards",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "openbatch",
        "POWERTOOLS_METRICS_NAMESPACE": "OpenBatch",
    }  # tracing on, as in Lambda (Tracing: Active)
    event = PROJECT_ROOT / "events" / "api_list_batches.json"
    result = subprocess.run(
        [str(python), "-c", SCRIPT, str(event)],
        check=False,
        cwd=PROJECT_ROOT / "functions",
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 401
    assert answer["body"]["error"]["code"] == "invalid_api_key"
