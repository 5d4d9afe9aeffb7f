"""The embedded store: one SQLite database (WAL) in the data directory.

One connection per :class:`SqliteStore`, shared by threads under a lock: the
server calls the store from worker threads, and SQLite serialises writers
anyway. Every mutating method runs in one ``BEGIN IMMEDIATE`` transaction,
made durable by a group commit (one WAL flush for concurrent commits, see
``_make_durable``); a read that would wait behind another thread's change
uses a reader connection of its own thread instead (``_read``).
Directory, settings and Router changes also bump the change counter read by
:meth:`SqliteStore.version`, so other processes (the CLI beside a running
server) see the change too; queue and mailstore changes do not (they are not
configuration, and would make every service rebuild its snapshot per message).

Message bodies are files beside the database (``blobs.py``); the queue,
mailstore and SIP registration tables live in ``queue_store.py``,
``mail_store.py`` and ``sip_store.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import waypost.storage.sqlite.mail_store as mail_store
import waypost.storage.sqlite.queue_store as queue_store
from waypost.storage.durable import free_space, fsync_dir, is_full
from waypost.storage.interface import (
    INBOX,
    AlreadyExists,
    DomainRecord,
    NewQueueMessage,
    NotFound,
    ObjectRecord,
    QueuedMessage,
    RecipientUpdate,
    StorageFull,
    StoreError,
)
from waypost.storage.sqlite.blobs import BlobFiles
from waypost.storage.sqlite.files import FileStoreMixin, FileTrees
from waypost.storage.sqlite.mail_store import MailStoreMixin
from waypost.storage.sqlite.migrations import migrate
from waypost.storage.sqlite.sip_store import SipStoreMixin

DB_NAME = "waypost.db"
BUSY_TIMEOUT_MS = 5000
# Changes made by other processes (the CLI) are seen within this many
# seconds; changes made through this store object at once.
VERSION_TTL = 0.02


class SqliteStore(MailStoreMixin, FileStoreMixin, SipStoreMixin):
    """:class:`waypost.storage.interface.Store` over ``DATA/waypost.db``."""

    def __init__(self, data_dir: Path, db_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock  # ages the cached version; tests inject their own
        self.db_path = db_path or self.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._version_lock = threading.Lock()
        self._outer = False  # a transaction() is open (only read under _lock)
        self._version_conn: sqlite3.Connection | None = None
        self._version_seen: tuple[int, float] = (-1, -VERSION_TTL)
        self._readers = threading.local()  # see _read(); .changing: in _change()
        # (thread, its reader connection), under _version_lock
        self._reader_conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._durable = threading.Condition()  # the group commit (see _make_durable)
        self._commits = 0  # commits that must be durable, and of those
        self._synced = 0  # how many are known to be on disk
        self._syncing = False
        self._wal_fd: int | None = None
        self.blobs = BlobFiles(self.data_dir)
        self.files = FileTrees(self.data_dir)
        self._files_dirty = False
        self._queue_commits = 0
        try:
            conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch {self.db_path} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")  # flushed by _make_durable
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc) from exc
        except BaseException:
            conn.close()
            raise

    # -- plumbing ---------------------------------------------------------

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        """SQLite says "disk I/O error" when it cannot create its ``-shm`` or
        ``-wal`` file on a full disk: say what the operator must fix."""
        with contextlib.suppress(OSError):
            if is_full(exc) or free_space(self.data_dir) == 0:
                return StorageFull(f"cannot open {self.db_path}: {exc} "
                                   "(the file system of the data directory is full)")
        return StoreError(f"cannot open {self.db_path}: {exc}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._version_lock:
            if self._version_conn is not None:
                self._version_conn.close()
                self._version_conn = None
            for _thread, conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        with self._durable:
            if self._wal_fd is not None and not self._syncing:
                os.close(self._wal_fd)
                self._wal_fd = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    @contextmanager
    def _change(self, *, counted: bool, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """The one way a change is made: BEGIN IMMEDIATE, COMMIT, or ROLLBACK
        on any error. Inside an open :meth:`transaction` it joins that one.

        ``counted`` changes bump the counter :meth:`version` reports (the
        Directory, settings, the Router table), so snapshots are rebuilt.
        ``sync=False`` commits without waiting for the disk (see the group
        commit below): only for changes that are redone when lost, because a
        crash loses the latest such transactions whole, never half of one and
        never one that a later synced commit made durable.
        """
        ticket = 0
        with self._lock:
            conn = self.conn
            if self._outer:
                try:
                    yield conn
                except sqlite3.Error as exc:
                    raise db_error(exc) from exc
                return
            self._readers.changing = True
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                if counted:
                    conn.execute("UPDATE meta SET change_counter = change_counter + 1")
                conn.execute("COMMIT")
                if sync:
                    ticket = self._note_commit()
                if counted:
                    self._version_seen = (-1, -VERSION_TTL)  # our own change shows at once
            except BaseException as exc:
                if conn.in_transaction:
                    # SQLITE_FULL may have rolled it back already (then this fails harmlessly)
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise db_error(exc) from exc
                raise
            finally:
                self._readers.changing = False
        if ticket:
            self._make_durable(ticket)

    # -- group commit ---------------------------------------------------------
    #
    # The main connection commits with synchronous=NORMAL (no flush) under the
    # lock; a change that must be durable then waits, outside the lock, until
    # the WAL has been flushed after its COMMIT. One fdatasync of the WAL
    # covers every commit before it, so concurrent changes (ten IMAP sessions
    # storing flags) share one instead of queueing one each behind the lock:
    # the durability of synchronous=FULL (which flushes the WAL at each
    # commit), at the cost of one flush per burst. Reads wait for the flush
    # too (see _read), so no reader sees a change a crash could still undo.

    def _note_commit(self) -> int:
        """Count a COMMIT that must become durable; its ticket."""
        with self._durable:
            self._commits += 1
            return self._commits

    def _make_durable(self, ticket: int) -> None:
        """Return once the commit ``ticket`` (and every one before) is on disk:
        flush the WAL unless another thread's flush started after it."""
        with self._durable:
            while self._synced < ticket:
                if self._syncing:
                    self._durable.wait()
                    continue
                self._syncing = True
                target, flushed = self._commits, False
                self._durable.release()
                try:
                    self._flush_wal()
                    flushed = True
                finally:
                    self._durable.acquire()
                    self._syncing = False
                    if flushed:
                        self._synced = max(self._synced, target)
                    self._durable.notify_all()

    def _wait_durable(self) -> None:
        """Before a read: every change committed so far is on disk."""
        if getattr(self._readers, "changing", False):
            return  # inside this thread's own change
        with self._durable:
            pending = self._commits if self._synced < self._commits else 0
        if pending:
            self._make_durable(pending)

    def _flush_wal(self) -> None:
        """fdatasync the WAL file (only one thread at a time gets here)."""
        wal = f"{self.db_path}-wal"
        try:
            inode = os.stat(wal).st_ino
        except FileNotFoundError:
            return  # nothing written since the last connection closed it
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != inode:
            os.close(self._wal_fd)
            self._wal_fd = None
        try:
            if self._wal_fd is None:
                self._wal_fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
                fsync_dir(self.db_path.parent)  # a new WAL's name is durable too
            os.fdatasync(self._wal_fd)
        except OSError as exc:  # not durable: the caller must not acknowledge it
            kind = StorageFull if is_full(exc) else StoreError
            raise kind(f"cannot flush the database log: {exc.strerror}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several store calls as one change (a Directory operation that
        touches several objects): the calls inside join it; it commits at
        the end or rolls back whole on an error."""
        with self._change(counted=True):
            if self._outer:  # nested: already part of the outer one
                yield
                return
            self._outer = True
            try:
                yield
            finally:
                self._outer = False
        self._sweep_files()  # committed: what deleted accounts left may go now

    def _sweep_files(self) -> None:
        """Remove the File Storage of deleted accounts once their deletion is
        committed (never inside a transaction that could still roll back)."""
        if self._files_dirty and not self._outer:
            self._files_dirty = False
            self.files_gc()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of several statements.

        On the main connection when it is free or this thread holds it (a read
        inside its own transaction sees that transaction's changes). When
        another thread holds it (a change in progress), the read runs on this
        thread's reader connection instead: WAL readers do not wait for the
        writer, and they see every committed change, so the read is as if it
        came just before that other transaction. Under ten busy IMAP
        sessions, reads queued behind commits were most of a FETCH's time.
        Either way it first waits until every committed change is flushed
        (see the group commit below), so it never shows one a crash could undo.
        """
        self._wait_durable()
        if not self._lock.acquire(blocking=False):
            with self._reader() as conn:
                yield conn
            return
        try:
            with self._main_read() as conn:
                yield conn
        finally:
            self._lock.release()

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, in a read transaction."""
        if self._conn is None:
            raise StoreError("the store is closed")
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = self._open_reader()
            conn.execute("PRAGMA query_only = ON")
            with self._version_lock:  # and close those of threads that ended
                for thread, old in self._reader_conns:
                    if not thread.is_alive():
                        old.close()
                self._reader_conns = [
                    (thread, old) for thread, old in self._reader_conns if thread.is_alive()
                ]
                self._reader_conns.append((threading.current_thread(), conn))
        with _read_on(conn) as conn:
            yield conn

    def _open_reader(self) -> sqlite3.Connection:
        """Another connection to the database, for reads beside the main one."""
        try:
            return sqlite3.connect(
                self.db_path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc

    @contextmanager
    def _main_read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _read_on(self.conn, joined=self._outer) as conn:
            yield conn

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """One committed change of the Directory, settings or Router table."""
        return self._change(counted=True)

    def _txn(self, *, sync: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """One committed change of mail data (queue, mailboxes): not counted
        by :meth:`version`."""
        return self._change(counted=False, sync=sync)

    def version(self) -> int:
        """Asked before nearly every routing decision: it has its own reader
        connection, so it never waits behind a commit on the main one (WAL
        readers do not block on the writer)."""
        with self._version_lock:
            cached, at = self._version_seen
            if self.clock() - at < VERSION_TTL:
                return cached
            if self._version_conn is None:
                if self._conn is None:
                    raise StoreError("the store is closed")
                self._version_conn = self._open_reader()
            try:
                row = self._version_conn.execute("SELECT change_counter FROM meta").fetchone()
            except sqlite3.Error as exc:
                raise db_error(exc) from exc
            self._version_seen = (int(row[0]), self.clock())
            return int(row[0])

    # -- server settings and Router table ---------------------------------

    def get_settings(self) -> dict[str, str]:
        with self._read() as conn:
            return dict(conn.execute("SELECT key, value FROM settings ORDER BY key"))

    def set_setting(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    def get_router_table(self) -> str:
        with self._read() as conn:
            return str(conn.execute("SELECT text FROM router_table").fetchone()[0])

    def set_router_table(self, text: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE router_table SET text = ?", (text,))

    # -- domains ----------------------------------------------------------

    def list_domains(self) -> list[DomainRecord]:
        with self._read() as conn:
            aliases: dict[int, list[str]] = {}
            for domain_id, alias in conn.execute(
                "SELECT domain_id, alias FROM domain_aliases ORDER BY alias_lower"
            ):
                aliases.setdefault(domain_id, []).append(alias)
            rows = conn.execute(f"SELECT {_DOMAIN_COLS} FROM domains ORDER BY name_lower")
            return [_domain(row, aliases.get(row[0], [])) for row in rows]

    def get_domain(self, name: str) -> DomainRecord:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_DOMAIN_COLS} FROM domains WHERE name_lower = ?", (name.lower(),)
            ).fetchone()
            if row is None:
                raise NotFound(f"domain {name!r} does not exist")
            aliases = [a for (a,) in conn.execute(
                "SELECT alias FROM domain_aliases WHERE domain_id = ? ORDER BY alias_lower",
                (row[0],),
            )]
            return _domain(row, aliases)

    def create_domain(self, name: str, *, is_main: bool = False) -> DomainRecord:
        with self._write() as conn:
            _check_domain_name_free(conn, name)
            if is_main:
                main = conn.execute("SELECT name FROM domains WHERE is_main = 1").fetchone()
                if main is not None:
                    raise AlreadyExists(f"the Main Domain already exists: {main[0]}")
            conn.execute(
                "INSERT INTO domains (name, name_lower, is_main) VALUES (?, ?, ?)",
                (name, name.lower(), int(is_main)),
            )
        return DomainRecord(name=name, is_main=is_main)

    def delete_domain(self, name: str) -> None:
        with self._write() as conn:
            domain_id, real, is_main = _domain_row(conn, name)
            if is_main:
                raise StoreError(f"the Main Domain {real} cannot be deleted")
            conn.execute("DELETE FROM domains WHERE id = ?", (domain_id,))
        self._files_dirty = True  # the File Storage of its accounts goes with them
        self._sweep_files()

    def rename_domain(self, old: str, new: str) -> None:
        with self._write() as conn:
            domain_id, _, _ = _domain_row(conn, old)
            _check_domain_name_free(conn, new, same_id=domain_id)
            conn.execute(
                "UPDATE domains SET name = ?, name_lower = ? WHERE id = ?",
                (new, new.lower(), domain_id),
            )

    def update_domain(
        self,
        name: str,
        *,
        settings: dict[str, Any] | None = None,
        account_defaults: dict[str, Any] | None = None,
        template: dict[str, Any] | None = None,
    ) -> None:
        """Replace (not merge) each dictionary given; the Directory merges."""
        with self._write() as conn:
            domain_id, _, _ = _domain_row(conn, name)
            for column, value in (
                ("settings", settings),
                ("account_defaults", account_defaults),
                ("template", template),
            ):
                if value is not None:
                    conn.execute(
                        f"UPDATE domains SET {column} = ? WHERE id = ?", (_dump(value), domain_id)
                    )

    def add_domain_alias(self, name: str, alias: str) -> None:
        with self._write() as conn:
            domain_id, _, _ = _domain_row(conn, name)
            _check_domain_name_free(conn, alias)
            conn.execute(
                "INSERT INTO domain_aliases (alias_lower, alias, domain_id) VALUES (?, ?, ?)",
                (alias.lower(), alias, domain_id),
            )

    def remove_domain_alias(self, name: str, alias: str) -> None:
        with self._write() as conn:
            domain_id, real, _ = _domain_row(conn, name)
            cursor = conn.execute(
                "DELETE FROM domain_aliases WHERE alias_lower = ? AND domain_id = ?",
                (alias.lower(), domain_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"{alias!r} is not an alias of domain {real}")

    # -- domain objects ---------------------------------------------------

    def list_objects(self, domain: str, kind: str | None = None) -> list[ObjectRecord]:
        with self._read() as conn:
            domain_id, real, _ = _domain_row(conn, domain)
            sql = f"SELECT {_OBJECT_COLS} FROM objects o WHERE o.domain_id = ?"
            args: list[Any] = [domain_id]
            if kind is not None:
                sql += " AND o.kind = ?"
                args.append(kind)
            rows = conn.execute(sql + " ORDER BY o.name_lower", args)
            return [_object(real, row) for row in rows]

    def all_objects(self) -> list[ObjectRecord]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT d.name, {_OBJECT_COLS} FROM objects o JOIN domains d ON d.id = o.domain_id"
                " ORDER BY d.name_lower, o.name_lower"
            )
            return [_object(row[0], row[1:]) for row in rows]

    def get_object(self, domain: str, name: str) -> ObjectRecord:
        with self._read() as conn:
            domain_id, real, _ = _domain_row(conn, domain)
            row = conn.execute(
                f"SELECT {_OBJECT_COLS} FROM objects o WHERE o.domain_id = ? AND o.name_lower = ?",
                (domain_id, name.lower()),
            ).fetchone()
            if row is None:
                raise NotFound(f"{name!r} does not exist in {real}")
            return _object(real, row)

    def create_object(self, record: ObjectRecord) -> None:
        if not record.kind:
            raise StoreError("an object needs a kind")
        with self._write() as conn:
            domain_id, real, _ = _domain_row(conn, record.domain)
            _check_object_name_free(conn, domain_id, real, record.name)
            cursor = conn.execute(
                "INSERT INTO objects (domain_id, name, name_lower, kind, data, secret)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (domain_id, record.name, record.name.lower(), record.kind,
                 _dump(record.data), record.secret),
            )
            if record.kind == "account":  # every account has an INBOX
                mail_store.create_mailbox(conn, int(cursor.lastrowid or 0), INBOX)

    def update_object(
        self, domain: str, name: str, *, data: dict[str, Any] | None = None,
        secret: str | None = None,
    ) -> None:
        """Replace ``data`` and/or ``secret`` when given (None leaves it as is)."""
        with self._write() as conn:
            object_id = _object_id(conn, domain, name)
            if data is not None:
                conn.execute("UPDATE objects SET data = ? WHERE id = ?", (_dump(data), object_id))
            if secret is not None:
                conn.execute("UPDATE objects SET secret = ? WHERE id = ?", (secret, object_id))

    def rename_object(self, domain: str, old: str, new: str) -> None:
        with self._write() as conn:
            object_id = _object_id(conn, domain, old)
            domain_id, real, _ = _domain_row(conn, domain)
            _check_object_name_free(conn, domain_id, real, new, same_id=object_id)
            conn.execute(
                "UPDATE objects SET name = ?, name_lower = ? WHERE id = ?",
                (new, new.lower(), object_id),
            )

    def delete_object(self, domain: str, name: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM objects WHERE id = ?", (_object_id(conn, domain, name),))
        self._files_dirty = True  # an account's File Storage goes with it
        self._sweep_files()

    # -- message bodies ---------------------------------------------------

    def blob_put(self, data: bytes, *, sync_dir: bool = True) -> str:
        return self.blobs.put(data, sync_dir=sync_dir)

    def free_space(self) -> int:
        return free_space(self.data_dir)

    def blob_sync(self) -> None:
        self.blobs.sync()

    def blob_get(self, key: str) -> bytes:
        return self.blobs.get(key)

    def blob_read(self, key: str, offset: int, size: int) -> bytes:
        return self.blobs.read(key, offset, size)

    def blob_gc(self, grace: float, *, full: bool = False) -> int:
        """Delete unreferenced blobs untouched for ``grace`` seconds.

        Normally only the candidates recorded when a row naming a blob was
        deleted are checked; ``full`` walks every file too, which also finds
        bodies written by a submission that never committed (a crash).
        """
        with self._read() as conn:
            candidates = [key for (key,) in conn.execute("SELECT hash FROM blob_candidates")]
        keys = dict.fromkeys(candidates)
        if full:
            keys.update(dict.fromkeys(self.blobs.keys()))
        removed, settled = 0, []
        for key in keys:
            status = self.blobs.remove_if_stale(key, grace, self._blob_referenced)
            removed += status == "removed"
            if status != "young":
                settled.append(key)
        if candidates:
            known = set(candidates)
            done = [key for key in settled if key in known]
            with self._txn() as conn:
                conn.executemany("DELETE FROM blob_candidates WHERE hash = ?",
                                 [(key,) for key in done])
        return removed

    def _blob_referenced(self, key: str) -> bool:
        with self._read() as conn:
            return queue_store.blob_referenced(conn, key)

    # -- queue --------------------------------------------------------------

    def queue_commit(
        self, add: Sequence[NewQueueMessage] = (), settle: Sequence[RecipientUpdate] = (),
    ) -> None:
        if not add and not settle:
            return
        with self._txn() as conn:
            queue_store.insert_messages(conn, add)
            queue_store.settle(conn, settle)
        with self._lock:
            self._queue_commits += 1

    def queue_commits(self) -> int:
        return self._queue_commits

    def queue_due(
        self, now: float, limit: int, skip: Sequence[tuple[str, str]] = (),
    ) -> list[QueuedMessage]:
        with self._read() as conn:
            return queue_store.due(conn, now, limit, skip)

    # Claims are not synced: one lost in a crash is simply unclaimed again.
    def queue_claim(
        self, owner: str, now: float, lease: float, limit: int,
        skip: Sequence[tuple[str, str]] = (),
    ) -> list[QueuedMessage]:
        with self._txn(sync=False) as conn:
            return queue_store.claim(conn, owner, now, lease, limit, skip)

    def queue_renew(self, owner: str, keys: Sequence[int], until: float) -> set[int]:
        with self._txn(sync=False) as conn:
            return queue_store.renew(conn, owner, keys, until)

    def queue_release(self, owner: str) -> int:
        with self._txn(sync=False) as conn:
            return queue_store.release(conn, owner)

    def queue_list(self) -> list[QueuedMessage]:
        with self._read() as conn:
            return queue_store.pending(conn)

    def queue_get(self, message_id: str) -> QueuedMessage:
        with self._read() as conn:
            return queue_store.one(conn, message_id)

    def queue_delete(self, message_id: str) -> None:
        with self._txn() as conn:
            queue_store.delete(conn, message_id)

    def queue_schedule(
        self, now: float, *, module: str | None = None, queue: str | None = None,
        release: bool = False,
    ) -> int:
        with self._txn() as conn:
            return queue_store.schedule(conn, now, module, queue, release)


@contextmanager
def _read_on(conn: sqlite3.Connection, *, joined: bool = False) -> Iterator[sqlite3.Connection]:
    """A read transaction on ``conn`` (``joined``: inside one already open)."""
    try:
        if joined:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise db_error(exc) from exc


def db_error(exc: sqlite3.Error) -> StoreError:
    """The store's error for a failed SQLite call: :class:`StorageFull` for
    ``SQLITE_FULL`` (a full disk; the transaction is rolled back whole)."""
    if is_full(exc):
        return StorageFull(f"database error: {exc}")
    return StoreError(f"database error: {exc}")


# -- helpers (called with the lock held) ----------------------------------


_DOMAIN_COLS = "id, name, is_main, settings, account_defaults, template"
_OBJECT_COLS = "o.name, o.kind, o.data, o.secret"


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _domain(row: tuple[Any, ...], aliases: list[str]) -> DomainRecord:
    _, name, is_main, settings, defaults, template = row
    return DomainRecord(
        name=name, is_main=bool(is_main), settings=json.loads(settings),
        aliases=tuple(aliases), account_defaults=json.loads(defaults),
        template=json.loads(template),
    )


def _object(domain: str, row: tuple[Any, ...]) -> ObjectRecord:
    name, kind, data, secret = row
    return ObjectRecord(domain=domain, name=name, kind=kind, data=json.loads(data), secret=secret)


def _domain_row(conn: sqlite3.Connection, name: str) -> tuple[int, str, bool]:
    row = conn.execute(
        "SELECT id, name, is_main FROM domains WHERE name_lower = ?", (name.lower(),)
    ).fetchone()
    if row is None:
        raise NotFound(f"domain {name!r} does not exist")
    return int(row[0]), str(row[1]), bool(row[2])


def _object_id(conn: sqlite3.Connection, domain: str, name: str) -> int:
    domain_id, real, _ = _domain_row(conn, domain)
    row = conn.execute(
        "SELECT id FROM objects WHERE domain_id = ? AND name_lower = ?", (domain_id, name.lower())
    ).fetchone()
    if row is None:
        raise NotFound(f"{name!r} does not exist in {real}")
    return int(row[0])


def _check_domain_name_free(
    conn: sqlite3.Connection, name: str, same_id: int | None = None
) -> None:
    """Domain names and domain alias names share one name space."""
    lower = name.lower()
    row = conn.execute("SELECT id, name FROM domains WHERE name_lower = ?", (lower,)).fetchone()
    if row is not None and row[0] != same_id:
        raise AlreadyExists(f"domain {row[1]} already exists")
    row = conn.execute(
        "SELECT a.alias, d.name FROM domain_aliases a JOIN domains d ON d.id = a.domain_id"
        " WHERE a.alias_lower = ?", (lower,),
    ).fetchone()
    if row is not None:
        raise AlreadyExists(f"{row[0]} is already an alias of domain {row[1]}")


def _check_object_name_free(
    conn: sqlite3.Connection, domain_id: int, domain: str, name: str,
    same_id: int | None = None,
) -> None:
    row = conn.execute(
        "SELECT id, name, kind FROM objects WHERE domain_id = ? AND name_lower = ?",
        (domain_id, name.lower()),
    ).fetchone()
    if row is not None and row[0] != same_id:
        raise AlreadyExists(f"{row[1]!r} already exists in {domain} ({row[2]})")
