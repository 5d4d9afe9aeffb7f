"""POP3's view of a mailbox: the maildrop snapshot, its lock, the deletion at QUIT.

A maildrop is INBOX as it was at login (RFC 1939 §8: message numbers stay
fixed for the session). Messages arriving later appear at the next login;
DELE only marks, and :meth:`Maildrops.delete` removes the marked ones in
one mailstore transaction when the client QUITs, so a connection that
drops deletes nothing.

Invariants: unique ids are ``UIDVALIDITY.UID`` of INBOX: stable across
sessions, never reused (UIDs only grow, and a re-created INBOX gets a new
UIDVALIDITY), and the same ids an IMAP client sees. One session per
maildrop in the process (:class:`MaildropLocks`, RFC 1939 §4). A refused
request is a :class:`MaildropError` (its text is for the client; the
protocol writes it). :class:`Maildrop` is pure; :class:`Maildrops` blocks
on the store: call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from waypost.services.container import Services
from waypost.services.mailaccess.errors import NotFound
from waypost.services.mailstore import Mailstore
from waypost.storage.interface import INBOX


class MaildropError(Exception):
    """A request on the maildrop that cannot be done (no such message, deleted)."""


class MessageGone(MaildropError):
    """The message was removed (by another client) since the snapshot."""


@dataclass
class Entry:
    uid: int
    size: int
    deleted: bool = False


class Maildrop:
    """The numbered messages of one session (pure; numbers start at 1)."""

    def __init__(self, account: str, uidvalidity: int, entries: Sequence[Entry]) -> None:
        self.account = account
        self.uidvalidity = uidvalidity
        self.entries = list(entries)

    def get(self, number: int) -> Entry:
        if number > len(self.entries):
            raise MaildropError(f"No message {number}: the maildrop has {len(self.entries)}")
        entry = self.entries[number - 1]
        if entry.deleted:
            raise MaildropError(f"Message {number} is deleted")
        return entry

    def live(self) -> list[tuple[int, Entry]]:
        return [(n, e) for n, e in enumerate(self.entries, 1) if not e.deleted]

    def stat(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(e.size for _, e in live)

    def unique_id(self, entry: Entry) -> str:
        return f"{self.uidvalidity}.{entry.uid}"

    def delete(self, number: int) -> None:
        self.get(number).deleted = True

    def reset(self) -> None:
        for entry in self.entries:
            entry.deleted = False

    def deleted_uids(self) -> list[int]:
        return [e.uid for e in self.entries if e.deleted]


class MaildropLocks:
    """Maildrops in use by a POP3 session of this process (RFC 1939 §4: one
    session per maildrop; the second gets ``[IN-USE]``)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, account: str) -> bool:
        key = account.lower()
        if key in self._held:
            return False
        self._held.add(key)
        return True

    def release(self, account: str) -> None:
        self._held.discard(account.lower())


class Maildrops:
    """The maildrops of a process: snapshots, message bytes, the QUIT deletion
    and the locks (shared by every POP3 port)."""

    def __init__(self, services: Services, locks: MaildropLocks | None = None) -> None:
        self._store = services.store
        self.mailstore = Mailstore(services.store)
        self.locks = locks if locks is not None else MaildropLocks()

    def version(self) -> int:
        """The store's change counter: a cheap test whether settings changed."""
        return self._store.version()

    def open(self, account: str) -> Maildrop:
        """INBOX as it is now (empty when there is no INBOX yet: the first
        delivery creates it)."""
        try:
            info = self.mailstore.mailbox(account, INBOX)
            messages = self.mailstore.list_messages(account, INBOX)
        except NotFound:
            return Maildrop(account, 0, [])
        return Maildrop(account, info.uidvalidity, [Entry(m.uid, m.size) for m in messages])

    def read(self, account: str, uid: int) -> bytes:
        try:
            return self.mailstore.read_message(account, INBOX, uid)
        except NotFound:
            raise MessageGone("Message was removed by another session") from None

    def delete(self, account: str, uids: Sequence[int]) -> int:
        """Remove the messages in one transaction (the UPDATE state)."""
        if not uids:
            return 0
        try:
            return self.mailstore.delete_messages(account, INBOX, uids)
        except NotFound:  # the account or INBOX went away meanwhile: nothing to remove
            return 0
