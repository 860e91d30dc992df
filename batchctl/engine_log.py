"""The engine's output in a file, ours on the terminal.

vLLM and torch print from this process and from the processes vLLM spawns, through Python
logging, `print`, C code and tqdm. All of it reaches file descriptors 1 and 2, which the
spawned processes inherit, so those two go to the log file; this process's own `sys.stdout`
and `sys.stderr` are moved to copies of the terminal once the engine has started (vLLM's log
handlers keep the streams they were given: the log).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import IO, Any


class EngineLog:
    """Sends fds 1 and 2 to `path` from `start()` on; `keep_terminal()` after the engine
    is up. `--verbose` simply does not make one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._terminal: tuple[IO[str], IO[str]] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        self._terminal = (out, err)
        self._log = self.path.open("ab")
        os.dup2(self._log.fileno(), 1)
        os.dup2(self._log.fileno(), 2)
        # Python's warnings (torch's deprecations, say) belong to the engine's log too.
        warnings.showwarning = self._to_log

    def say(self, text: str) -> None:
        """A line of ours on the terminal, before `keep_terminal`."""
        stream = self._terminal[0] if self._terminal else sys.stdout
        print(text, file=stream, flush=True)

    def keep_terminal(self) -> None:
        """From now on this process's prints go to the terminal again."""
        if self._terminal is not None:
            sys.stdout.flush()
            sys.stdout, sys.stderr = self._terminal

    def _to_log(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if self._log is not None:
            text = warnings.formatwarning(message, category, filename, lineno, line)
            self._log.write(text.encode("utf-8", "replace"))
            self._log.flush()
