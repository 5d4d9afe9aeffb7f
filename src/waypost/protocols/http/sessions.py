"""WebUser sessions (web.md §2): kept in the store since issue 15, so that
every server process of the store shares them; the logic and its invariants
are in :mod:`waypost.services.web_sessions` (a protocol module may not reach
the store). Its methods block on the store: call them in a worker thread."""

from __future__ import annotations

from waypost.services.web_sessions import MAX_SESSIONS, SessionStore, WebSession

__all__ = ["MAX_SESSIONS", "SessionStore", "WebSession"]
