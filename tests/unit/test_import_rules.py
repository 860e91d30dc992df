"""The one-way imports, read from the source: every import statement, top level or inside a
function, of every module. (ruff's banned-api, in `make test` too, holds the coarse rules;
these are the per-package ones it cannot express.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AWS_SDK = ("boto3", "botocore", "mypy_boto3_")
# Where AWS's SDK may be imported: the data layer (and its table_* files), its wiring, the
# local stack and the bench.
AWS_MODULES = {
    "functions/batch_core/repository.py",
    "functions/batch_core/storage.py",
    "functions/batch_core/messaging.py",
    "functions/batch_core/wiring.py",
}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module imported, whether at the module's top level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    # An `if TYPE_CHECKING:` block at the top level is still the top level.
    for node in tree.body:
        if isinstance(node, ast.If):
            top |= {id(child) for child in node.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks a rule, as `file: rule`."""
    broken: list[str] = []
    for path in sorted(root.glob("**/*.py")):
        relative = path.relative_to(root).as_posix()
        # ".venv" also skips .venv-tools (checkov's own environment).
        if relative.startswith((".venv", "tests/", "out/", "build/", ".aws-sam/")):
            continue
        for module, at_top in imports_of(path):
            first = module.split(".")[0]
            if relative.startswith("functions/batch_core/") and first in {
                "handlers",
                "gpu_worker",
                "batchctl",
                "bench",
            }:
                broken.append(f"{relative}: the core imports {module}")
            if relative.startswith("functions/handlers/") and first in {
                "gpu_worker",
                "batchctl",
                "bench",
            }:
                broken.append(f"{relative}: a handler imports {module}")
            if first == "vllm":
                if relative.startswith("gpu_worker/engines/"):
                    if at_top:
                        broken.append(f"{relative}: vllm imported at import time, not lazily")
                elif not relative.startswith("bench/"):
                    broken.append(f"{relative}: imports vllm")
            if module.startswith(AWS_SDK) and not (
                relative in AWS_MODULES
                or relative.startswith(("batchctl/", "bench/", "functions/batch_core/table_"))
            ):
                broken.append(f"{relative}: imports {module} above the data layer")
    return broken


def test_the_tree_keeps_the_import_rules() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "functions/batch_core/lifecycle.py",
            "from gpu_worker.worker import Worker\n",
            "the core imports gpu_worker.worker",
        ),
        (
            "functions/handlers/api.py",
            "def f():\n    from batchctl import local\n",
            "a handler imports batchctl",
        ),
        ("gpu_worker/engines/new.py", "import vllm\n", "not lazily"),
        ("gpu_worker/worker.py", "def f():\n    from vllm import LLM\n", "imports vllm"),
        (
            "functions/batch_core/service.py",
            "from botocore.exceptions import ClientError\n",
            "above the data layer",
        ),
        (
            "functions/handlers/api.py",
            "if True:\n    import boto3\n",
            "above the data layer",
        ),
    ],
)
def test_a_broken_rule_is_named(path: str, source: str, expected: str, tmp_path: Path) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(source)
    [found] = violations(tmp_path)
    assert found.startswith(path) and expected in found
