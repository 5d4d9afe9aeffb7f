"""Embedded storage backend: SQLite (WAL) plus files in one data directory."""

from waypost.storage.sqlite.store import DB_NAME, SqliteStore

__all__ = ["DB_NAME", "SqliteStore"]
