"""Connection limits per client address, per network and per listener.

One :class:`ConnectionTable` per listener decides at accept whether a new
connection may start (issue 13 point 1: one address must never take every
slot). It counts open connections by client address, by network (IPv4 /24,
IPv6 /64: what one customer, one NAT or one cloud host usually holds) and in
all; the listener sends the protocol's refusal for the limit that was hit.
SMTP/POP3/IMAP (``listen.py``), the web listeners (``http/admission.py``)
and, later, SIP over TCP use the same table.

Choices, where no RFC decides:

* Counted per listener, as Postfix's anvil counts per service: a client's
  IMAP connections do not use up its SMTP slots.
* Trusted clients (``ClientIPAddresses``: proxies, webmail front ends,
  an office's NAT) get ``MaxConnectionsPerTrustedAddress`` instead of
  ``MaxConnectionsPerAddress`` and are not counted in their network, so a
  busy trusted host never shuts its neighbours out; ``0`` exempts them, as
  Postfix's ``smtpd_client_event_limit_exceptions = $mynetworks`` does.
  They still count towards ``MaxConnections``, which protects the process.
* An IPv4-mapped IPv6 peer (``::ffff:192.0.2.1`` on a dual-stack socket)
  is the IPv4 address.
* ``0`` means no limit for the per-address and per-network settings;
  ``MaxConnections`` keeps its old meaning. Limits are read when the
  listener starts.
* On implicit-TLS ports a connection is counted from its TCP accept, before
  the handshake (``listen.TLSAcceptor``), so sockets that never send a
  ClientHello use up their own address's slots and nobody else's.

Invariants: pure (no I/O, no clock of its own, no asyncio), so it runs on
the event loop at accept; every :class:`Ticket` from :meth:`admit` is
released exactly once; a count at zero is deleted, so a flood from many
addresses leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from waypost.services.trust import ClientTrust
from waypost.settings import ServerSettings

REFUSAL_LOG_INTERVAL = 60.0
"""Seconds between two log lines about the same refused address."""


class Scope(Enum):
    """Which limit refused a connection; the value ends the refusal text."""

    ADDRESS = "from your address"
    NETWORK = "from your network"
    SERVER = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: Scope
    address: str
    limit: int

    @property
    def text(self) -> str:
        """Human text every protocol puts after its own code."""
        return " ".join(("Too many connections", self.scope.value)).rstrip() + ", try later"


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted connection; hand it back to :meth:`ConnectionTable.release`."""

    address: str
    network: str | None


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits of one listener; ``None`` is no limit."""

    per_address: int | None = None
    per_network: int | None = None
    overall: int | None = None
    per_trusted_address: int | None = None
    is_trusted: Callable[[str], bool] = lambda ip: False

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ConnectionLimits:
        def limit(name: str) -> int | None:
            return settings.number(name) or None

        return cls(
            per_address=limit("MaxConnectionsPerAddress"),
            per_network=limit("MaxConnectionsPerNetwork"),
            overall=settings.number("MaxConnections"),
            per_trusted_address=limit("MaxConnectionsPerTrustedAddress"),
            is_trusted=ClientTrust(settings).is_trusted,
        )


def client_keys(ip: str) -> tuple[str, str]:
    """(address, network) a peer is counted under: IPv4 and its /24, IPv6 and
    its /64; a mapped IPv4 is IPv4; the zone of a link-local address is
    dropped. Something that is no IP address (a Unix socket) counts as itself."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip, ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    network = ipaddress.ip_network((addr, prefix), strict=False)
    return str(addr), str(network)


def _over(count: int, limit: int | None) -> bool:
    return limit is not None and count >= limit


class ConnectionTable:
    """Open connections of one listener, by address, by network and in all."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._addresses: dict[str, int] = {}
        self._networks: dict[str, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def count(self, ip: str) -> tuple[int, int]:
        """(connections from ``ip``, connections from its network)."""
        address, network = client_keys(ip)
        return self._addresses.get(address, 0), self._networks.get(network, 0)

    def admit(self, ip: str) -> Ticket | Refusal:
        """Count a new connection from ``ip``, or say which limit it is over.
        The address limit is checked first, so a flooding client reads that
        its own address is the problem."""
        lim = self.limits
        address, network = client_keys(ip)
        trusted = lim.is_trusted(address)
        per_address = lim.per_trusted_address if trusted else lim.per_address
        if _over(self._addresses.get(address, 0), per_address):
            assert per_address is not None
            return Refusal(Scope.ADDRESS, address, per_address)
        if not trusted and _over(self._networks.get(network, 0), lim.per_network):
            assert lim.per_network is not None
            return Refusal(Scope.NETWORK, address, lim.per_network)
        if _over(self._total, lim.overall):
            assert lim.overall is not None
            return Refusal(Scope.SERVER, address, lim.overall)
        self._addresses[address] = self._addresses.get(address, 0) + 1
        if not trusted:
            self._networks[network] = self._networks.get(network, 0) + 1
        self._total += 1
        return Ticket(address, None if trusted else network)

    def release(self, ticket: Ticket) -> None:
        _decrement(self._addresses, ticket.address)
        if ticket.network is not None:
            _decrement(self._networks, ticket.network)
        self._total -= 1


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class RefusalLog:
    """At most one log line per refused address per ``interval`` seconds, so
    a flood cannot flood the log; the line says how many were refused since.

    The caller gives the time (``time.monotonic()``), which keeps this pure.
    Entries older than ``interval`` are dropped once ``max_entries`` is
    reached, so memory follows the addresses refused in the last interval,
    not every address ever refused.
    """

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, max_entries: int = 10_000) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (logged at, refused since)

    def note(self, address: str, now: float) -> int | None:
        """Record one refusal; the number of refusals to report if a line is
        due now (this one included), else ``None``."""
        logged_at, since = self._seen.get(address, (None, 0))
        if logged_at is not None and now - logged_at < self.interval:
            self._seen[address] = (logged_at, since + 1)
            return None
        if len(self._seen) >= self.max_entries:
            self._seen = {a: v for a, v in self._seen.items() if now - v[0] < self.interval}
        self._seen[address] = (now, 0)
        return since + 1


__all__ = [
    "ConnectionLimits",
    "ConnectionTable",
    "Refusal",
    "RefusalLog",
    "Scope",
    "Ticket",
    "client_keys",
]
