"""What makes a file system change durable, in one place for every module
that writes files (blobs, File Storage, skins)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path | str) -> None:
    """Make the entries of ``directory`` (a new name, a rename, a removal)
    survive a crash: ``rename`` alone is atomic but not durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
