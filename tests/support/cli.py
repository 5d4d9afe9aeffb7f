"""The real `waypost` command, run as a subprocess the way an administrator runs it.

Each call is a fresh process with ``--data`` given explicitly: WAYPOST_DATA from
the environment is dropped so a developer's own setting never leaks in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class Waypost:
    """The `waypost` command over one data directory; ``check`` is the expected exit code
    (None: any). A wide COLUMNS keeps tables on one line per row."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def __call__(self, *args: str, input: str | None = None, check: int | None = 0
                 ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, COLUMNS="200")
        env.pop("WAYPOST_DATA", None)
        proc = subprocess.run(
            [sys.executable, "-m", "waypost", "--data", str(self.data), *args],
            capture_output=True, text=True, input=input, env=env, timeout=60,
        )
        if check is not None:
            assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc
