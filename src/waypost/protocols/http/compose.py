"""Composing and sending mail from a session (issue 10 point 6): compose,
reply, reply-all and forward with attachments, sent through the submission
path SMTP AUTH uses and saved to Sent.

Invariants: see :mod:`waypost.protocols.http.common`.
"""

from __future__ import annotations

from waypost.protocols.http.common import SessionAction, SessionPage

PAGES: dict[str, SessionPage] = {}
ACTIONS: dict[str, SessionAction] = {}
