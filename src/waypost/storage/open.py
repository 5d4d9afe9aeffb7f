"""Pick and open the storage backend: the only place that knows the backends.

Invariants: callers outside ``waypost.storage`` (the services container, the
CLI) learn whether a store exists and open it only here, so no caller names a
backend or its files; the errors a caller of the store catches (``StoreError``
and its ``NotFound``) are re-exported here for the same reason.
"""

from __future__ import annotations

from pathlib import Path

from waypost.storage.interface import NotFound, Store, StoreError
from waypost.storage.sqlite import DB_NAME, SqliteStore

__all__ = ["NotFound", "StoreError", "open_store", "store_exists"]


def _local_path(location: Path | str) -> Path:
    """The data directory of ``location``; a storage URL is refused until a backend serves it."""
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0]
        raise StoreError(f"storage URL scheme {scheme!r} is not supported yet")
    return Path(location)


def store_exists(location: Path | str) -> bool:
    """Whether ``location`` already holds a Waypost store (``init`` refuses, ``serve`` needs it)."""
    return (_local_path(location) / DB_NAME).exists()


def open_store(data_dir: Path | str, create: bool = False) -> Store:
    """Open the store kept in ``data_dir``; with ``create``, make it if missing.

    A new data directory is created with mode 0700: it will hold password
    hashes, mail and TLS keys.
    """
    path = _local_path(data_dir)
    if not store_exists(path):
        if not create:
            raise StoreError(f"no Waypost data in {path}; run `waypost init`")
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            path.chmod(0o700)
        elif not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory")
    return SqliteStore(path)
