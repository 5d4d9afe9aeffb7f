"""Pick and open the storage backend: the only place that knows the backends.

Invariants: callers outside ``waypost.storage`` (the services container, the
CLI) learn whether a store exists and open it only here, so no caller names a
backend or its files; the errors a caller of the store catches (``StoreError``
and its ``NotFound``) are re-exported here for the same reason.

A location is a data directory (the embedded SQLite store) or a
``postgresql://`` URL (the shared PostgreSQL store, issue 15).
"""

from __future__ import annotations

from pathlib import Path

from waypost.storage.interface import NotFound, Store, StoreError
from waypost.storage.sqlite import DB_NAME, SqliteStore

__all__ = ["NotFound", "StoreError", "open_store", "store_exists"]

_PG_SCHEMES = ("postgresql", "postgres")


def _pg_url(location: Path | str) -> str | None:
    """The PostgreSQL URL ``location`` names, or None for a data directory;
    another URL scheme is refused."""
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0].lower()
        if scheme not in _PG_SCHEMES:
            raise StoreError(f"storage URL scheme {scheme!r} is not supported")
        return location
    return None


def _pg_tables(url: str) -> set[str] | None:
    """The tables of the database's public schema; None if it cannot be reached."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public'"
            ).fetchall()
    except psycopg.Error:
        return None
    return {str(name) for (name,) in rows}


def store_exists(location: Path | str) -> bool:
    """Whether ``location`` already holds a Waypost store (``init`` refuses, ``serve`` needs it)."""
    url = _pg_url(location)
    if url is not None:
        return "schema_version" in (_pg_tables(url) or set())
    return (Path(location) / DB_NAME).exists()


def open_store(data_dir: Path | str, create: bool = False) -> Store:
    """Open the store kept in ``data_dir``; with ``create``, make it if missing.

    A new data directory is created with mode 0700: it will hold password
    hashes, mail and TLS keys. A PostgreSQL database is given a schema only
    with ``create`` and only when it is empty: a database holding other
    tables is refused, never mixed with ours.
    """
    url = _pg_url(data_dir)
    if url is not None:
        return _open_postgresql(url, create)
    path = Path(data_dir)
    if not store_exists(path):
        if not create:
            raise StoreError(f"no Waypost data in {path}; run `waypost init`")
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            path.chmod(0o700)
        elif not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory")
    return SqliteStore(path)


def _open_postgresql(url: str, create: bool) -> Store:
    from waypost.storage.postgresql import PostgresStore
    from waypost.storage.postgresql.store import redacted

    tables = _pg_tables(url)
    if tables is None:
        raise StoreError(f"cannot reach the database {redacted(url)}")
    if "schema_version" not in tables:
        if not create:
            raise StoreError(f"no Waypost data in {redacted(url)}; run `waypost init`")
        if tables:
            raise StoreError(
                f"the database {redacted(url)} holds other tables"
                f" ({', '.join(sorted(tables)[:5])}); give Waypost an empty database"
            )
    return PostgresStore(url)
