"""The next hop of a SIP request: RFC 3263 §4 over the server's DNS resolver (sip.md §3).

``resolve(services, host, port, transport, secure=...)`` gives the
addresses to try, in order, for a :class:`~waypost.services.signals.routing.Remote`
(or a registered contact):

* **Transport** (§4.1): the URI's ``transport=`` parameter; else TLS for
  ``sips``; else UDP when the host is an IP address or a port is written;
  else the transports the domain's SRV records offer (``_sip._udp`` first,
  then ``_sip._tcp``), UDP when it has none. ``secure`` always means TLS
  (a ``sips`` URI is never sent over UDP or TCP, RFC 3261 §26.2.2).
* **Addresses** (§4.2): an IP address is used as it is; a written port means
  the host's A/AAAA records only, never SRV (sip.md §3: writing ``5060`` is
  how an administrator bypasses SRV); otherwise the SRV records of
  ``_sip._udp``, ``_sip._tcp`` or ``_sips._tcp`` in RFC 2782 order, each
  target's A then AAAA addresses, and without SRV records the host's own
  A/AAAA on ``SIPDefaultRemotePort`` (``SIPDefaultRemoteTLSPort`` for TLS).

Invariants: the result is never empty (:class:`NextHopError` instead);
DNS goes only to the ``DNSServers`` setting's servers (the system's when it
is empty); one call takes at most ``SIPDNSTimeout`` seconds, all lookups
together; the settings are read in a worker thread, never on the loop.

Choices where RFC 3263 leaves it to us (the status the proxy answers):

* a name that does not exist (NXDOMAIN), or exists with no address and no
  SRV record, is ``404 Not Found``: asking again cannot help;
* SRV records that all say ``.`` (RFC 2782: the service is decidedly not
  offered) are ``404 Not Found`` too, without an A/AAAA fallback;
* a DNS server failure (SERVFAIL, refused) or no answer within
  ``SIPDNSTimeout`` is ``503 Service Unavailable`` (RFC 3261 §16.7: the
  proxy could not reach a destination for now);
* a transport other than UDP, TCP and TLS is ``503`` (we cannot send it);
* NAPTR is not asked (optional in sip.md §3): SRV first, as a client that
  finds no NAPTR records does (§4.1).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import dns.resolver

from waypost.services.container import Services
from waypost.services.delivery.dns import (
    DNSError,
    PermanentDNSError,
    Resolver,
    TemporaryDNSError,
)
from waypost.services.router.address import ip_literal

TRANSPORTS = ("udp", "tcp", "tls")
SRV_SERVICE = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


@dataclass(frozen=True, slots=True)
class Hop:
    """One address to try: ``host`` is the name whose A/AAAA record gave
    ``address`` (the SRV target, or the URI's host; the IP itself for an
    IP literal)."""

    transport: str
    address: str
    port: int
    host: str


class NextHopError(Exception):
    """No address to send to; ``status`` and ``reason`` are the SIP answer."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f": {detail}" if detail else ""))
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Config:
    resolver: Resolver
    udp_tcp_port: int
    tls_port: int
    timeout: float

    def default_port(self, transport: str) -> int:
        return self.tls_port if transport == "tls" else self.udp_tcp_port


_lock = threading.Lock()
_resolvers: dict[tuple[tuple[str, ...], float], Resolver] = {}


def _config(services: Services) -> _Config:
    """The settings and a resolver for them (blocking: settings and resolv.conf)."""
    settings = services.settings()
    servers = tuple(settings.items("DNSServers"))
    timeout = float(settings.number("SIPDNSTimeout"))
    key = (servers, timeout)
    with _lock:
        resolver = _resolvers.get(key)
    if resolver is None:
        try:
            resolver = Resolver(servers, timeout=timeout)
        except dns.resolver.NoResolverConfiguration:
            resolver = Resolver(["127.0.0.1"], timeout=timeout)
        with _lock:
            resolver = _resolvers.setdefault(key, resolver)
    return _Config(resolver, settings.number("SIPDefaultRemotePort"),
                   settings.number("SIPDefaultRemoteTLSPort"), timeout)


def _transport(transport: str | None, secure: bool) -> str | None:
    if secure:
        return "tls"
    if transport is None or not transport.strip():
        return None
    name = transport.strip().lower()
    if name not in TRANSPORTS:
        raise NextHopError(503, "Service Unavailable", f"unsupported transport {transport!r}")
    return name


async def resolve(services: Services, host: str, port: int | None, transport: str | None,
                  *, secure: bool = False) -> list[Hop]:
    """The hops to try for ``host`` in RFC 3263 order; never empty
    (:class:`NextHopError` with the status to answer instead)."""
    chosen = _transport(transport, secure)
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    ip = ip_literal(name)
    if ip is not None and port is not None:  # nothing to look up, no settings needed
        return [Hop(chosen or "udp", ip, port, ip)]
    config = await asyncio.to_thread(_config, services)
    if ip is not None:
        t = chosen or "udp"
        return [Hop(t, ip, config.default_port(t), ip)]
    if not name:
        raise NextHopError(404, "Not Found", "no host")
    try:
        async with asyncio.timeout(config.timeout):
            return await _lookup(config, name, port, chosen)
    except TimeoutError:
        raise NextHopError(503, "Service Unavailable", f"{name}: DNS timeout") from None
    except PermanentDNSError as exc:
        raise NextHopError(404, "Not Found", str(exc)) from None
    except DNSError as exc:
        raise NextHopError(503, "Service Unavailable", str(exc)) from None


async def _lookup(config: _Config, host: str, port: int | None, transport: str | None
                  ) -> list[Hop]:
    resolver = config.resolver
    if port is not None:  # §4.2: a port is written: A/AAAA only, never SRV
        t = transport or "udp"
        return [Hop(t, a, port, host) for a in await resolver.addresses(host)]
    wanted = [transport] if transport else ["udp", "tcp"]
    answers = await asyncio.gather(
        *(resolver.srv_records(f"{SRV_SERVICE[t]}.{host}") for t in wanted),
        return_exceptions=True)
    records: list[tuple[str, tuple[int, int, int, str]]] = []
    failure: BaseException | None = None
    for t, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, BaseException):
            failure = answer
            continue
        records.extend((t, record) for record in answer)
    if records:
        return await _srv_hops(resolver, host, records)
    if failure is not None:
        raise failure
    t = transport or "udp"
    return [Hop(t, a, config.default_port(t), host) for a in await resolver.addresses(host)]


async def _srv_hops(resolver: Resolver, host: str,
                    records: list[tuple[str, tuple[int, int, int, str]]]) -> list[Hop]:
    """Each SRV target's addresses, in the records' order; a target that has
    none is skipped (RFC 2782: try the next)."""
    usable = [(t, r) for t, r in records if r[3] != "."]
    if not usable:
        raise PermanentDNSError(f"{host}: SRV says no SIP service here")
    targets = list(dict.fromkeys(r[3] for _, r in usable))
    found = await asyncio.gather(*(resolver.addresses(t) for t in targets),
                                 return_exceptions=True)
    addresses: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    for target, answer in zip(targets, found, strict=True):
        if isinstance(answer, BaseException):
            errors.append(answer)
        else:
            addresses[target] = answer
    hops = [Hop(t, a, r[2], r[3]) for t, r in usable for a in addresses.get(r[3], [])]
    if hops:
        return hops
    for error in errors:
        if not isinstance(error, DNSError):
            raise error
    for error in errors:
        if isinstance(error, TemporaryDNSError):
            raise error
    raise PermanentDNSError(f"{host}: no SRV target has an address")


__all__ = ["Hop", "NextHopError", "resolve"]
