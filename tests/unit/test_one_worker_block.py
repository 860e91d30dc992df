"""One worker block: the main stack's workers are infra/worker-fleet.yaml nested, so the two
templates share no run of lines (read as text, as the repo's duplicate finder reads code). The
copies this replaced had already drifted apart (a checkov skip in one only)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from batchctl.template import FLEET_PATH, TEMPLATE_PATH

RUN = 6
"""Lines in a row that make a copy: the duplicate finder's default."""


def significant_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line with its white space folded), blank lines and comments left out."""
    kept = []
    for number, line in enumerate(text.splitlines(), start=1):
        folded = " ".join(line.split())
        if folded and not folded.startswith("#"):
            kept.append((number, folded))
    return kept


def shared_runs(first: str, second: str, size: int = RUN) -> list[tuple[int, int]]:
    """The runs of `size` significant lines of `first` that stand in `second` too, as the
    first and last line numbers in `first`."""
    ours, theirs = significant_lines(first), significant_lines(second)
    windows = {
        tuple(line for _, line in theirs[start : start + size])
        for start in range(len(theirs) - size + 1)
    }
    return [
        (ours[start][0], ours[start + size - 1][0])
        for start in range(len(ours) - size + 1)
        if tuple(line for _, line in ours[start : start + size]) in windows
    ]


def test_the_main_template_and_the_fleet_share_no_run_of_lines() -> None:
    runs = shared_runs(TEMPLATE_PATH.read_text(), FLEET_PATH.read_text())
    assert runs == [], f"template.yaml lines also in infra/worker-fleet.yaml: {runs}"


def test_a_copied_block_is_found() -> None:
    # The check itself: a resource of the fleet pasted into the main template is a copy,
    # whatever its indentation; comments and blank lines between do not hide it.
    fleet = FLEET_PATH.read_text()
    start = fleet.index("  WorkerService:\n")
    block = fleet[start : fleet.index("\n\n", start)]
    pasted = "\n# a comment\n\n".join(("    " + line) for line in block.splitlines())
    main = TEMPLATE_PATH.read_text() + "\n" + pasted + "\n"
    assert shared_runs(main, fleet)
    assert not shared_runs("a: 1\nb: 2\n", fleet)


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="no duplicate finder on PATH")
def test_the_duplicate_finder_pairs_nothing_across_the_templates(tmp_path: Path) -> None:
    # The finder reads code, not YAML: the templates as shell files (same # comments).
    shutil.copy(TEMPLATE_PATH, tmp_path / "template.sh")
    shutil.copy(FLEET_PATH, tmp_path / "worker-fleet.sh")
    found = subprocess.run(
        ["duplicates", "--repo", str(tmp_path), "--most", "200", "--seconds", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "incomplete" not in found, found
    rows = [line for line in found.splitlines() if line.startswith("D")]
    across = [row for row in rows if "template.sh" in row and "worker-fleet.sh" in row]
    assert across == [], found
