"""The workers' capacity (infra/worker-fleet.yaml, nested in template.yaml): spot over several
GPU instance types of one memory class, an on-demand base and share as parameters, capacity
rebalancing, ECS's managed draining; the image pulled once per instance and the weights cached
on its NVMe store when it has one. Read from the templates themselves; the user data is run
with stand-ins for the commands it calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from batchctl.template import FLEET_PATH, WORKERS, load_template, resources_of_type

# Each GPU type's memory (GB) per GPU: the instance types of a fleet share one, so a model and
# context that fit on one fit on all (AWS's instance type pages).
GPU_MEMORY_GB = {"g4dn": 16, "g5": 24, "g6": 24, "g6e": 48, "p4d": 40, "p5": 80}


def one(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    ((name, properties),) = resources_of_type(template, kind).items()
    return name, properties


def instance_types(spec: dict[str, Any]) -> list[str]:
    return [name.strip() for name in str(spec["Default"]).split(",")]


def test_the_workers_are_spot_over_several_types_of_one_gpu_memory_class() -> None:
    fleet = load_template(FLEET_PATH)
    parameters = fleet["Parameters"]
    _, group = one(fleet, "AWS::AutoScaling::AutoScalingGroup")
    template_name, template = one(fleet, "AWS::EC2::LaunchTemplate")
    # A mixed instances policy takes a launch template (AWS refuses a launch configuration),
    # and the group has no launch template of its own beside it.
    assert "LaunchTemplate" not in group and "LaunchConfigurationName" not in group
    policy = group["MixedInstancesPolicy"]
    specification = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert specification["LaunchTemplateId"] == {"Ref": template_name}
    # The types come from the overrides, not from the launch template.
    assert "InstanceType" not in template["LaunchTemplateData"]
    (override,) = policy["LaunchTemplate"]["Overrides"]
    requirements = override["InstanceRequirements"]
    assert requirements["AllowedInstanceTypes"] == {"Ref": "InstanceTypes"}
    assert requirements["AcceleratorCount"] == {"Min": {"Ref": "Gpus"}}
    assert requirements["MemoryMiB"] == {"Min": {"Ref": "MemoryMiB"}}  # room for the container
    # Every listed type stays in: AWS's default price protection would drop the types priced
    # 20 % over the cheapest (g5.xlarge beside g6.xlarge), leaving one pool.
    assert requirements["OnDemandMaxPricePercentageOverLowestPrice"] == 999999
    assert requirements["SpotMaxPricePercentageOverLowestPrice"] == 999999
    assert parameters["InstanceTypes"]["Type"] == "CommaDelimitedList"
    types = instance_types(parameters["InstanceTypes"])
    assert len(types) >= 3  # several spot pools
    assert len({GPU_MEMORY_GB[name.split(".")[0]] for name in types}) == 1, types
    # Spot above an on-demand base, both parameters; all spot unless told otherwise.
    distribution = policy["InstancesDistribution"]
    for name in ("OnDemandBaseCapacity", "OnDemandPercentageAboveBaseCapacity"):
        assert distribution[name] == {"Ref": name}
        assert parameters[name]["Default"] == 0
    assert parameters["OnDemandPercentageAboveBaseCapacity"]["MaxValue"] == 100
    assert distribution["SpotAllocationStrategy"] in {
        "capacity-optimized",
        "price-capacity-optimized",
    }
    assert group["CapacityRebalance"] is True


def test_ecs_drains_an_instance_before_it_goes_and_runs_the_workers_on_it() -> None:
    fleet = load_template(FLEET_PATH)
    group_name, group = one(fleet, "AWS::AutoScaling::AutoScalingGroup")
    provider_name, provider = one(fleet, "AWS::ECS::CapacityProvider")
    on_group = provider["AutoScalingGroupProvider"]
    assert on_group["AutoScalingGroupArn"] == {"Ref": group_name}
    assert on_group["ManagedDraining"] == "ENABLED"
    # Managed termination protection needs the group's new instances protected from scale-in.
    assert on_group["ManagedTerminationProtection"] == "ENABLED"
    assert group["NewInstancesProtectedFromScaleIn"] is True
    _, service = one(fleet, "AWS::ECS::Service")
    strategy = service["CapacityProviderStrategy"]
    assert [s["CapacityProvider"] for s in strategy] == [{"Ref": provider_name}]


def test_the_main_stack_passes_its_instance_mix_and_spot_share_to_its_workers() -> None:
    main, fleet = load_template(), load_template(FLEET_PATH)
    passed = main["Resources"][WORKERS]["Properties"]["Parameters"]
    assert passed["InstanceTypes"] == {"Fn::Join": [",", {"Ref": "WorkerInstanceTypes"}]}
    assert instance_types(main["Parameters"]["WorkerInstanceTypes"]) == instance_types(
        fleet["Parameters"]["InstanceTypes"]
    )
    for name in ("OnDemandBaseCapacity", "OnDemandPercentageAboveBaseCapacity"):
        assert passed[name] == {"Ref": f"Worker{name}"}
        default = fleet["Parameters"][name]["Default"]
        assert main["Parameters"][f"Worker{name}"]["Default"] == default


def user_data(fleet: dict[str, Any]) -> str:
    _, template = one(fleet, "AWS::EC2::LaunchTemplate")
    script = template["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert isinstance(script, str)
    return script.replace("${WorkerCluster}", "workers")


def run_user_data(tmp_path: Path, lsblk: str) -> tuple[dict[str, str], list[str]]:
    """The launch template's user data, with its paths under tmp_path and stand-ins for lsblk
    (printing `lsblk`), mkfs.xfs and mount (logging their arguments): the ECS agent's
    settings it wrote and the commands it ran."""
    fleet = load_template(FLEET_PATH)
    (task,) = resources_of_type(fleet, "AWS::ECS::TaskDefinition").values()
    (volume,) = task["Volumes"]
    cache = volume["Host"]["SourcePath"]
    config = tmp_path / "ecs.config"
    script = user_data(fleet)
    assert cache in script and "/etc/ecs/ecs.config" in script
    script = script.replace(cache, str(tmp_path / "cache")).replace(
        "/etc/ecs/ecs.config", str(config)
    )
    bin_dir, log = tmp_path / "bin", tmp_path / "commands"
    bin_dir.mkdir()
    stubs = {
        "lsblk": f"cat <<'EOF'\n{lsblk}EOF\n",
        "mkfs.xfs": f'echo "mkfs.xfs $*" >> {log}\n',
        "mount": f'echo "mount $*" >> {log}\n',
    }
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/bash\n{body}")
        stub.chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", script], env=environment, check=True, timeout=30)
    assert (tmp_path / "cache").is_dir()
    settings = dict(line.split("=", 1) for line in config.read_text().splitlines())
    commands = log.read_text().splitlines() if log.exists() else []
    return settings, [c.replace(str(tmp_path), "") for c in commands]


def test_the_image_is_pulled_once_per_instance_and_a_spot_notice_drains_it(
    tmp_path: Path,
) -> None:
    settings, _ = run_user_data(tmp_path, "")
    assert settings == {
        "ECS_CLUSTER": "workers",
        "ECS_ENABLE_GPU_SUPPORT": "true",
        "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING": "true",
    }


def test_the_weights_are_cached_on_the_instance_store_when_there_is_one(tmp_path: Path) -> None:
    with_store = tmp_path / "store"
    with_store.mkdir()
    lsblk = (
        "/dev/nvme0n1 Amazon Elastic Block Store\n/dev/nvme1n1 Amazon EC2 NVMe Instance Storage\n"
    )
    _, commands = run_user_data(with_store, lsblk)
    assert commands == ["mkfs.xfs -f /dev/nvme1n1", "mount -o noatime /dev/nvme1n1 /cache"]
    # Without one (EBS only): the cache stays on the root volume, nothing formatted.
    without = tmp_path / "ebs"
    without.mkdir()
    _, commands = run_user_data(without, "/dev/nvme0n1 Amazon Elastic Block Store\n")
    assert commands == []
