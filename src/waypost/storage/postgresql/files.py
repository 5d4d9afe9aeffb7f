"""Account File Storage of the PostgreSQL store (web.md §6.1): every node
sees the same files.

SQLite's store keeps plain files under ``DATA/webfiles/<key>/``
(``storage/sqlite/files.py``); here a file or folder is a ``file_nodes``
row of its account (so renaming an account or its domain moves nothing,
and deleting it deletes them by cascade) and a file's bytes are a
``file_contents`` row with CHUNK-sized ``file_chunks`` rows. The path rules
(``split_path``) and the quota rule (``_check_limits``) are the SQLite
module's: one place for them.

Invariants:

* there is no file system path at all, so no name can lead outside the
  account's tree; ``local_path`` of an opened file is None (no sendfile);
* a write streams its chunks into a new content (its own transaction, one
  chunk in memory at a time), then swaps it in under the account's row lock
  (``objects ... FOR UPDATE``), where the quota is checked against the
  usage summed from the rows: two writers cannot both pass a quota only one
  fits in, on any node; a reader sees the old file or the new one;
* a content no node names any more is ``released`` (a trigger stamps the
  time) and deleted by :meth:`FileStoreMixin.files_gc` once older than
  ``TMP_AGE``: a reader that opened the old bytes keeps them meanwhile,
  and the content of an upload a crash interrupted (released from its
  start) goes the same way.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from waypost.storage.interface import (
    AlreadyExists,
    FileEntry,
    FileError,
    FileLimits,
    FileUsage,
    InvalidFileName,
    NotFound,
    QuotaExceeded,
)
from waypost.storage.postgresql.blobs import CHUNK
from waypost.storage.postgresql.mail_store import account_id

# the path and quota rules of the embedded store (pure functions: one place)
from waypost.storage.sqlite.files import TMP_AGE, _check_limits, split_path

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

_NODE_COLS = "path, is_folder, size, mtime_ns"


def _entry(row: tuple[Any, ...] | Any) -> FileEntry:
    path, is_folder, size, mtime_ns = row
    return FileEntry(path, bool(is_folder), 0 if is_folder else int(size),
                     mtime_ns / 1e9, int(mtime_ns))


def _shown(parts: list[str]) -> str:
    return "/" + "/".join(parts)


class _Opened:
    """:class:`waypost.storage.interface.OpenedFile` over a content's chunks:
    each ``read`` fetches only the chunks it covers."""

    local_path: str | None = None

    def __init__(self, pool: ConnectionPool, content_id: int, entry: FileEntry) -> None:
        self._pool = pool
        self._content = content_id
        self.entry = entry
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        total = self.entry.size
        end = total if size is None or size < 0 else min(total, self._pos + size)
        if end <= self._pos:
            return b""
        first, last = self._pos // CHUNK, (end - 1) // CHUNK
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT data FROM file_chunks WHERE content_id = %s AND seq BETWEEN %s AND %s"
                " ORDER BY seq", (self._content, first, last),
            ).fetchall()
        if len(rows) != last - first + 1:
            raise NotFound(f"the bytes of /{self.entry.path} are gone")
        start = self._pos - first * CHUNK
        data = b"".join(bytes(r[0]) for r in rows)[start:start + end - self._pos]
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.entry.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def close(self) -> None:
        pass

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _node(conn: psycopg.Connection, owner: int, path: str) -> tuple[Any, ...] | None:
    row = conn.execute(
        f"SELECT {_NODE_COLS}, content_id FROM file_nodes WHERE account_id = %s AND path = %s",
        (owner, path)).fetchone()
    return None if row is None else tuple(row)


def _folder(conn: psycopg.Connection, owner: int, parts: list[str]) -> None:
    """NotFound unless ``parts`` is the root or an existing folder."""
    if not parts:
        return
    found = _node(conn, owner, "/".join(parts))
    if found is None or not found[1]:
        raise NotFound(f"no such folder: {_shown(parts)}")


def _usage(conn: psycopg.Connection, owner: int) -> FileUsage:
    row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM file_nodes"
                       " WHERE account_id = %s", (owner,)).fetchone()
    assert row is not None
    return FileUsage(int(row[0]), int(row[1]))


def _stamp(old: int | None = None) -> int:
    """A modification time that differs from ``old`` (HTTP validators)."""
    now = time.time_ns()
    return now if old is None or now > old else old + 1


class FileStoreMixin:
    """``Store.files_*`` of the PostgreSQL store (mixed into ``PostgresStore``)."""

    if TYPE_CHECKING:
        @property
        def pool(self) -> ConnectionPool: ...

        def _txn(self, *, sync: bool = True) -> AbstractContextManager[psycopg.Connection]: ...
        def _read(self) -> AbstractContextManager[psycopg.Connection]: ...

    def files_list(self, domain: str, account: str, folder: str) -> list[FileEntry]:
        parts = split_path(folder)
        with self._read() as conn:
            owner = account_id(conn, domain, account)
            _folder(conn, owner, parts)
            rows = conn.execute(
                f"SELECT {_NODE_COLS} FROM file_nodes WHERE account_id = %s AND parent = %s"
                " ORDER BY name", (owner, "/".join(parts))).fetchall()
        return [_entry(row) for row in rows]

    def files_stat(self, domain: str, account: str, path: str) -> FileEntry:
        parts = split_path(path)
        with self._read() as conn:
            owner = account_id(conn, domain, account)
            if not parts:
                return FileEntry("", True, 0, 0.0)
            found = _node(conn, owner, "/".join(parts))
        if found is None:
            raise NotFound(f"no such file: {_shown(parts)}")
        return _entry(found[:4])

    def files_open(self, domain: str, account: str, path: str) -> _Opened:
        parts = split_path(path)
        with self._read() as conn:
            owner = account_id(conn, domain, account)
            found = _node(conn, owner, "/".join(parts)) if parts else None
        if found is None:
            raise NotFound(f"no such file: {_shown(parts)}")
        if found[1]:
            raise NotFound(f"{_shown(parts)} is a folder, not a file")
        return _Opened(self.pool, int(found[4]), _entry(found[:4]))

    def files_write(self, domain: str, account: str, path: str, chunks: Iterable[bytes],
                    limits: FileLimits, *, mtime: float | None = None) -> FileEntry:
        parts = split_path(path)
        if not parts:
            raise InvalidFileName("the storage root is a folder, not a file")
        with self._read() as conn:
            account_id(conn, domain, account)  # refuse early, before the bytes
        size = 0
        with self._txn() as conn:  # the content, released until a node names it
            row = conn.execute("INSERT INTO file_contents (released) VALUES (%s) RETURNING id",
                               (time.time(),)).fetchone()
            assert row is not None
            content = int(row[0])
            buffer = bytearray()
            seq = 0
            for chunk in chunks:
                size += len(chunk)
                if limits.max_bytes is not None and size > limits.max_bytes:
                    raise QuotaExceeded(f"the file is larger than the storage limit "
                                        f"of {limits.max_bytes} bytes")
                buffer += chunk
                while len(buffer) >= CHUNK:
                    conn.execute("INSERT INTO file_chunks (content_id, seq, data)"
                                 " VALUES (%s, %s, %s)", (content, seq, bytes(buffer[:CHUNK])))
                    del buffer[:CHUNK]
                    seq += 1
            if buffer:
                conn.execute("INSERT INTO file_chunks (content_id, seq, data)"
                             " VALUES (%s, %s, %s)", (content, seq, bytes(buffer)))
            conn.execute("UPDATE file_contents SET size = %s WHERE id = %s", (size, content))
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            _folder(conn, owner, parts[:-1])
            full = "/".join(parts)
            old = _node(conn, owner, full)
            if old is not None and old[1]:
                raise FileError(f"{_shown(parts)} is a folder")
            usage = _usage(conn, owner)
            old_size = int(old[2]) if old is not None else 0
            _check_limits(limits, usage, usage.files + (0 if old else 1),
                          usage.bytes - old_size + size)
            stamp = (int(mtime * 1e9) if mtime is not None
                     else _stamp(None if old is None else int(old[3])))
            conn.execute("UPDATE file_contents SET released = NULL WHERE id = %s", (content,))
            row = conn.execute(
                "INSERT INTO file_nodes (account_id, path, parent, name, is_folder, size,"
                " mtime_ns, content_id) VALUES (%s, %s, %s, %s, FALSE, %s, %s, %s)"
                " ON CONFLICT (account_id, path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, content_id = excluded.content_id"
                f" RETURNING {_NODE_COLS}",
                (owner, full, "/".join(parts[:-1]), parts[-1], size, stamp, content),
            ).fetchone()
        return _entry(row)

    def files_mkdir(self, domain: str, account: str, path: str, limits: FileLimits
                    ) -> FileEntry:
        parts = split_path(path)
        if not parts:
            raise AlreadyExists("the storage root exists")
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            _folder(conn, owner, parts[:-1])
            if _node(conn, owner, "/".join(parts)) is not None:
                raise AlreadyExists(f"{_shown(parts)} already exists")
            usage = _usage(conn, owner)
            _check_limits(limits, usage, usage.files + 1, usage.bytes)
            row = conn.execute(
                "INSERT INTO file_nodes (account_id, path, parent, name, is_folder, size,"
                f" mtime_ns) VALUES (%s, %s, %s, %s, TRUE, 0, %s) RETURNING {_NODE_COLS}",
                (owner, "/".join(parts), "/".join(parts[:-1]), parts[-1], _stamp()),
            ).fetchone()
        return _entry(row)

    def files_rename(self, domain: str, account: str, old: str, new: str) -> FileEntry:
        src, dst = split_path(old), split_path(new)
        if not src or not dst:
            raise InvalidFileName("the storage root cannot be renamed or replaced")
        if dst[:len(src)] == src:
            raise InvalidFileName(f"{_shown(src)} cannot move into itself")
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            a, b = "/".join(src), "/".join(dst)
            if _node(conn, owner, a) is None:
                raise NotFound(f"no such file: {_shown(src)}")
            _folder(conn, owner, dst[:-1])
            if _node(conn, owner, b) is not None:
                raise AlreadyExists(f"{_shown(dst)} already exists")
            cut = len(a) + 1  # what follows "a" in the paths below it
            conn.execute(
                "UPDATE file_nodes SET path = %s || substr(path, %s::integer),"
                " parent = %s || substr(parent, %s::integer)"
                " WHERE account_id = %s AND path >= %s AND path < %s",
                (b, cut, b, cut, owner, a + "/", a + "0"),
            )
            row = conn.execute(
                "UPDATE file_nodes SET path = %s, parent = %s, name = %s"
                f" WHERE account_id = %s AND path = %s RETURNING {_NODE_COLS}",
                (b, "/".join(dst[:-1]), dst[-1], owner, a),
            ).fetchone()
        return _entry(row)

    def files_delete(self, domain: str, account: str, path: str, *,
                     recursive: bool = False) -> int:
        parts = split_path(path)
        if not parts:
            raise InvalidFileName("the storage root cannot be deleted")
        with self._txn() as conn:
            owner = account_id(conn, domain, account, lock=True)
            full = "/".join(parts)
            found = _node(conn, owner, full)
            if found is None:
                raise NotFound(f"no such file: {_shown(parts)}")
            inside = conn.execute(
                "SELECT COUNT(*) FROM file_nodes WHERE account_id = %s AND path >= %s"
                " AND path < %s", (owner, full + "/", full + "0")).fetchone()
            count = int(inside[0]) if inside else 0
            if count and not recursive:
                raise FileError(f"{_shown(parts)} is not empty")
            conn.execute("DELETE FROM file_nodes WHERE account_id = %s AND (path = %s"
                         " OR (path >= %s AND path < %s))", (owner, full, full + "/", full + "0"))
            return count + 1

    def files_usage(self, domain: str, account: str) -> FileUsage:
        with self._read() as conn:
            return _usage(conn, account_id(conn, domain, account))

    def files_gc(self, *, tmp_age: float = TMP_AGE) -> int:
        """Delete the contents no file has named for ``tmp_age`` seconds:
        replaced or deleted files (readers had that long), the files of
        deleted accounts, and uploads a crash interrupted."""
        with self._txn() as conn:
            return conn.execute(
                "DELETE FROM file_contents WHERE released IS NOT NULL AND released < %s",
                (time.time() - tmp_age,)).rowcount
