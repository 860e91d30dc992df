"""The webhook function as deployed: its executions are capped (one tenant's receivers cannot
take the account's shared Lambda concurrency), a batch of attempts that all run to their
deadline fits its timeout, and its role may write only what deliveries record."""

from __future__ import annotations

from typing import Any

from batch_core.webhooks import DELIVERY_TIMEOUT_SECONDS
from batchctl.template import sam_transformed


def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = sam_transformed(DeployWorkers="true")["Resources"]
    return resources


def test_the_webhook_event_source_is_capped_within_what_lambda_accepts() -> None:
    mapping = _resources()["WebhookFunctionDeliveries"]["Properties"]
    # Lambda refuses MaximumConcurrency outside 2..1000; a cap well below the account's
    # default 1,000 leaves the API, intake and finalize their concurrency.
    cap = mapping["ScalingConfig"]["MaximumConcurrency"]
    assert 2 <= cap <= 50


def test_a_batch_of_attempts_at_their_deadline_fits_the_timeout_and_the_visibility() -> None:
    resources = _resources()
    mapping = resources["WebhookFunctionDeliveries"]["Properties"]
    timeout = int(resources["WebhookFunction"]["Properties"]["Timeout"])
    worst = mapping["BatchSize"] * DELIVERY_TIMEOUT_SECONDS
    assert worst + 5 <= timeout, (worst, timeout)  # room for the table writes around them
    visibility = int(resources["WebhookQueue"]["Properties"]["VisibilityTimeout"])
    assert visibility >= 6 * timeout  # AWS's advice for an SQS event source


def test_the_webhook_role_updates_items_but_never_puts_or_deletes_them() -> None:
    role = _resources()["WebhookFunctionRole"]["Properties"]
    actions: set[str] = set()
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions |= {listed} if isinstance(listed, str) else set(listed)
    assert "dynamodb:UpdateItem" in actions  # failures in a row, the tenant's time budget
    assert not actions & {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
