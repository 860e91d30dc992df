"""`make deploy`'s GPU quota check against EC2's own answers (moto): a listed type the region
does not offer is skipped, as the Auto Scaling group skips it, never a crash of the deploy."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchctl.deploy import Deploy, DeployError, DeploySettings, Runner


class Quotas:
    """Service Quotas (moto has no EC2 quotas): the region's spot G quota in vCPUs."""

    def __init__(self, vcpus: float) -> None:
        self.vcpus = vcpus

    def get_service_quota(self, **_: Any) -> dict[str, Any]:
        return {"Quota": {"Value": self.vcpus}}


def deploy(types: str, quota: float) -> Deploy:
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    settings = DeploySettings(region="us-east-1", instance_types=types)
    target = Deploy(settings, Runner(dry_run=False, out=lambda _: None), session)
    real = target.client
    target.client = lambda name: Quotas(quota) if name == "service-quotas" else real(name)  # type: ignore[method-assign]
    return target


@mock_aws
def test_a_type_the_region_does_not_offer_is_skipped() -> None:
    deploy("g9.xlarge,g5.xlarge", quota=4).check_gpu_quota()  # g5.xlarge: 4 vCPUs
    with pytest.raises(DeployError, match=r"a g5\.xlarge needs 4"):
        deploy("g9.xlarge,g5.xlarge", quota=2).check_gpu_quota()


@mock_aws
def test_no_type_offered_is_a_clear_error() -> None:
    with pytest.raises(DeployError, match=r"none of g9\.xlarge, g9\.2xlarge is offered"):
        deploy("g9.xlarge,g9.2xlarge", quota=64).check_gpu_quota()
