"""The services a POP3 session asks, in one place and off the event loop.

Logins go through the Router, the login guard and the auth service; the
maildrop (the INBOX snapshot, its lock, the deletion at QUIT) is the
mail-access service's (:mod:`waypost.services.mailaccess.maildrop`). This
module only moves those calls into worker threads and turns the service's
refusals into ``-ERR`` answers (:class:`~waypost.protocols.pop3.wire.Pop3Error`).
One :class:`PostOffice` serves every POP3 port of the process. Its maildrop
locks are in the store (:mod:`waypost.services.shared_locks`), so a maildrop
locked through one port or one process is locked for every port of every
process on the store; :meth:`PostOffice.lock` keeps a task renewing the
leases while any is held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.wire import Pop3Error
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.login_guard import Attempt, LoginGuard
from waypost.services.mailaccess.maildrop import (
    Maildrop,
    Maildrops,
    MessageGone,
    Stored,
)
from waypost.services.shared_locks import MaildropLeases
from waypost.settings import ServerSettings

log = logging.getLogger("waypost.pop3")

SERVICE = "POP"
"""The AccessModes name of the service (domains-accounts.md §4.2)."""


class PostOffice:
    """The services a POP3 session asks; storage and hashing run off the loop."""

    def __init__(self, services: Services, guard: LoginGuard,
                 locks: MaildropLeases | None = None) -> None:
        self.services = services
        self.guard = guard
        self.locks = locks if locks is not None else MaildropLeases(services.store)
        self.maildrops = Maildrops(services, self.locks)
        self.settings: ServerSettings = services.settings()
        self.hostname = self.settings.text("MainDomain")
        self._version = -1
        self._renewer: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Pick up changed settings (a cheap version check)."""
        self._version = await asyncio.to_thread(self._refresh)

    def _refresh(self) -> int:
        version = self.maildrops.version()
        if version != self._version:
            self.settings = self.services.settings()
            self.hostname = self.settings.text("MainDomain")
            self.maildrops.cache.resize(self.settings.size("POP3MessageCache"))
            self.locks.lease = float(max(self.settings.number("POP3LockLease"), 1))
        return version

    async def lock(self, account: str) -> bool:
        """Take the maildrop's lock (False: in use, here or in another
        process); leases are renewed while any is held."""
        taken = await asyncio.to_thread(self.locks.acquire, account)
        if taken and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew())
        return taken

    async def unlock(self, account: str) -> None:
        """Drop the maildrop's lock at once (shielded: a session cancelled
        at shutdown still drops it, or its lease runs out)."""
        await asyncio.shield(asyncio.ensure_future(
            asyncio.to_thread(self.locks.release, account)))

    async def _renew(self) -> None:
        """Renew every third of the lease until no maildrop is held."""
        while self.locks.held():
            await asyncio.sleep(self.locks.lease / 3)
            try:
                await asyncio.to_thread(self.locks.renew)
            except Exception:  # the store is away: try again next period
                log.exception("cannot renew the POP3 maildrop leases")

    async def login(self, ip: str, login: str, password: str) -> Attempt:
        """Check a login name (through the Router: aliases, ``user%domain``)
        and password, under the login guard."""
        return await auth.guarded_login(
            self.services,
            self.guard,
            self.settings,
            ip,
            login,
            lambda: auth.authenticate(self.services, login, password),
            service="POP3",
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
            self.services,
            self.guard,
            self.settings,
            ip,
            login,
            lambda: asyncio.to_thread(check),
            service="POP3",
        )

    async def enabled(self, account: str) -> bool:
        return await asyncio.to_thread(self.services.directory.service_enabled, account, SERVICE)

    async def open(self, account: str) -> Maildrop:
        return await asyncio.to_thread(self.maildrops.open, account)

    async def fetch(self, account: str, uids: Sequence[int]) -> dict[int, Stored]:
        """Several messages in one worker-thread round trip (see Maildrops.fetch)."""
        return await asyncio.to_thread(self.maildrops.fetch, account, uids)

    async def read_range(self, stored: Stored, start: int, size: int) -> bytes:
        """A piece of a large message (it is streamed, never read whole)."""
        try:
            return await asyncio.to_thread(self.maildrops.read_range, stored.row, start, size)
        except MessageGone as exc:
            raise Pop3Error(str(exc)) from None

    async def delete(self, account: str, uids: Sequence[int]) -> int:
        """Remove the messages in one transaction (UPDATE state)."""
        if not uids:
            return 0
        return await asyncio.to_thread(self.maildrops.delete, account, uids)
