"""Mailbox-name rules: which names a mailbox, an alias or a subscription may have.

These are decisions (spec/mailboxes.md §1, §5, RFC 3501 §5.1), so they live
in the service, which checks every name before it asks the store; the store
keeps only what its own structure needs (a stored own name is not empty,
has no empty level and does not look foreign) and the INBOX key
normalisation (``canonical_mailbox``).

Invariants: a name :func:`check_name` accepts is canonical (``inbox/x`` is
``INBOX/x``), non-empty, not ``~``-prefixed, has no empty level, holds no
LIST wildcard (``*``, ``%``) and no control character, and is at most
:data:`MAX_NAME` bytes of UTF-8. Refusals are :class:`InvalidMailboxName`
(RFC 5530 ``CANNOT``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from waypost.services.mailaccess.errors import InvalidMailboxName
from waypost.storage.interface import INBOX, canonical_mailbox

MAX_NAME = 1000
"""Bytes of UTF-8 in a mailbox name [waypost]."""


def _control(ch: str) -> bool:
    return ord(ch) < 0x20 or ord(ch) == 0x7F


def check_name(name: str) -> str:
    """A valid name of one's own mailbox (or mailbox alias), made canonical
    (INBOX), or :class:`InvalidMailboxName`."""
    if not isinstance(name, str) or not name:
        raise InvalidMailboxName("a mailbox name must not be empty")
    if name.startswith("~"):
        raise InvalidMailboxName(
            f"{name!r}: a name starting with ~ is another user's mailbox (~owner/name)")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidMailboxName(f"{name!r}: a level of the name is empty")
    bad = next((c for c in name if c in "*%" or _control(c)), None)
    if bad is not None:
        raise InvalidMailboxName(f"{name!r}: {bad!r} is not allowed in a mailbox name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise InvalidMailboxName(f"mailbox names are limited to {MAX_NAME} bytes")
    return canonical_mailbox(name)


def check_create(name: str) -> str:
    """A name to create: :func:`check_name`, except that a trailing ``/``
    (create only the directory entity, RFC 3501 §6.3.3) is kept."""
    if name.endswith("/") and len(name) > 1:
        return check_name(name[:-1]) + "/"
    return check_name(name)


def canonical_any(name: str) -> str:
    """A name that may be foreign (``~owner/box``; subscriptions, alias
    targets): INBOX made canonical in the mailbox part; only emptiness and
    control characters are refused (the mailbox need not exist)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidMailboxName("a mailbox name must not be empty")
    if any(_control(c) for c in name):
        raise InvalidMailboxName(f"{name!r}: control characters are not allowed")
    if name.startswith("~"):
        owner, sep, box = name[1:].partition("/")
        return "~" + owner + sep + canonical_mailbox(box)
    return canonical_mailbox(name)


def check_rename(old: str, new: str) -> str:
    """RENAME ``old`` to ``new`` (own names): ``new`` checked and canonical; a
    mailbox cannot move below itself, except INBOX (RFC 3501 §6.3.5: INBOX's
    messages move, INBOX and its children stay)."""
    old = canonical_mailbox(old)
    new = check_name(new)
    if new.startswith(old + "/") and old != INBOX:
        raise InvalidMailboxName(f"cannot rename {old!r} into itself ({new!r})")
    return new


def check_alias(alias: str, target: str) -> tuple[str, str]:
    """A mailbox alias (mailboxes.md §5): its name is an own mailbox name, its
    target any name but itself or below itself; both canonical."""
    alias = check_name(alias)
    target = canonical_any(target)
    if target == alias or target.startswith(alias + "/"):
        raise InvalidMailboxName(f"mailbox alias {alias!r} cannot point to itself")
    return alias, target


def check_template(
    mailboxes: Iterable[str], subscriptions: Iterable[str], aliases: Mapping[str, str] | None
) -> None:
    """An Account Template's Mailboxes (``name/``: only the directory
    entity), Subscriptions and MailboxAliases (domains-accounts.md §5) obey
    the same rules as names a user gives; :class:`InvalidMailboxName` if not."""
    for name in mailboxes:
        check_create(name)
    for name in subscriptions:
        canonical_any(name)
    for alias, target in (aliases or {}).items():
        check_alias(alias, target)
