"""What a POP3 session works on: the maildrop snapshot, its lock, and the
services behind the login (the Router, the login guard, the mailstore).

A maildrop is INBOX as it was at login (RFC 1939 §8: message numbers stay
fixed for the session). Messages arriving later appear at the next login;
DELE only marks, and :meth:`PostOffice.delete` removes the marked ones in
one mailstore transaction when the client QUITs, so a connection that
drops deletes nothing.

Unique ids are ``UIDVALIDITY.UID`` of INBOX: stable across sessions, never
reused (UIDs only grow, and a re-created INBOX gets a new UIDVALIDITY), and
the same ids an IMAP client sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.wire import Pop3Error
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.login_guard import Attempt, LoginGuard
from waypost.services.mailstore import Mailstore
from waypost.settings import ServerSettings
from waypost.storage.interface import INBOX, NotFound

log = logging.getLogger("waypost.pop3")

SERVICE = "POP"
"""The AccessModes name of the service (domains-accounts.md §4.2)."""


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
            raise Pop3Error(f"No message {number}: the maildrop has {len(self.entries)}")
        entry = self.entries[number - 1]
        if entry.deleted:
            raise Pop3Error(f"Message {number} is deleted")
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


class PostOffice:
    """The services a POP3 session asks; storage and hashing run off the loop."""

    def __init__(self, services: Services, guard: LoginGuard, locks: MaildropLocks) -> None:
        self.services = services
        self.guard = guard
        self.locks = locks
        self.mailstore = Mailstore(services.store)
        self.settings: ServerSettings = services.settings()
        self.hostname = self.settings.text("MainDomain")
        self._version = -1

    async def refresh(self) -> None:
        """Pick up changed settings (a cheap version check)."""
        self._version = await asyncio.to_thread(self._refresh)

    def _refresh(self) -> int:
        version = self.services.store.version()
        if version != self._version:
            self.settings = self.services.settings()
            self.hostname = self.settings.text("MainDomain")
        return version

    async def login(self, ip: str, login: str, password: str) -> Attempt:
        """Check a login name (through the Router: aliases, ``user%domain``)
        and password, under the login guard."""
        return await auth.guarded_login(
            self.services, self.guard, self.settings, ip, login,
            lambda: auth.authenticate(self.services, login, password), service="POP3",
        )

    async def login_apop(self, ip: str, login: str, timestamp: str, digest: str) -> Attempt:
        """APOP (RFC 1939 §7): ``digest`` is MD5(timestamp + password). Only
        accounts that keep a sealed copy of their password (PasswordEncryption
        ``argon2+cram-md5``, see ``services/sealed.py``) can pass; for the
        others it fails like a wrong password."""
        def check() -> str | None:
            account = auth.login_account(self.services, login)
            secret = self.services.directory.cram_secret(account) if account else None
            if secret is None or not wire.apop_matches(timestamp, secret, digest):
                return None
            return account

        return await auth.guarded_login(
            self.services, self.guard, self.settings, ip, login,
            lambda: asyncio.to_thread(check), service="POP3",
        )

    async def enabled(self, account: str) -> bool:
        return await asyncio.to_thread(self.services.directory.service_enabled, account, SERVICE)

    async def open(self, account: str) -> Maildrop:
        return await asyncio.to_thread(self._open, account)

    def _open(self, account: str) -> Maildrop:
        try:
            info = self.mailstore.mailbox(account, INBOX)
            messages = self.mailstore.list_messages(account, INBOX)
        except NotFound:  # INBOX is created by the first delivery
            return Maildrop(account, 0, [])
        return Maildrop(account, info.uidvalidity, [Entry(m.uid, m.size) for m in messages])

    async def read(self, account: str, uid: int) -> bytes:
        try:
            return await asyncio.to_thread(self.mailstore.read_message, account, INBOX, uid)
        except NotFound:
            raise Pop3Error("Message was removed by another session") from None

    async def delete(self, account: str, uids: Sequence[int]) -> int:
        """Remove the messages in one transaction (UPDATE state)."""
        if not uids:
            return 0
        try:
            return await asyncio.to_thread(self.mailstore.delete_messages, account, INBOX, uids)
        except NotFound:  # the account or INBOX went away meanwhile: nothing to remove
            return 0
