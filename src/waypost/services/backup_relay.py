"""Backup relaying for offline customers: ETRN and ATRN/TURN (smtp.md §6).

The SMTP session asks two questions here: may this node's queue be
released (ETRN, RFC 1985), and which held queues may this authenticated
account take over its own connection (ATRN, RFC 2645)? The answers come
from "Hold Mail for Domains" (with its ``domain = account`` entries) and
the queue; the turn-around itself is the delivery runner's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from waypost.services.container import Services
from waypost.services.queue import Queue, hold_patterns
from waypost.services.router.route import Route
from waypost.settings import split_list
from waypost.storage.interface import QueuedMessage


@dataclass(frozen=True, slots=True)
class HoldEntry:
    """One item of HoldMailForDomains: ``pattern`` or ``pattern = acct[ acct...]``.

    [waypost] the ``= account`` part names accounts allowed to ATRN for the
    domain (smtp.md §6.3 (b)); it does not change what is held.
    """

    pattern: str
    accounts: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.lower(), self.pattern.replace("[", "[[]"))


def hold_entries(text: str) -> list[HoldEntry]:
    entries = []
    for item in split_list(text):
        pattern, _, accounts = item.partition("=")
        pattern = pattern.strip().lower()
        if pattern:
            entries.append(HoldEntry(pattern, tuple(a.lower() for a in accounts.split())))
    return entries


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int
    enhanced: str
    text: str


def _host(queue: str) -> str:
    return Route("SMTP", queue).host_port()[0].lower()


def _in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _queues(messages: list[QueuedMessage]) -> dict[str, list[str]]:
    """Pending SMTP queue name -> the recipients' domains, as the client wrote
    them and as they will be sent."""
    out: dict[str, list[str]] = {}
    for m in messages:
        for r in m.recipients:
            if r.module == "SMTP":
                domains = out.setdefault(r.queue, [])
                for address in (r.address, r.route_address):  # as written, and as sent
                    if address:
                        domains.append(address.rpartition("@")[2].lower().rstrip(">."))
    return out


class BackupRelay:
    def __init__(self, services: Services, queue: Queue,
                 relays_for: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.services = services
        self.queue = queue
        self._relays_for = relays_for

    async def relays_for(self, node: str) -> bool:
        """Whether we relay for ``node`` (the RCPT TO decision for an untrusted
        client, Relay to All Hosts We Backup included); False without a judge."""
        return self._relays_for is not None and await self._relays_for(node)

    def _entries(self) -> list[HoldEntry]:
        return hold_entries(self.services.settings().text("HoldMailForDomains"))

    def _held(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name.lower(), p.replace("[", "[[]"))
                   for p in hold_patterns(self.services.settings().text("HoldMailForDomains")))

    async def etrn(self, node: str) -> Verdict:
        """RFC 1985: ``node``, ``@domain`` (with subdomains) or ``#queue``.

        A queue may be started when it is held (Hold Mail for Domains), or
        when we relay for the node (a ``Relay:`` record, Relay to All Hosts
        We Backup): RFC 1985 and the How To make holding optional, and
        Postfix likewise flushes its relay domains. Any other node is
        refused with ``459`` (not ours to relay), so ETRN never lets a
        stranger hurry mail for domains we merely send to. Delivery goes
        to the node's registered destination, never over this connection.
        """
        arg = node.strip()
        if not arg or " " in arg:
            return Verdict(501, "5.5.4", "Syntax: ETRN node | @domain | #queue")
        pending = _queues(await self.queue.db(self.services.store.queue_list))
        if arg.startswith("@"):
            domain = arg[1:].lower().rstrip(".")
            ours = (self._held(domain) or any(e.matches(f"x.{domain}") for e in self._entries())
                    or await self.relays_for(domain))
            names = [q for q in pending if _in_domain(_host(q), domain)
                     and (ours or self._held(q))]
            if not names:
                if ours:
                    return Verdict(251, "2.0.0", f"OK, no messages waiting for node {arg}")
                return Verdict(459, "4.7.1", f"Node {arg} not allowed: not a domain we relay for")
            count = 0
            for name in names:
                count += await self.queue.release(f"SMTP({name})")
            return Verdict(253, "2.0.0", f"OK, {count} pending messages for node {arg} started")
        if arg.startswith("#"):  # a queue by its exact name
            name = arg[1:]
            matching = [q for q in pending if q.lower() == name.lower()]
        else:  # the queue of that name, and every queue holding mail for that domain
            name = arg.lower().rstrip(".")
            matching = [q for q, domains in pending.items()
                        if q.lower() == name or name in domains]
        relayed = self._held(name) or await self.relays_for(name)
        matching = [q for q in matching if relayed or self._held(q)]
        if not matching:
            if relayed:
                return Verdict(251, "2.0.0", f"OK, no messages waiting for node {arg}")
            return Verdict(459, "4.7.1", f"Node {arg} not allowed: not a domain we relay for")
        for queue_name in matching:
            await self.queue.release(f"SMTP({queue_name})")
        return Verdict(250, "2.0.0", f"Queuing for node {arg} started")

    async def atrn_domains(self, account: str, requested: list[str]) -> list[str]:
        """The requested domains (all authorised ones when none are named)
        this account may turn (smtp.md §6.3 [waypost] rule); others are
        skipped silently."""
        name = account.partition("@")[0].lower()
        rights = await self.queue.db(self.services.directory.get_rights, account)
        master = "Master" in rights
        entries = self._entries()
        allowed: list[str] = []
        candidates = [d.lower().rstrip(".") for d in requested]
        if not candidates:
            candidates = [e.pattern for e in entries if "*" not in e.pattern]
        for domain in candidates:
            for entry in entries:
                if entry.matches(domain) and (
                    master or name == domain or account.lower() in entry.accounts
                    or name in entry.accounts
                ):
                    allowed.append(domain)
                    break
        return allowed

    async def atrn_queues(self, domains: list[str]) -> list[str]:
        """Queues with pending mail for these domains: the queue's host is in
        the domain, or a recipient in it is (everything routed into one
        queue goes together)."""
        pending = _queues(await self.queue.db(self.services.store.queue_list))
        out = []
        for queue_name, rcpt_domains in pending.items():
            host = _host(queue_name)
            if any(_in_domain(host, d) or d in rcpt_domains for d in domains):
                out.append(queue_name)
        return out
