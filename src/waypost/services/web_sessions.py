"""WebUser sessions (web.md §2): in the store, idle timeout, bound to a cookie.

Used by the web interface (``protocols/http/sessions.py`` re-exports it).

Invariants:

* a session id is made here at login (``secrets.token_urlsafe``), never taken
  from a client, so a session cannot be fixed in advance; every login makes a
  new one;
* besides its id (which is in every session URL, so it may leak through
  logs or a copied link) a session needs its cookie: a secret that only the
  browser that logged in holds (HttpOnly, SameSite=Strict, Secure on HTTPS),
  compared in constant time; with ``WebUserBindIP`` also the client address
  [waypost, web.md §2];
* an unknown id, an expired session, a wrong cookie and a wrong address look
  the same to the client (:meth:`SessionStore.check` returns None);
* a session idle longer than the timeout is gone, also for the next lookup;
  the store is bounded (``MAX_SESSIONS``; the least recently used go first).

Several processes (issue 15 point 3): sessions are rows of the store
(``Store.web_session_*``), so a login made through one ``waypost serve``
process is valid in every other of the store (same cookie, same CSRF token,
same idle timeout), and a logout or an expiry takes effect in all of them at
once: every request reads its session row (one indexed read; nothing about a
session's validity is cached in a process). The row holds keyed hashes
(HMAC-SHA-256 under a secret kept in the store) of the session id and of its
cookie, never the secrets themselves, so a copy of the database does not
let anyone in; the CSRF token is derived from the cookie the same way, so
it needs no row. The time a session was last seen is written back only when
it is older than ``TOUCH_EVERY`` (or a tenth of the timeout), not at every
request: the idle timeout is honoured within that margin. Sessions now
survive a restart of the server [waypost].

Without a store (unit tests) the rows are kept in this process's memory.
Every method blocks on the store: call them from a worker thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from waypost.storage.interface import WebSessionRecord

MAX_SESSIONS = 100_000
TOUCH_EVERY = 60.0
"""Seconds at most between two writes of a session's last use."""


class SessionRows(Protocol):
    """The part of :class:`waypost.storage.interface.Store` sessions use."""

    def web_session_put(self, record: WebSessionRecord, *, max_sessions: int) -> None: ...
    def web_session_get(self, key: str) -> WebSessionRecord | None: ...
    def web_session_touch(self, key: str, last_seen: float) -> None: ...
    def web_session_drop(self, key: str) -> bool: ...
    def web_sessions_expire(self, before: float) -> int: ...


@dataclass(slots=True)
class WebSession:
    """One logged-in browser. ``csrf`` is the token every form of the session
    carries; ``skin`` the skin its pages use."""

    id: str
    account: str
    domain: str
    skin: str
    cookie: str
    client_ip: str
    secure: bool
    csrf: str
    last_seen: float = field(default=0.0, compare=False)

    def csrf_ok(self, token: str | None) -> bool:
        """Does a form's ``csrfToken`` belong to this session? (constant time;
        every POST inside a session must pass it)."""
        return bool(token) and hmac.compare_digest(
            self.csrf.encode(), (token or "").encode("utf-8", "replace"))


class MemoryRows:
    """Session rows in this process's memory (tests, no store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, WebSessionRecord] = OrderedDict()

    def web_session_put(self, record: WebSessionRecord, *, max_sessions: int) -> None:
        with self._lock:
            self._rows[record.key] = record
            while len(self._rows) > max_sessions:
                self._rows.popitem(last=False)

    def web_session_get(self, key: str) -> WebSessionRecord | None:
        with self._lock:
            return self._rows.get(key)

    def web_session_touch(self, key: str, last_seen: float) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows[key] = replace(row, last_seen=max(row.last_seen, last_seen))
                self._rows.move_to_end(key)

    def web_session_drop(self, key: str) -> bool:
        with self._lock:
            return self._rows.pop(key, None) is not None

    def web_sessions_expire(self, before: float) -> int:
        with self._lock:
            dead = [k for k, row in self._rows.items() if row.last_seen < before]
            for key in dead:
                del self._rows[key]
        return len(dead)

    def __len__(self) -> int:
        return len(self._rows)


class SessionStore:
    """The sessions of every process of the store (see the module docstring)."""

    def __init__(self, idle_timeout: float = 1800.0, *,
                 clock: Callable[[], float] = time.time,
                 max_sessions: int = MAX_SESSIONS,
                 rows: SessionRows | None = None,
                 secret: bytes | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.max_sessions = max_sessions
        self.rows: SessionRows = rows if rows is not None else MemoryRows()
        self._secret = secret or secrets.token_bytes(32)

    def _hash(self, kind: str, value: str) -> str:
        return hmac.new(self._secret, f"{kind}:{value}".encode("utf-8", "replace"),
                        hashlib.sha256).hexdigest()

    def _session(self, session_id: str, cookie: str, row: WebSessionRecord) -> WebSession:
        return WebSession(id=session_id, account=row.account, domain=row.domain,
                          skin=row.skin, cookie=cookie, client_ip=row.client_ip,
                          secure=row.secure, csrf=self._hash("csrf", cookie)[:32],
                          last_seen=row.last_seen)

    def create(self, account: str, domain: str, *, skin: str, client_ip: str,
               secure: bool) -> WebSession:
        """A new session with a fresh id and cookie secret (issue 10 point 8)."""
        session_id, cookie = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        row = WebSessionRecord(key=self._hash("id", session_id),
                               cookie=self._hash("cookie", cookie), account=account,
                               domain=domain, skin=skin, client_ip=client_ip, secure=secure,
                               last_seen=self.clock())
        self.rows.web_session_put(row, max_sessions=self.max_sessions)
        return self._session(session_id, cookie, row)

    def check(self, session_id: str, cookie: str | None, client_ip: str, *,
              bind_ip: bool) -> WebSession | None:
        """The session for a request, refreshed, or None when the id is unknown,
        the session expired, the cookie does not match or (``bind_ip``) the
        client address changed. One indexed read; a write now and then."""
        now = self.clock()
        key = self._hash("id", session_id)
        row = self.rows.web_session_get(key)
        if row is None:
            return None
        if now - row.last_seen > self.idle_timeout:
            self.rows.web_session_drop(key)
            return None
        if not cookie or not hmac.compare_digest(row.cookie.encode(),
                                                 self._hash("cookie", cookie).encode()):
            return None
        if bind_ip and client_ip != row.client_ip:
            return None
        if now - row.last_seen > min(TOUCH_EVERY, self.idle_timeout / 10):
            self.rows.web_session_touch(key, now)
            row = replace(row, last_seen=now)
        return self._session(session_id, cookie, row)

    def end(self, session_id: str) -> bool:
        """Log out: the id is dead from now on, in every process."""
        return self.rows.web_session_drop(self._hash("id", session_id))

    def expire(self) -> int:
        """Drop every idle session (called now and then; lookups also check)."""
        return self.rows.web_sessions_expire(self.clock() - self.idle_timeout)
