"""What makes a file system change durable, in one place for every module
that writes files (blobs, File Storage, skins), and what tells a full disk
(``ENOSPC``, ``SQLITE_FULL``) from other write errors."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path


def fsync_dir(directory: Path | str) -> None:
    """Make the entries of ``directory`` (a new name, a rename, a removal)
    survive a crash: ``rename`` alone is atomic but not durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# errno values that mean "no room to write": the disk, or the owner's quota of it
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or SQLite's ``SQLITE_FULL``) says the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None)  # extended codes: the low byte is the primary
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def free_space(directory: Path | str) -> int:
    """Octets an unprivileged writer may still use on the file system of
    ``directory`` (``f_bavail``: root's reserve is not counted, as Postfix's
    ``queue_minfree`` check does not count it)."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
