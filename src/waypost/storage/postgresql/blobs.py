"""Message bodies in the database: every node reaches every body.

SQLite's store keeps bodies as files (``storage/sqlite/blobs.py``); here a
body is one ``blobs`` row (its SHA-256, size and last use) and CHUNK-sized
``blob_chunks`` rows, so a large body is read a piece at a time
(:func:`read` selects only the chunks a range covers) and never travels
whole between the database and the server except through ``blob_get``,
whose contract returns it whole.

Invariants: a body is written once and never changed; a put of an
existing body only refreshes ``touched`` (``ON CONFLICT DO UPDATE``, which
takes the row lock), and the collector deletes a body under the same row
lock (``SELECT ... FOR UPDATE``) only when no row names it and it was not
touched within the grace period, so a body reused at the moment of
collection is never lost. Writes commit before they return: durable.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

import psycopg

from waypost.storage.interface import NotFound, StoreError

CHUNK = 256 * 1024  # octets per blob_chunks row
_KEY = re.compile(r"^[0-9a-f]{64}$")


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> None:
    if not _KEY.match(key):
        raise StoreError(f"invalid blob key {key!r}")


def put(conn: psycopg.Connection, data: bytes) -> str:
    """Store ``data`` once (inside the caller's transaction); its key."""
    key = blob_key(data)
    row = conn.execute(
        "INSERT INTO blobs (hash, size, touched) VALUES (%s, %s, %s)"
        " ON CONFLICT (hash) DO UPDATE SET touched = excluded.touched"
        " RETURNING (xmax = 0)",  # true when this statement inserted the row
        (key, len(data), time.time()),
    ).fetchone()
    if row is not None and row[0]:
        view = memoryview(data)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO blob_chunks (hash, seq, data) VALUES (%s, %s, %s)",
                ((key, seq, view[start:start + CHUNK])
                 for seq, start in enumerate(range(0, len(data), CHUNK))),
            )
    return key


def size(conn: psycopg.Connection, key: str) -> int:
    check_key(key)
    row = conn.execute("SELECT size FROM blobs WHERE hash = %s", (key,)).fetchone()
    if row is None:
        raise NotFound(f"message body {key} is missing")
    return int(row[0])


def read(conn: psycopg.Connection, key: str, offset: int, length: int) -> bytes:
    """``length`` octets from ``offset`` (fewer at the end), from the chunks
    that range covers only."""
    total = size(conn, key)
    if length <= 0 or offset >= total:
        return b""
    end = min(total, offset + length)
    first, last = offset // CHUNK, (end - 1) // CHUNK
    rows = conn.execute(
        "SELECT seq, data FROM blob_chunks WHERE hash = %s AND seq BETWEEN %s AND %s"
        " ORDER BY seq", (key, first, last),
    ).fetchall()
    if len(rows) != last - first + 1:
        raise StoreError(f"message body {key} is damaged (chunks missing)")
    joined = b"".join(bytes(data) for _, data in rows)
    start = offset - first * CHUNK
    return joined[start:start + (end - offset)]


def remove_if_stale(conn: psycopg.Connection, key: str, grace: float,
                    is_referenced: Callable[[psycopg.Connection, str], bool]) -> str:
    """Inside a transaction, under the row lock taken here (``FOR UPDATE``):
    ``removed``, ``referenced``, ``young`` or ``missing``."""
    row = conn.execute("SELECT touched FROM blobs WHERE hash = %s FOR UPDATE", (key,)).fetchone()
    if row is None:
        return "missing"
    if is_referenced(conn, key):
        return "referenced"
    if time.time() - float(row[0]) < grace:
        return "young"
    conn.execute("DELETE FROM blobs WHERE hash = %s", (key,))
    return "removed"
