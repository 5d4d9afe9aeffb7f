"""The shared store: one PostgreSQL database that every node reaches.

Invariants: the interface stays synchronous (the server calls it from
worker threads), so this uses psycopg's sync API over a connection pool;
every query is parameterised (identifiers are never built from input);
every mutating method runs in one transaction that is committed before it
returns, with ``synchronous_commit = on`` (acknowledged means durable, also
when the server's default says otherwise), except what the SQLite store
commits without a flush (``_txn(sync=False)``: queue claims, shared login and
lock state, claims of the Recent flag, mailbox copies that settle their queue
recipients), which commits with ``SET LOCAL synchronous_commit = off``: a
crash of the database server may forget it, and each of those says why
that is safe. A :meth:`transaction` pins one
pooled connection to the calling thread, and every change made by that
thread inside it joins the same database transaction (nesting joins the
outer one, as in SQLite). Directory, settings and Router changes bump
``meta.change_counter`` in the same transaction, which :meth:`version`
reports (with the same short cache as the SQLite store), so every process
on every node sees them.

Names are case-insensitive and keep their spelling exactly as in SQLite:
``name_lower`` columns carry the unique constraints, and a unique violation
raised by a concurrent writer (READ COMMITTED lets two check-then-insert
races reach the constraint) becomes :class:`AlreadyExists`.

Served so far: the Directory part of the contract (settings, Router
table, domains, domain aliases, objects, ``version``, ``transaction``), the
INBOX every new account gets, message bodies (``blobs.py``), the queue
(``queue_store.py``), the mail store (``mail_store.py``) and SIP bindings
(``sip_store.py``), File Storage (``files.py``), queue claims with a lease
and the state shared by processes (``shared_state.py``): the whole contract
(``open_store`` returns it as a ``Store``, so mypy checks that).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

import waypost.storage.postgresql.blobs as blobs
import waypost.storage.postgresql.mail_store as mail_store
import waypost.storage.postgresql.queue_store as queue_store
import waypost.storage.postgresql.sip_store as sip_store
from waypost.storage.interface import (
    INBOX,
    AlreadyExists,
    DomainRecord,
    NewQueueMessage,
    NotFound,
    ObjectRecord,
    QueuedMessage,
    RecipientUpdate,
    SipBinding,
    SipBindingChanges,
    StorageFull,
    StoreError,
)
from waypost.storage.postgresql.files import FileStoreMixin
from waypost.storage.postgresql.mail_store import MailStoreMixin
from waypost.storage.postgresql.migrations import migrate
from waypost.storage.postgresql.shared_state import SharedStateMixin

# The row -> record conversions are the SQLite store's (same columns, same
# JSON): one place for them; only the SQL differs between the backends.
from waypost.storage.sqlite.store import _domain, _dump, _object

# Changes made by other processes are seen within this many seconds; changes
# made through this store object at once (the SQLite store's figure).
VERSION_TTL = 0.02
POOL_MAX = 16  # connections per store object: one per busy worker thread
CONNECT_TIMEOUT = 10  # seconds, for a new connection and for a free pooled one
UNKNOWN_FREE_SPACE = 1 << 62  # free_space(): the database's disk is not ours to see


def _configure(conn: psycopg.Connection) -> None:
    """Every pooled connection: durable commits, whatever the server default."""
    conn.execute("SET synchronous_commit = on")
    conn.commit()


class PostgresStore(MailStoreMixin, FileStoreMixin, SharedStateMixin):
    """:class:`waypost.storage.interface.Store` over a PostgreSQL database."""

    def __init__(self, url: str, data_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 pool_max: int = POOL_MAX) -> None:
        self.url = url
        # Per-node files (TLS keys, the key of sealed secrets) still live in a
        # local data directory. Until the server passes its node's directory
        # (the `--store` option, not wired yet), a private temporary one is
        # made, and removed by close().
        self._own_dir = data_dir is None
        self.data_dir = (Path(tempfile.mkdtemp(prefix="waypost-node-"))
                         if data_dir is None else Path(data_dir))
        self.clock = clock
        self._local = threading.local()  # .conn, .depth: the open transaction()
        self._version_lock = threading.Lock()
        self._version_seen: tuple[int, float] = (-1, -VERSION_TTL)
        self._queue_commits = 0
        try:
            self._pool: ConnectionPool | None = ConnectionPool(
                url, min_size=1, max_size=pool_max, open=False, configure=_configure,
                timeout=CONNECT_TIMEOUT, kwargs={"connect_timeout": CONNECT_TIMEOUT},
            )
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot open {redacted(url)}: {exc}") from exc
        try:
            with self._pool.connection() as conn:
                migrate(conn)
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot open {redacted(url)}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError("the store is closed")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._own_dir = False

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _change(self, *, counted: bool, sync: bool = True) -> Iterator[psycopg.Connection]:
        """One committed change; joins this thread's open :meth:`transaction`.

        ``counted`` changes bump the counter :meth:`version` reports. A
        change made with ``sync=False`` on its own commits without waiting
        for the WAL flush (``SET LOCAL synchronous_commit = off``); inside a
        :meth:`transaction` it joins that one and its durable commit.
        """
        outer = getattr(self._local, "conn", None)
        if outer is not None:
            try:
                with outer.transaction():  # a savepoint: a refused call leaves the outer usable
                    yield outer
                if counted:
                    self._local.counted = True
            except psycopg.Error as exc:
                raise db_error(exc) from exc
            return
        try:
            with self.pool.connection() as conn, conn.transaction():
                if not sync:
                    conn.execute("SET LOCAL synchronous_commit = off")
                yield conn
                if counted:
                    conn.execute("UPDATE meta SET change_counter = change_counter + 1")
        except psycopg.Error as exc:
            raise db_error(exc) from exc
        except PoolTimeout as exc:
            raise StoreError(f"no database connection: {exc}") from exc
        if counted:
            self._version_seen = (-1, -VERSION_TTL)  # our own change shows at once

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        """A consistent read of several statements (REPEATABLE READ snapshot);
        inside this thread's :meth:`transaction` it sees that one's changes."""
        outer = getattr(self._local, "conn", None)
        if outer is not None:
            try:
                yield outer
            except psycopg.Error as exc:
                raise db_error(exc) from exc
            return
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield conn
        except psycopg.Error as exc:
            raise db_error(exc) from exc
        except PoolTimeout as exc:
            raise StoreError(f"no database connection: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several calls as one change: they commit together or not at all."""
        if getattr(self._local, "conn", None) is not None:
            yield  # nested: already part of the outer one
            return
        self._local.counted = False
        with self._change(counted=False) as conn:
            self._local.conn = conn
            try:
                yield
                if self._local.counted:
                    conn.execute("UPDATE meta SET change_counter = change_counter + 1")
            finally:
                self._local.conn = None
        if self._local.counted:
            self._version_seen = (-1, -VERSION_TTL)

    def _txn(self, *, sync: bool = True) -> AbstractContextManager[psycopg.Connection]:
        """One committed change of mail data, not counted by :meth:`version`.
        ``sync=False`` (what SQLite commits without a flush): a commit that
        does not wait for the WAL flush, for state a crash may forget."""
        return self._change(counted=False, sync=sync)

    def _write(self) -> AbstractContextManager[psycopg.Connection]:
        """One committed change of the Directory, settings or Router table."""
        return self._change(counted=True)

    def version(self) -> int:
        with self._version_lock:
            cached, at = self._version_seen
            if self.clock() - at < VERSION_TTL:
                return cached
        with self._read() as conn:
            row = conn.execute("SELECT change_counter FROM meta").fetchone()
        assert row is not None
        with self._version_lock:
            self._version_seen = (int(row[0]), self.clock())
        return int(row[0])

    # -- server settings and Router table ---------------------------------

    def get_settings(self) -> dict[str, str]:
        with self._read() as conn:
            return dict(conn.execute("SELECT key, value FROM settings ORDER BY key").fetchall())

    def set_setting(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = %s", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    def get_router_table(self) -> str:
        with self._read() as conn:
            row = conn.execute("SELECT text FROM router_table").fetchone()
        assert row is not None
        return str(row[0])

    def set_router_table(self, text: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE router_table SET text = %s", (text,))

    # -- domains ----------------------------------------------------------

    def list_domains(self) -> list[DomainRecord]:
        with self._read() as conn:
            aliases: dict[int, list[str]] = {}
            for domain_id, alias in conn.execute(
                "SELECT domain_id, alias FROM domain_aliases ORDER BY alias_lower"
            ).fetchall():
                aliases.setdefault(domain_id, []).append(alias)
            rows = conn.execute(
                "SELECT id, name, is_main, settings, account_defaults, template"
                " FROM domains ORDER BY name_lower"
            ).fetchall()
            return [_domain(row, aliases.get(row[0], [])) for row in rows]

    def get_domain(self, name: str) -> DomainRecord:
        with self._read() as conn:
            row = conn.execute(
                "SELECT id, name, is_main, settings, account_defaults, template"
                " FROM domains WHERE name_lower = %s", (name.lower(),),
            ).fetchone()
            if row is None:
                raise NotFound(f"domain {name!r} does not exist")
            aliases = [a for (a,) in conn.execute(
                "SELECT alias FROM domain_aliases WHERE domain_id = %s ORDER BY alias_lower",
                (row[0],),
            ).fetchall()]
            return _domain(row, aliases)

    def create_domain(self, name: str, *, is_main: bool = False) -> DomainRecord:
        with self._write() as conn:
            _check_domain_name_free(conn, name)
            if is_main:
                main = conn.execute("SELECT name FROM domains WHERE is_main = 1").fetchone()
                if main is not None:
                    raise AlreadyExists(f"the Main Domain already exists: {main[0]}")
            _unique(conn, f"domain {name} already exists",
                    "INSERT INTO domains (name, name_lower, is_main) VALUES (%s, %s, %s)",
                    (name, name.lower(), int(is_main)))
        return DomainRecord(name=name, is_main=is_main)

    def delete_domain(self, name: str) -> None:
        with self._write() as conn:
            domain_id, real, is_main = _domain_row(conn, name)
            if is_main:
                raise StoreError(f"the Main Domain {real} cannot be deleted")
            conn.execute("DELETE FROM domains WHERE id = %s", (domain_id,))

    def rename_domain(self, old: str, new: str) -> None:
        with self._write() as conn:
            domain_id, _, _ = _domain_row(conn, old)
            _check_domain_name_free(conn, new, same_id=domain_id)
            _unique(conn, f"domain {new} already exists",
                    "UPDATE domains SET name = %s, name_lower = %s WHERE id = %s",
                    (new, new.lower(), domain_id))

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
            conn.execute(
                "UPDATE domains SET settings = COALESCE(%s, settings),"
                " account_defaults = COALESCE(%s, account_defaults),"
                " template = COALESCE(%s, template) WHERE id = %s",
                (_dump_or_none(settings), _dump_or_none(account_defaults),
                 _dump_or_none(template), domain_id),
            )

    def add_domain_alias(self, name: str, alias: str) -> None:
        with self._write() as conn:
            domain_id, _, _ = _domain_row(conn, name)
            _check_domain_name_free(conn, alias)
            _unique(conn, f"{alias} is already a domain alias",
                    "INSERT INTO domain_aliases (alias_lower, alias, domain_id)"
                    " VALUES (%s, %s, %s)", (alias.lower(), alias, domain_id))

    def remove_domain_alias(self, name: str, alias: str) -> None:
        with self._write() as conn:
            domain_id, real, _ = _domain_row(conn, name)
            cursor = conn.execute(
                "DELETE FROM domain_aliases WHERE alias_lower = %s AND domain_id = %s",
                (alias.lower(), domain_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"{alias!r} is not an alias of domain {real}")

    # -- domain objects ---------------------------------------------------

    def list_objects(self, domain: str, kind: str | None = None) -> list[ObjectRecord]:
        with self._read() as conn:
            domain_id, real, _ = _domain_row(conn, domain)
            rows = conn.execute(
                "SELECT name, kind, data, secret FROM objects WHERE domain_id = %s"
                " AND (%s::text IS NULL OR kind = %s) ORDER BY name_lower",
                (domain_id, kind, kind),
            ).fetchall()
            return [_object(real, row) for row in rows]

    def all_objects(self) -> list[ObjectRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT d.name, o.name, o.kind, o.data, o.secret FROM objects o"
                " JOIN domains d ON d.id = o.domain_id ORDER BY d.name_lower, o.name_lower"
            ).fetchall()
            return [_object(row[0], row[1:]) for row in rows]

    def get_object(self, domain: str, name: str) -> ObjectRecord:
        with self._read() as conn:
            domain_id, real, _ = _domain_row(conn, domain)
            row = conn.execute(
                "SELECT name, kind, data, secret FROM objects"
                " WHERE domain_id = %s AND name_lower = %s", (domain_id, name.lower()),
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
            row = _unique(
                conn, f"{record.name!r} already exists in {real}",
                "INSERT INTO objects (domain_id, name, name_lower, kind, data, secret)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (domain_id, record.name, record.name.lower(), record.kind,
                 _dump(record.data), record.secret),
            )
            if record.kind == "account":  # every account has an INBOX
                assert row is not None
                mail_store.create_mailbox(conn, int(row[0]), INBOX)

    def update_object(
        self, domain: str, name: str, *, data: dict[str, Any] | None = None,
        secret: str | None = None,
    ) -> None:
        """Replace ``data`` and/or ``secret`` when given (None leaves it as is)."""
        with self._write() as conn:
            object_id = _object_id(conn, domain, name)
            conn.execute(
                "UPDATE objects SET data = COALESCE(%s, data), secret = COALESCE(%s, secret)"
                " WHERE id = %s", (_dump_or_none(data), secret, object_id),
            )

    def rename_object(self, domain: str, old: str, new: str) -> None:
        with self._write() as conn:
            object_id = _object_id(conn, domain, old)
            domain_id, real, _ = _domain_row(conn, domain)
            _check_object_name_free(conn, domain_id, real, new, same_id=object_id)
            _unique(conn, f"{new!r} already exists in {real}",
                    "UPDATE objects SET name = %s, name_lower = %s WHERE id = %s",
                    (new, new.lower(), object_id))

    def delete_object(self, domain: str, name: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM objects WHERE id = %s", (_object_id(conn, domain, name),))


    # -- message bodies (chunked bytea rows, blobs.py) ---------------------

    def blob_put(self, data: bytes, *, sync_dir: bool = True) -> str:
        """Durable on return whatever ``sync_dir`` says: the commit is synchronous."""
        with self._change(counted=False) as conn:
            return blobs.put(conn, data)

    def blob_sync(self) -> None:
        """Nothing to do: every put committed durably."""

    def free_space(self) -> int:
        """The database server's disk is not visible from here: a full one
        shows as :class:`StorageFull` (SQLSTATE 53100) on the write instead."""
        return UNKNOWN_FREE_SPACE

    def blob_get(self, key: str) -> bytes:
        with self._read() as conn:
            return blobs.read(conn, key, 0, blobs.size(conn, key))

    def blob_read(self, key: str, offset: int, size: int) -> bytes:
        with self._read() as conn:
            return blobs.read(conn, key, offset, size)

    def blob_gc(self, grace: float, *, full: bool = False) -> int:
        """Delete unreferenced bodies untouched for ``grace`` seconds: the
        candidates recorded when a row naming a body was deleted, and with
        ``full`` every body (which also finds those of a submission that
        never committed)."""
        with self._read() as conn:
            candidates = [k for (k,) in conn.execute(
                "SELECT hash FROM blob_candidates").fetchall()]
            keys = dict.fromkeys(candidates)
            if full:
                keys.update(dict.fromkeys(
                    k for (k,) in conn.execute("SELECT hash FROM blobs").fetchall()))
        removed = 0
        known = set(candidates)
        for key in keys:
            with self._change(counted=False) as conn:
                status = blobs.remove_if_stale(conn, key, grace, queue_store.blob_referenced)
                if status != "young" and key in known:
                    conn.execute("DELETE FROM blob_candidates WHERE hash = %s", (key,))
            removed += status == "removed"
        return removed

    # -- queue (queue_store.py) ----------------------------------------------

    def queue_commit(
        self, add: Sequence[NewQueueMessage] = (), settle: Sequence[RecipientUpdate] = (),
    ) -> None:
        if not add and not settle:
            return
        with self._change(counted=False) as conn:
            queue_store.insert_messages(conn, add)
            queue_store.settle(conn, settle)
        with self._version_lock:
            self._queue_commits += 1

    def queue_commits(self) -> int:
        return self._queue_commits

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

    def queue_due(
        self, now: float, limit: int, skip: Sequence[tuple[str, str]] = (),
    ) -> list[QueuedMessage]:
        with self._read() as conn:
            return queue_store.due(conn, now, limit, skip)

    def queue_list(self) -> list[QueuedMessage]:
        with self._read() as conn:
            return queue_store.pending(conn)

    def queue_get(self, message_id: str) -> QueuedMessage:
        with self._read() as conn:
            return queue_store.one(conn, message_id)

    def queue_delete(self, message_id: str) -> None:
        with self._change(counted=False) as conn:
            queue_store.delete(conn, message_id)

    def queue_schedule(
        self, now: float, *, module: str | None = None, queue: str | None = None,
        release: bool = False,
    ) -> int:
        with self._change(counted=False) as conn:
            return queue_store.schedule(conn, now, module, queue, release)


    # -- SIP registrations (sip_store.py) -----------------------------------

    def sip_bindings(
        self, domain: str | None = None, account: str | None = None, *, now: float,
    ) -> list[SipBinding]:
        with self._read() as conn:
            if account is not None:
                owner = sip_store.account_id(conn, domain or "", account)
                return sip_store.of_account(conn, owner, now)
            return sip_store.all_bindings(conn, domain, now)

    def sip_change_bindings(
        self, domain: str, account: str, now: float,
        decide: Callable[[list[SipBinding]], SipBindingChanges],
    ) -> list[SipBinding]:
        with self._change(counted=False) as conn:
            owner = sip_store.account_id(conn, domain, account, lock=True)
            sip_store.apply(conn, owner, now, decide(sip_store.of_account(conn, owner, now)))
            return sip_store.of_account(conn, owner, now)


def db_error(exc: psycopg.Error) -> StoreError:
    """The store's error for a failed database call: :class:`StorageFull`
    for SQLSTATE class 53 (insufficient resources: disk full, out of memory)."""
    if exc.sqlstate is not None and exc.sqlstate.startswith("53"):
        return StorageFull(f"database error: {exc}")
    return StoreError(f"database error: {exc}")


def redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


# -- helpers (inside a transaction) -----------------------------------------


def _unique(conn: psycopg.Connection, message: str, sql: Any,
            args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Run ``sql``; a unique violation (a concurrent writer won) is AlreadyExists.

    A savepoint keeps the enclosing transaction usable after the violation.
    """
    try:
        with conn.transaction():
            cursor = conn.execute(sql, args)
            return cursor.fetchone() if cursor.description else None
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(message) from exc


def _dump_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else _dump(value)


def _domain_row(conn: psycopg.Connection, name: str) -> tuple[int, str, bool]:
    row = conn.execute(
        "SELECT id, name, is_main FROM domains WHERE name_lower = %s", (name.lower(),)
    ).fetchone()
    if row is None:
        raise NotFound(f"domain {name!r} does not exist")
    return int(row[0]), str(row[1]), bool(row[2])


def _object_id(conn: psycopg.Connection, domain: str, name: str) -> int:
    domain_id, real, _ = _domain_row(conn, domain)
    row = conn.execute(
        "SELECT id FROM objects WHERE domain_id = %s AND name_lower = %s",
        (domain_id, name.lower()),
    ).fetchone()
    if row is None:
        raise NotFound(f"{name!r} does not exist in {real}")
    return int(row[0])


def _check_domain_name_free(
    conn: psycopg.Connection, name: str, same_id: int | None = None
) -> None:
    """Domain names and domain alias names share one name space."""
    lower = name.lower()
    row = conn.execute("SELECT id, name FROM domains WHERE name_lower = %s", (lower,)).fetchone()
    if row is not None and row[0] != same_id:
        raise AlreadyExists(f"domain {row[1]} already exists")
    row = conn.execute(
        "SELECT a.alias, d.name FROM domain_aliases a JOIN domains d ON d.id = a.domain_id"
        " WHERE a.alias_lower = %s", (lower,),
    ).fetchone()
    if row is not None:
        raise AlreadyExists(f"{row[0]} is already an alias of domain {row[1]}")


def _check_object_name_free(
    conn: psycopg.Connection, domain_id: int, domain: str, name: str,
    same_id: int | None = None,
) -> None:
    row = conn.execute(
        "SELECT id, name, kind FROM objects WHERE domain_id = %s AND name_lower = %s",
        (domain_id, name.lower()),
    ).fetchone()
    if row is not None and row[0] != same_id:
        raise AlreadyExists(f"{row[1]!r} already exists in {domain} ({row[2]})")
