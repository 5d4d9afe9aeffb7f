"""A small tmpfs a test mounts (CI runs as root), and a file that fills it.

A test that needs a full disk gets the real thing: ENOSPC from the kernel
and SQLITE_FULL from SQLite, never a patched ``os.write``. Mounting must
work: when it does not, the test fails loudly instead of being skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 64 * 1024


@contextlib.contextmanager
def mounted(where: Path, size: str = "8m") -> Iterator[Path]:
    """``where`` as a fresh tmpfs of ``size`` for the block; unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {where} (the disk-full tests need root): "
                    f"{proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def free(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def fill(where: Path, leave: int = 0) -> Path:
    """A file in ``where`` that takes every free block but about ``leave``
    octets (whole blocks); remove it to give the space back."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (CHUNK, 4096):  # big pieces, then the last small blocks
            for _ in range(1 << 20):  # bounded: far more than any test's tmpfs holds
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler
