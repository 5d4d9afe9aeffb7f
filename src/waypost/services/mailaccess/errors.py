"""The errors the mail-access service raises, for any protocol to map.

Invariants: every refusal is a :class:`MailboxError` (or a subclass) whose
``code`` is the RFC 5530 response code that fits it (``NONEXISTENT``,
``NOPERM``, ``TRYCREATE``, ``ALREADYEXISTS``, ``CANNOT``, ...), so a
protocol maps an error without looking at its text; a store that cannot
answer raises :class:`StoreError` (try again later); a message or mailbox
that vanished while in use raises :class:`NotFound`. The storage layer's
mailbox errors already carry those codes and are re-exported here, so a
protocol imports them from the service and never from storage.
"""

from __future__ import annotations

from waypost.storage.interface import (
    CannotDelete,
    InvalidMailboxName,
    MailboxError,
    MailboxExists,
    MailboxHasChildren,
    NoSuchMailbox,
    NotFound,
    OverQuota,
    StorageFull,
    StoreError,
)

__all__ = [
    "CannotDelete", "InvalidMailboxName", "InvalidRights", "MailboxError", "MailboxExists",
    "MailboxHasChildren", "NoPermission", "NoSuchMailbox", "NotFound", "OverQuota",
    "StorageFull", "StoreError", "TryCreate",
]  # fmt: skip


class NoPermission(MailboxError):
    """The user may see the mailbox but lacks ``right`` (a CGP letter)."""

    code = "NOPERM"

    def __init__(self, right: str, message: str) -> None:
        super().__init__(message)
        self.right = right


class InvalidRights(MailboxError):
    """A rights string with letters that are not rights (SETACL: BAD)."""


class TryCreate(NoSuchMailbox):
    """The target of COPY, MOVE or APPEND does not exist: the client may
    create it and try again (RFC 3501 §6.3.11, ``[TRYCREATE]``)."""

    code = "TRYCREATE"
