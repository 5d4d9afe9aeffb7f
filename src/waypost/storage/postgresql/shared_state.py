"""State shared by the nodes and processes of one PostgreSQL store (issue 15
point 3): the statements of ``storage/sqlite/shared_state.py`` with the same
rows and rules (login failures, attempts in flight and lock-outs of
``services/login_guard.py``; named locks with a lease of
``services/shared_locks.py``; WebUser sessions; shared secrets).

Atomicity under concurrent writers (READ COMMITTED lets two check-then-act
transactions both pass their check, so each check-and-change says how it is
made atomic):

- ``login_reserve`` and ``login_failed`` first take a transaction-level
  advisory lock on the pair (``pg_advisory_xact_lock(_LOGIN_LOCK, crc32 of
  the pair)``; a hash collision only serialises two pairs): attempts of
  one pair are counted one at a time, so two nodes never both pass a limit
  only one fits in, and a lock-out begins once.
- ``shared_lock_take`` is one ``INSERT ... ON CONFLICT (name) DO UPDATE ...
  WHERE`` the row is ours or expired: the row lock of the conflicting row
  decides, and a row comes back only if this holder got the lock.
- ``shared_lock_renew``, ``web_session_touch`` and the deletes are single
  statements (row locks); ``shared_secret`` inserts with ``ON CONFLICT DO
  NOTHING`` and reads back whichever secret won.

Login keys are stored as UTF-8 ``bytea``: ``services/login_guard.py`` joins
their parts with NUL, which PostgreSQL ``text`` cannot hold.

Durability as in SQLite: what SQLite commits with ``sync=False`` commits
here with ``SET LOCAL synchronous_commit = off`` (visible to every node at
once; only a crash of the database server may forget the latest); a logout
and session expiry are durable before they return.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import psycopg

from waypost.storage.interface import LoginFailure, LoginState, WebSessionRecord

# first key of the two-key advisory locks on login pairs ("wlgn")
_LOGIN_LOCK = 0x776C676E

_STATE = (
    "SELECT"
    " (SELECT COUNT(*) FROM login_failures WHERE key = %(pair)s AND at >= %(since)s),"
    " (SELECT COUNT(*) FROM login_failures WHERE key = %(address)s AND at >= %(since)s),"
    " (SELECT COUNT(*) FROM login_failures WHERE key = %(account)s AND at >= %(since)s),"
    " (SELECT COUNT(*) FROM login_attempts WHERE key = %(pair)s AND expires > %(now)s),"
    " (SELECT COALESCE(MAX(until), 0) FROM login_lockouts"
    "  WHERE key = %(pair)s AND until > %(now)s)"
)
_SESSION_COLS = "key, cookie, account, domain, skin, client_ip, secure, last_seen"


def _state(conn: psycopg.Connection, pair: str, address: str, account: str,
           since: float, now: float) -> LoginState:
    row = conn.execute(_STATE, {"pair": _key(pair), "address": _key(address),
                                "account": _key(account), "since": since,
                                "now": now}).fetchone()
    assert row is not None
    p, a, n, flight, until = row
    return LoginState(pair=int(p), address=int(a), account=int(n), in_flight=int(flight),
                      locked_until=float(until))


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _lock_pair(conn: psycopg.Connection, pair: str) -> None:
    signed = zlib.crc32(_key(pair)) - (1 << 31)  # the int4 range the two-key form takes
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOGIN_LOCK, signed))


class SharedStateMixin:
    """``Store.login_*``, ``shared_lock_*``, ``web_session*`` and
    ``shared_secret`` of the PostgreSQL store (mixed into ``PostgresStore``)."""

    if TYPE_CHECKING:
        def _txn(self, *, sync: bool = True) -> AbstractContextManager[psycopg.Connection]: ...
        def _read(self) -> AbstractContextManager[psycopg.Connection]: ...

    # -- login failures --------------------------------------------------------

    def login_state(self, pair: str, address: str, account: str, *, since: float,
                    now: float) -> LoginState:
        with self._read() as conn:
            return _state(conn, pair, address, account, since, now)

    def login_reserve(self, pair: str, *, since: float, now: float, limit: int,
                      extra: int, ttl: float) -> int | None:
        with self._txn(sync=False) as conn:
            _lock_pair(conn, pair)
            conn.execute("DELETE FROM login_attempts WHERE expires <= %s", (now,))
            state = _state(conn, pair, "", "", since, now)
            if limit and (state.locked_until > now
                          or state.pair + state.in_flight + extra >= limit):
                return None
            row = conn.execute("INSERT INTO login_attempts (key, expires) VALUES (%s, %s)"
                               " RETURNING id", (_key(pair), now + ttl)).fetchone()
            assert row is not None
            return int(row[0])

    def login_failed(self, pair: str, address: str, account: str, *, now: float,
                     since: float, limit: int, lockout: float,
                     reservation: int | None) -> LoginFailure:
        with self._txn(sync=False) as conn:
            _lock_pair(conn, pair)
            if reservation is not None:
                conn.execute("DELETE FROM login_attempts WHERE id = %s", (reservation,))
            conn.execute("DELETE FROM login_failures WHERE at < %s", (since,))
            conn.execute("DELETE FROM login_lockouts WHERE until <= %s", (now,))
            conn.cursor().executemany("INSERT INTO login_failures (key, at) VALUES (%s, %s)",
                                      [(_key(pair), now), (_key(address), now),
                                       (_key(account), now)])
            state = _state(conn, pair, address, account, since, now)
            locked_now = bool(limit) and state.pair >= limit and state.locked_until <= now
            if locked_now:
                conn.execute("INSERT INTO login_lockouts (key, until) VALUES (%s, %s)"
                             " ON CONFLICT (key) DO UPDATE SET until = excluded.until",
                             (_key(pair), now + lockout))
            return LoginFailure(pair=state.pair, address=state.address, locked_now=locked_now)

    def login_succeeded(self, pair: str, *, reservation: int | None) -> None:
        with self._txn(sync=False) as conn:
            if reservation is not None:
                conn.execute("DELETE FROM login_attempts WHERE id = %s", (reservation,))
            conn.execute("DELETE FROM login_failures WHERE key = %s", (_key(pair),))
            conn.execute("DELETE FROM login_lockouts WHERE key = %s", (_key(pair),))

    # -- named locks with a lease ------------------------------------------------

    def shared_lock_take(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        with self._txn(sync=False) as conn:
            conn.execute("DELETE FROM shared_locks WHERE expires <= %s", (now,))
            row = conn.execute(
                "INSERT INTO shared_locks (name, holder, expires) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires = excluded.expires"
                " WHERE shared_locks.holder = excluded.holder OR shared_locks.expires <= %s"
                " RETURNING holder", (name, holder, now + ttl, now),
            ).fetchone()
            return row is not None

    def shared_lock_renew(self, names: Sequence[str], holder: str, *, now: float,
                          ttl: float) -> list[str]:
        lost = []
        with self._txn(sync=False) as conn:
            for name in names:
                cur = conn.execute("UPDATE shared_locks SET expires = %s WHERE name = %s"
                                   " AND holder = %s AND expires > %s",
                                   (now + ttl, name, holder, now))
                if not cur.rowcount:
                    lost.append(name)
        return lost

    def shared_lock_holder(self, name: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT holder FROM shared_locks WHERE name = %s",
                               (name,)).fetchone()
        return None if row is None else str(row[0])

    def shared_lock_drop(self, name: str, holder: str) -> None:
        with self._txn(sync=False) as conn:
            conn.execute("DELETE FROM shared_locks WHERE name = %s AND holder = %s",
                         (name, holder))

    # -- WebUser sessions ----------------------------------------------------------

    def web_session_put(self, record: WebSessionRecord, *, max_sessions: int) -> None:
        with self._txn(sync=False) as conn:
            conn.execute(
                f"INSERT INTO web_sessions ({_SESSION_COLS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (record.key, record.cookie, record.account, record.domain, record.skin,
                 record.client_ip, record.secure, record.last_seen))
            # bounded: the least recently seen go first
            conn.execute(
                "DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions"
                " ORDER BY last_seen DESC OFFSET %s)", (max_sessions,))

    def web_session_get(self, key: str) -> WebSessionRecord | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_SESSION_COLS} FROM web_sessions WHERE key = %s",
                               (key,)).fetchone()
        if row is None:
            return None
        key, cookie, account, domain, skin, client_ip, secure, last_seen = row
        return WebSessionRecord(key=key, cookie=cookie, account=account, domain=domain,
                                skin=skin, client_ip=client_ip, secure=bool(secure),
                                last_seen=last_seen)

    def web_session_touch(self, key: str, last_seen: float) -> None:
        with self._txn(sync=False) as conn:  # a lost touch only shortens a session
            conn.execute("UPDATE web_sessions SET last_seen = GREATEST(last_seen, %s)"
                         " WHERE key = %s", (last_seen, key))

    def web_session_drop(self, key: str) -> bool:
        with self._txn() as conn:
            return conn.execute("DELETE FROM web_sessions WHERE key = %s",
                                (key,)).rowcount > 0

    def web_sessions_expire(self, before: float) -> int:
        with self._txn() as conn:
            return int(conn.execute("DELETE FROM web_sessions WHERE last_seen < %s",
                                    (before,)).rowcount)

    def shared_secret(self, name: str) -> bytes:
        with self._read() as conn:
            row = conn.execute("SELECT secret FROM shared_secrets WHERE name = %s",
                               (name,)).fetchone()
        if row is not None:
            return bytes(row[0])
        with self._txn() as conn:  # the first process to ask makes it; the others read it
            conn.execute("INSERT INTO shared_secrets (name, secret) VALUES (%s, %s)"
                         " ON CONFLICT (name) DO NOTHING", (name, secrets.token_bytes(32)))
            row = conn.execute("SELECT secret FROM shared_secrets WHERE name = %s",
                               (name,)).fetchone()
        assert row is not None
        return bytes(row[0])
