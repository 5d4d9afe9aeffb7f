"""State shared by the processes of one embedded store (issue 15 point 3).

Several ``waypost serve`` processes on one data directory share what used to
live in one process: login failures and lock-outs (``services/login_guard.py``),
named locks with a lease (POP3 maildrops, ``services/shared_locks.py``) and
WebUser sessions (``protocols/http/sessions.py``). Every check-and-change
is one ``BEGIN IMMEDIATE`` transaction, so two processes never both take a
lock or both pass a limit only one of them fits in.

Durability: login failures, reservations, locks, new sessions and session
touches are committed without waiting for the disk flush (``sync=False``):
other processes see them at once (the WAL is shared through the page cache,
and a killed process loses nothing it committed); only a crash of the whole
machine may forget the latest, and then every process that held a lock died
with it, a forgotten failure is acceptable for a rate limit and a forgotten
session means logging in again. A logout is flushed before it returns, so a
crash never brings an ended session back. Every
table is bounded: failures older than the window and expired reservations,
locks and sessions are deleted by the calls that add rows.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from waypost.storage.interface import LoginFailure, LoginState, WebSessionRecord

_STATE = (
    "SELECT"
    " (SELECT COUNT(*) FROM login_failures WHERE key = ?1 AND at >= ?4),"
    " (SELECT COUNT(*) FROM login_failures WHERE key = ?2 AND at >= ?4),"
    " (SELECT COUNT(*) FROM login_failures WHERE key = ?3 AND at >= ?4),"
    " (SELECT COUNT(*) FROM login_attempts WHERE key = ?1 AND expires > ?5),"
    " (SELECT COALESCE(MAX(until), 0) FROM login_lockouts WHERE key = ?1 AND until > ?5)"
)
_SESSION_COLS = "key, cookie, account, domain, skin, client_ip, secure, last_seen"


def _state(conn: sqlite3.Connection, pair: str, address: str, account: str,
           since: float, now: float) -> LoginState:
    p, a, n, flight, until = conn.execute(_STATE, (pair, address, account, since, now)).fetchone()
    return LoginState(pair=p, address=a, account=n, in_flight=flight, locked_until=until)


class SharedStateMixin:
    """``Store.login_*``, ``shared_lock_*``, ``web_session*`` and
    ``shared_secret`` of the embedded store (mixed into ``SqliteStore``)."""

    if TYPE_CHECKING:
        def _txn(self, *, sync: bool = True) -> AbstractContextManager[sqlite3.Connection]: ...
        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    # -- login failures --------------------------------------------------------

    def login_state(self, pair: str, address: str, account: str, *, since: float,
                    now: float) -> LoginState:
        with self._read() as conn:
            return _state(conn, pair, address, account, since, now)

    def login_reserve(self, pair: str, *, since: float, now: float, limit: int,
                      extra: int, ttl: float) -> int | None:
        with self._txn(sync=False) as conn:
            conn.execute("DELETE FROM login_attempts WHERE expires <= ?", (now,))
            state = _state(conn, pair, "", "", since, now)
            if limit and (state.locked_until > now
                          or state.pair + state.in_flight + extra >= limit):
                return None
            cur = conn.execute("INSERT INTO login_attempts (key, expires) VALUES (?, ?)",
                               (pair, now + ttl))
            return int(cur.lastrowid or 0)

    def login_failed(self, pair: str, address: str, account: str, *, now: float,
                     since: float, limit: int, lockout: float,
                     reservation: int | None) -> LoginFailure:
        with self._txn(sync=False) as conn:
            if reservation is not None:
                conn.execute("DELETE FROM login_attempts WHERE id = ?", (reservation,))
            conn.execute("DELETE FROM login_failures WHERE at < ?", (since,))
            conn.execute("DELETE FROM login_lockouts WHERE until <= ?", (now,))
            conn.executemany("INSERT INTO login_failures (key, at) VALUES (?, ?)",
                             [(pair, now), (address, now), (account, now)])
            state = _state(conn, pair, address, account, since, now)
            locked_now = bool(limit) and state.pair >= limit and state.locked_until <= now
            if locked_now:
                conn.execute("INSERT OR REPLACE INTO login_lockouts (key, until) VALUES (?, ?)",
                             (pair, now + lockout))
            return LoginFailure(pair=state.pair, address=state.address, locked_now=locked_now)

    def login_succeeded(self, pair: str, *, reservation: int | None) -> None:
        with self._txn(sync=False) as conn:
            if reservation is not None:
                conn.execute("DELETE FROM login_attempts WHERE id = ?", (reservation,))
            conn.execute("DELETE FROM login_failures WHERE key = ?", (pair,))
            conn.execute("DELETE FROM login_lockouts WHERE key = ?", (pair,))

    # -- named locks with a lease ------------------------------------------------

    def shared_lock_take(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        with self._txn(sync=False) as conn:
            conn.execute("DELETE FROM shared_locks WHERE expires <= ?", (now,))
            row = conn.execute("SELECT holder FROM shared_locks WHERE name = ?",
                               (name,)).fetchone()
            if row is not None and row[0] != holder:
                return False
            conn.execute("INSERT OR REPLACE INTO shared_locks (name, holder, expires)"
                         " VALUES (?, ?, ?)", (name, holder, now + ttl))
            return True

    def shared_lock_renew(self, names: Sequence[str], holder: str, *, now: float,
                          ttl: float) -> list[str]:
        lost = []
        with self._txn(sync=False) as conn:
            for name in names:
                cur = conn.execute("UPDATE shared_locks SET expires = ? WHERE name = ?"
                                   " AND holder = ? AND expires > ?",
                                   (now + ttl, name, holder, now))
                if not cur.rowcount:
                    lost.append(name)
        return lost

    def shared_lock_holder(self, name: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT holder FROM shared_locks WHERE name = ?",
                               (name,)).fetchone()
        return None if row is None else str(row[0])

    def shared_lock_drop(self, name: str, holder: str) -> None:
        with self._txn(sync=False) as conn:
            conn.execute("DELETE FROM shared_locks WHERE name = ? AND holder = ?",
                         (name, holder))

    # -- WebUser sessions ----------------------------------------------------------

    def web_session_put(self, record: WebSessionRecord, *, max_sessions: int) -> None:
        with self._txn(sync=False) as conn:
            conn.execute(
                f"INSERT INTO web_sessions ({_SESSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.key, record.cookie, record.account, record.domain, record.skin,
                 record.client_ip, int(record.secure), record.last_seen))
            # bounded: the least recently seen go first
            conn.execute(
                "DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions"
                " ORDER BY last_seen DESC LIMIT -1 OFFSET ?)", (max_sessions,))

    def web_session_get(self, key: str) -> WebSessionRecord | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_SESSION_COLS} FROM web_sessions WHERE key = ?",
                               (key,)).fetchone()
        if row is None:
            return None
        key, cookie, account, domain, skin, client_ip, secure, last_seen = row
        return WebSessionRecord(key=key, cookie=cookie, account=account, domain=domain,
                                skin=skin, client_ip=client_ip, secure=bool(secure),
                                last_seen=last_seen)

    def web_session_touch(self, key: str, last_seen: float) -> None:
        with self._txn(sync=False) as conn:  # a lost touch only shortens a session
            conn.execute("UPDATE web_sessions SET last_seen = MAX(last_seen, ?) WHERE key = ?",
                         (last_seen, key))

    def web_session_drop(self, key: str) -> bool:
        with self._txn() as conn:
            return conn.execute("DELETE FROM web_sessions WHERE key = ?", (key,)).rowcount > 0

    def web_sessions_expire(self, before: float) -> int:
        with self._txn() as conn:
            return conn.execute("DELETE FROM web_sessions WHERE last_seen < ?",
                                (before,)).rowcount

    def shared_secret(self, name: str) -> bytes:
        with self._read() as conn:
            row = conn.execute("SELECT secret FROM shared_secrets WHERE name = ?",
                               (name,)).fetchone()
        if row is not None:
            return bytes(row[0])
        with self._txn() as conn:  # the first process to ask makes it
            conn.execute("INSERT OR IGNORE INTO shared_secrets (name, secret) VALUES (?, ?)",
                         (name, secrets.token_bytes(32)))
            row = conn.execute("SELECT secret FROM shared_secrets WHERE name = ?",
                               (name,)).fetchone()
        return bytes(row[0])
