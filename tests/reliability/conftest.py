"""The reliability suite: faults, hostile input and load against the local stack.

`make test` runs its fast subset (RELIABILITY unset); `make reliability` runs it at full size
(RELIABILITY=full: 20 kill runs, 10,000 generated requests a route, 1,000,000 requests of
load). Each test records its figures, and the run ends with one table of them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

FULL = os.environ.get("RELIABILITY") == "full"


def scale(fast: int, full: int) -> int:
    """The size of a figure in this run."""
    return full if FULL else fast


@dataclass
class Figure:
    area: str
    what: str
    value: str
    ok: bool


FIGURES: list[Figure] = []


def record(area: str, what: str, value: object, ok: bool = True) -> None:
    """One row of the closing table."""
    FIGURES.append(Figure(area, what, str(value), ok))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    write = terminalreporter.write_line
    cpu = _cpu_name()
    write("")
    write(
        f"reliability ({'full' if FULL else 'fast subset'}; {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()})"
    )
    widths = [max(len(getattr(f, name)) for f in FIGURES) for name in ("area", "what", "value")]
    widths = [max(w, len(h)) for w, h in zip(widths, ("area", "figure", "value"), strict=True)]
    header = f"| {'area':<{widths[0]}} | {'figure':<{widths[1]}} | {'value':>{widths[2]}} | ok |"
    write(header)
    write("|" + "|".join("-" * (w + 2) for w in widths) + "|----|")
    for f in FIGURES:
        mark = "yes" if f.ok else "NO"
        cells = f"{f.area:<{widths[0]}} | {f.what:<{widths[1]}} | {f.value:>{widths[2]}}"
        write(f"| {cells} | {mark:<2} |")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
