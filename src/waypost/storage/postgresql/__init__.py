"""The PostgreSQL backend: one database shared by every node (issue 15)."""

from waypost.storage.postgresql.store import PostgresStore

__all__ = ["PostgresStore"]
