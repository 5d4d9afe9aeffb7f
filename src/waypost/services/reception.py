"""What the SMTP server asks of the services: trust, routes, logins, the queue.

The session speaks the wire; everything it must *decide* is answered here,
off the event loop where it touches storage or hashing. Whether a client is
trusted is :class:`~waypost.services.trust.ClientTrust`'s answer, refreshed
with the settings by :meth:`Reception.refresh`; the queue is the real
:class:`~waypost.services.queue.Queue` (the Enqueuer submits to it, ETRN
releases its held mail).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from waypost.services import auth
from waypost.services.backup_mx import allow_backup, backup_domain, we_back_up
from waypost.services.backup_relay import BackupRelay
from waypost.services.container import Services
from waypost.services.delivery.dns import Resolver
from waypost.services.login_guard import shared_guard
from waypost.services.message import Submission
from waypost.services.queue import Queue
from waypost.services.router.route import RouteResult, route
from waypost.services.router.table import CompiledTable, Kind
from waypost.services.router.view import DirectorySnapshot
from waypost.services.rules.enqueue import Enqueuer
from waypost.services.trust import ClientTrust
from waypost.settings import ServerSettings


class Turner(Protocol):
    async def turn(
        self, queues: Sequence[str], reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, helo: str, remote: str = "",
    ) -> tuple[int, int]: ...


class Reception:
    def __init__(self, services: Services, queue: Queue, turner: Turner | None = None
                 ) -> None:
        self.services = services
        self.queue = queue
        self.turner = turner
        self.backup = BackupRelay(services, queue, relays_for=self.relays_for)
        self.settings: ServerSettings = services.settings()
        self.trust = ClientTrust(self.settings)
        self.enqueuer = Enqueuer(services, queue, is_client=self.trust.is_trusted,
                                 version=lambda: self._version)
        self.guard = shared_guard()
        self.main_domain = services.directory.main_domain()
        self._version = -1
        self._resolver: Resolver | None = None
        self._routing: tuple[CompiledTable, DirectorySnapshot] | None = None

    async def refresh(self) -> None:
        """Pick up Directory, Router and settings changes (a cheap check)."""
        version = await asyncio.to_thread(self._refresh)
        self._version = version

    def _refresh(self) -> int:
        version = self.services.store.version()
        # kept for routing on the event loop without another store round trip
        self._routing = self.services.router.current()
        if version != self._version:
            self.settings = self.services.settings()
            self.trust.update(self.settings)
            self.main_domain = self.settings.text("MainDomain")
            self._resolver = None
        return version

    def is_trusted_ip(self, ip: str) -> bool:
        """ClientIPAddresses as of the last refresh (no I/O: the session asks on the loop)."""
        return self.trust.is_trusted(ip)

    async def has_room(self, size: int | None) -> bool:
        """Whether the data directory has room for a message of the declared
        ``size`` over ``StorageMinFree`` (``storage_full.py``)."""
        floor = self.settings.size("StorageMinFree") or 0
        return await self.queue.has_room(floor + (size or 0))

    async def route_recipient(self, address: str, trusted: bool) -> RouteResult:
        await self.refresh()
        assert self._routing is not None
        table, snap = self._routing
        result = route(address, Kind.MAIL, trusted, table, snap)
        domain = backup_domain(result, self.settings)
        if domain and await self.we_back_up(domain):
            allow_backup(result)
        return result

    async def we_back_up(self, domain: str) -> bool:
        """"Relay to All Hosts We Backup" (smtp.md §5, ``backup_mx.py``)."""
        if self._resolver is None:
            self._resolver = await asyncio.to_thread(
                Resolver, self.settings.items("DNSServers"))
        if self._routing is None:
            await self.refresh()
        assert self._routing is not None
        return await we_back_up(self._resolver, self._routing[1], domain)

    async def relays_for(self, domain: str) -> bool:
        """Whether an untrusted client may send mail for ``domain`` through us
        to a remote host: the relaying decision of RCPT TO (ETRN asks)."""
        result = await self.route_recipient(f"postmaster@{domain}", False)
        return result.error is None and bool(result.routes) and all(
            r.remote for r in result.routes)

    async def authenticate(self, ip: str, login: str, password: str) -> str | None:
        attempt = await auth.guarded_login(
            self.services, self.guard, self.settings, ip, login,
            lambda: auth.authenticate(self.services, login, password), service="SMTP")
        return attempt.account

    async def authenticate_cram_md5(self, ip: str, login: str, challenge: str, digest: str
                                    ) -> str | None:
        attempt = await auth.guarded_login(
            self.services, self.guard, self.settings, ip, login,
            lambda: auth.authenticate_cram_md5(self.services, login, challenge, digest),
            service="SMTP")
        return attempt.account

    async def submit(self, submission: Submission) -> str:
        """Server-wide rules, then the queue (rules.md §1: the Enqueuer).
        Raises :class:`RuleRejected` when a rule refuses the message."""
        return await self.enqueuer.submit(submission)
