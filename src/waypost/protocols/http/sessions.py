"""WebUser sessions (web.md §2): in memory, idle timeout, bound to a cookie.

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

State is in memory: a restart logs every user out [waypost].
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 100_000


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
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    last_seen: float = 0.0

    def csrf_ok(self, token: str | None) -> bool:
        """Does a form's ``csrfToken`` belong to this session? (constant time;
        every POST inside a session must pass it)."""
        return bool(token) and hmac.compare_digest(
            self.csrf.encode(), (token or "").encode("utf-8", "replace"))


class SessionStore:
    """The live sessions of the process."""

    def __init__(self, idle_timeout: float = 1800.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()

    def create(self, account: str, domain: str, *, skin: str, client_ip: str,
               secure: bool) -> WebSession:
        """A new session with a fresh id and cookie secret (issue 10 point 8)."""
        session = WebSession(
            id=secrets.token_urlsafe(24), account=account, domain=domain, skin=skin,
            cookie=secrets.token_urlsafe(32), client_ip=client_ip, secure=secure,
            last_seen=self.clock(),
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def check(self, session_id: str, cookie: str | None, client_ip: str, *,
              bind_ip: bool) -> WebSession | None:
        """The session for a request, refreshed, or None when the id is unknown,
        the session expired, the cookie does not match or (``bind_ip``) the
        client address changed."""
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_timeout:
                del self._sessions[session_id]
                return None
            if not cookie or not hmac.compare_digest(session.cookie.encode(),
                                                     cookie.encode("utf-8", "replace")):
                return None
            if bind_ip and client_ip != session.client_ip:
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session_id: str) -> bool:
        """Log out: the id is dead from now on."""
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def expire(self) -> int:
        """Drop every idle session (called now and then; lookups also check)."""
        now = self.clock()
        with self._lock:
            dead = [sid for sid, s in self._sessions.items()
                    if now - s.last_seen > self.idle_timeout]
            for sid in dead:
                del self._sessions[sid]
        return len(dead)

    def __len__(self) -> int:
        return len(self._sessions)
