"""Pick and open the storage backend: the only place that knows the backends."""

from __future__ import annotations

from pathlib import Path

from waypost.storage.interface import Store, StoreError
from waypost.storage.sqlite import DB_NAME, SqliteStore


def open_store(data_dir: Path | str, create: bool = False) -> Store:
    """Open the store kept in ``data_dir``; with ``create``, make it if missing.

    A new data directory is created with mode 0700: it will hold password
    hashes, mail and TLS keys.
    """
    if isinstance(data_dir, str) and "://" in data_dir:
        scheme = data_dir.split("://", 1)[0]
        raise StoreError(f"storage URL scheme {scheme!r} is not supported yet")
    path = Path(data_dir)
    if not (path / DB_NAME).exists():
        if not create:
            raise StoreError(f"no Waypost data in {path}; run `waypost init`")
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            path.chmod(0o700)
        elif not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory")
    return SqliteStore(path)
