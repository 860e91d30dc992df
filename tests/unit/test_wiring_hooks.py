"""Every AWS client the wiring builds passes the registered hooks (how the local stack mends
moto's quirks without touching production code or private attributes)."""

from __future__ import annotations

from typing import Any

import boto3

from batch_core import wiring
from batch_core.settings import Settings


def test_every_client_the_service_is_built_on_passes_the_hooks() -> None:
    seen: list[tuple[str, Any]] = []

    def hook(service_name: str, client: Any) -> None:
        seen.append((service_name, client))

    settings = Settings(
        bucket_name="b",
        table_name="t",
        shard_queue_url="https://sqs.us-east-1.amazonaws.com/1/s",
        intake_queue_url="https://sqs.us-east-1.amazonaws.com/1/i",
        webhook_queue_url="https://sqs.us-east-1.amazonaws.com/1/w",
    )
    session = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    wiring.add_client_hook(hook)
    try:
        stages = wiring.build_stages(settings, session)
    finally:
        wiring.remove_client_hook(hook)
    assert sorted(name for name, _ in seen) == ["dynamodb", "events", "s3", "sqs", "stepfunctions"]
    assert stages.settings is settings
    wiring.build_stages(settings, session)  # removed: later clients are not seen
    assert len(seen) == 5
