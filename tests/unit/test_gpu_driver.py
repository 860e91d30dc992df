"""The worker image's CUDA against the GPU instances' NVIDIA driver, through docs/deploy.md's
own tables ("GPU driver and image"): the pinned image (infra/worker.Dockerfile) must run on
the AMI the workers' template (infra/worker-fleet.yaml, which template.yaml nests) launches.
vLLM 0.32's image (CUDA 13) on the Amazon Linux 2 GPU AMI (driver 550, CUDA 12.4) does not
start."""

from __future__ import annotations

import re

from batchctl.template import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "deploy.md"
AMI_PREFIX = "/aws/service/ecs/optimized-ami/"


def table_rows(heading_cell: str) -> list[list[str]]:
    """The rows of the doc's table whose header starts with `heading_cell`."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading_cell}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def test_the_pinned_image_runs_on_the_ami_every_template_launches() -> None:
    images = {row[0]: row for row in table_rows("worker image")}
    amis = {row[0]: row for row in table_rows("ECS GPU AMI")}
    dockerfile = (PROJECT_ROOT / "infra" / "worker.Dockerfile").read_text()
    (image,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert image in images, f"{image} is not in docs/deploy.md's image table"
    cuda, driver = version(images[image][1]), version(images[image][2])[0]
    # The main stack's workers are the fleet's (nested): it names no AMI of its own.
    assert "resolve:ssm:/aws/service/ecs/" not in (PROJECT_ROOT / "template.yaml").read_text()
    for path in ("infra/worker-fleet.yaml",):
        text = (PROJECT_ROOT / path).read_text()
        (parameter,) = re.findall(r"resolve:ssm:(/aws/service/ecs/[^}]+)/image_id", text)
        ami = parameter.removeprefix(AMI_PREFIX)
        assert ami in amis, f"{path}: {ami} is not in docs/deploy.md's AMI table"
        ami_driver, ami_cuda = version(amis[ami][1])[0], version(amis[ami][2])
        assert ami_driver >= driver, f"{path}: driver {ami_driver} < {driver} for {image}"
        assert ami_cuda[0] >= cuda[0], f"{path}: CUDA {ami_cuda} < {cuda} for {image}"


def test_the_tables_say_where_their_numbers_come_from() -> None:
    for row in table_rows("worker image") + table_rows("ECS GPU AMI"):
        assert row[-1], row
