"""The account's own settings pages (issue 10 point 7): subscriptions,
mailbox aliases, preferences and the password.

Invariants: see :mod:`waypost.protocols.http.common`.
"""

from __future__ import annotations

from waypost.protocols.http.common import SessionAction, SessionPage

PAGES: dict[str, SessionPage] = {}
ACTIONS: dict[str, SessionAction] = {}
