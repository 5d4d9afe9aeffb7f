"""Where an SMTP queue's mail goes: smtp.md §2.1 target resolution over DNS.

The queue name of a route ``SMTP(queue)address`` decides how hosts are found:

* ``domain`` -- its MX records, lowest preference first, equal preferences
  shuffled; without MX records the domain's own A/AAAA (implicit MX);
* ``host:port`` -- the A/AAAA of ``host`` only, MX never consulted (writing
  ``:25`` is the documented way to bypass MX);
* ``[a.b.c.d]``, ``a.b.c.d:port``, ``[IPv6:…]`` or a bare IP -- that address.

SIP's next hop (``services/signals/nexthop.py``) asks the same resolver for
SRV records (:meth:`Resolver.srv_records`, RFC 2782 order).

Failures come in two kinds the queue treats differently: a
:class:`PermanentDNSError` bounces (NXDOMAIN, no address records, null MX,
MX loop), a :class:`TemporaryDNSError` retries (SERVFAIL, timeout). The
resolver talks to configurable servers (``ip`` or ``ip:port``) so tests can
point it at a loopback DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver


class DNSError(Exception):
    """A lookup failed; ``enhanced`` is the RFC 3463 code for a DSN or reply."""

    enhanced = "4.4.3"

    def __init__(self, message: str, enhanced: str | None = None) -> None:
        super().__init__(message)
        if enhanced:
            self.enhanced = enhanced


class PermanentDNSError(DNSError):
    """The destination cannot exist as asked: bounce, do not retry."""

    enhanced = "5.1.2"


class TemporaryDNSError(DNSError):
    """DNS did not answer usefully now (SERVFAIL, timeout): retry later."""

    enhanced = "4.4.3"


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try: ``host`` is the MX/host name (or the IP itself)."""

    host: str
    ip: str
    port: int
    preference: int = 0


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_queue(queue: str) -> tuple[str, int | None, bool]:
    """Split an SMTP queue name into ``(host, port or None, host is an IP)``.

    Accepts ``domain``, ``host:port``, ``[1.2.3.4]``, ``[1.2.3.4]:port``,
    ``1.2.3.4:port``, ``[IPv6:::1]``, ``[IPv6:::1]:port`` and bare IPs.
    Host names come back lower-case without a trailing dot.
    """
    text = queue.strip()
    if not text:
        raise ValueError("empty queue name")
    port_text = ""
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad queue name {queue!r}")
        port_text = rest[1:]
        if inner.lower().startswith("ipv6:"):
            inner = inner[5:]
        ip = _ip(inner)
        if ip is None:
            raise ValueError(f"bad IP literal in queue name {queue!r}")
        return ip, _port(port_text, queue) if rest else None, True
    ip = _ip(text)
    if ip is not None:
        return ip, None, True
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = text
    host = host.rstrip(".").lower()
    if not host or ":" in host:
        raise ValueError(f"bad queue name {queue!r}")
    port = _port(port_text, queue) if sep else None
    ip = _ip(host)
    return (ip, port, True) if ip else (host, port, False)


def _port(text: str, queue: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in queue name {queue!r}")
    return int(text)


def _server(spec: str) -> dns.nameserver.Do53Nameserver:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353``."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    else:
        host, port = spec, 53
    if _ip(host) is None:
        raise ValueError(f"DNS server must be an IP address: {spec!r}")
    return dns.nameserver.Do53Nameserver(host, port)


class Resolver:
    """Async DNS lookups for delivery, bounded by ``timeout`` seconds each.

    ``servers`` empty means the system's resolv.conf (read once, here: create
    the Resolver before the loop runs or in a thread). ``cache`` keeps
    answers for their TTL (the "Relay to All Hosts We Backup" check asks on
    every RCPT). ``ipv6=False`` leaves AAAA records out.
    """

    def __init__(
        self,
        servers: Collection[str] = (),
        timeout: float = 5.0,
        cache: bool = True,
        ipv6: bool = True,
    ) -> None:
        res = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            res.nameservers = [_server(s) for s in servers]
        res.timeout = timeout
        res.lifetime = timeout
        res.cache = dns.resolver.Cache() if cache else None
        self._res = res
        self.ipv6 = ipv6

    # -- primitive lookups -------------------------------------------------

    async def _query(self, name: str, rdtype: str) -> list[Any] | None:
        """Records of one type; None for NODATA; typed errors for the rest."""
        try:
            answer = await self._res.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            raise PermanentDNSError(f"{name}: no such domain", "5.1.2") from None
        except dns.resolver.NoNameservers as exc:
            raise TemporaryDNSError(f"{name} {rdtype}: DNS server failure ({exc})") from None
        except dns.exception.Timeout:
            raise TemporaryDNSError(f"{name} {rdtype}: DNS timeout") from None
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong) as exc:
            raise PermanentDNSError(f"{name}: invalid domain name ({exc})", "5.1.2") from None
        except dns.exception.DNSException as exc:
            raise TemporaryDNSError(f"{name} {rdtype}: {exc}") from None
        return list(answer)

    async def addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of ``host`` (both asked at once).

        Raises PermanentDNSError when the name does not exist or has neither,
        TemporaryDNSError when a lookup failed and nothing was found.
        """
        kinds = ["A", "AAAA"] if self.ipv6 else ["A"]
        results = await asyncio.gather(
            *(self._query(host, k) for k in kinds), return_exceptions=True
        )
        found: list[str] = []
        temporary: DNSError | None = None
        permanent: DNSError | None = None
        for res in results:
            if isinstance(res, TemporaryDNSError):
                temporary = res
            elif isinstance(res, PermanentDNSError):
                permanent = res
            elif isinstance(res, BaseException):
                raise res
            elif res:
                found.extend(r.address for r in res)
        if found:
            return found
        if temporary:
            raise temporary
        if permanent:
            raise permanent
        raise PermanentDNSError(f"{host}: no address records", "5.4.4")

    async def mx_hosts(self, domain: str) -> list[tuple[int, str]]:
        """``(preference, exchange)`` of the domain's MX records, sorted;
        ``[]`` when it has none or does not exist. Names lower-case, no dot;
        a null MX shows as ``"."``. Temporary failures raise."""
        try:
            records = await self._query(domain, "MX")
        except PermanentDNSError:
            return []
        out = [(r.preference, _exchange(r)) for r in records or []]
        return sorted(out)

    async def srv_records(self, name: str) -> list[tuple[int, int, int, str]]:
        """``(priority, weight, port, target)`` of the SRV records of ``name``
        (``_sip._udp.example.com``) in the order to try them (RFC 2782:
        lowest priority first, within one priority a weighted random
        order); ``[]`` when there are none or the name does not exist.
        Targets lower-case without the dot; ``"."`` (the service is not
        offered) is kept for the caller to see. Temporary failures raise."""
        try:
            records = await self._query(name, "SRV")
        except PermanentDNSError:
            return []
        found = [(r.priority, r.weight, r.port, _target(r)) for r in records or []]
        return srv_order(found)

    # -- smtp.md §2.1 --------------------------------------------------------

    async def resolve_targets(
        self,
        queue: str,
        default_port: int = 25,
        self_names: Collection[str] = (),
        self_ips: Collection[str] = (),
    ) -> list[Target]:
        """The ordered addresses to try for an SMTP queue (smtp.md §2.1).

        ``default_port`` applies to MX/A targets without an explicit port.
        ``self_names`` / ``self_ips`` are this server's names and addresses:
        walking an MX list stops at the first exchange that is us, and every
        exchange with the same or a larger preference is dropped (we only
        pass mail *up* the MX list). If that leaves nothing, it is a mail
        loop: PermanentDNSError ``5.4.6``. Explicit hosts (``host:port``,
        IP literals) are used as given, even when they are ours.
        """
        try:
            host, port, is_ip = parse_queue(queue)
        except ValueError as exc:
            raise PermanentDNSError(str(exc), "5.1.2") from None
        if is_ip:
            return [Target(host, host, port or default_port, 0)]
        if port is not None:
            return [Target(host, ip, port, 0) for ip in await self.addresses(host)]
        records = await self._query(host, "MX")
        if records is None:  # implicit MX (RFC 5321 §5.1)
            mx = [(0, host)]
        else:
            mx = [(r.preference, _exchange(r)) for r in records]
            if all(name == "." for _, name in mx):
                raise PermanentDNSError(f"{host}: domain accepts no mail (null MX)", "5.1.10")
            mx = [(p, name) for p, name in mx if name != "."]
        return await self._walk(host, _shuffled(mx), default_port, self_names, self_ips)

    async def _walk(
        self,
        domain: str,
        mx: list[tuple[int, str]],
        port: int,
        self_names: Collection[str],
        self_ips: Collection[str],
    ) -> list[Target]:
        names = {n.rstrip(".").lower() for n in self_names}
        ips = {_ip(i) or i for i in self_ips}
        lookups = await asyncio.gather(
            *(self.addresses(name) for _, name in mx), return_exceptions=True
        )
        targets: list[Target] = []
        errors: list[DNSError] = []
        cut: int | None = None
        for (pref, name), found in zip(mx, lookups, strict=True):
            if cut is not None and pref >= cut:
                continue
            if isinstance(found, DNSError):
                errors.append(found)
                continue
            if isinstance(found, BaseException):
                raise found
            if name in names or ips.intersection(found):
                cut = pref
                targets = [t for t in targets if t.preference < pref]
                continue
            targets.extend(Target(name, ip, port, pref) for ip in found)
        if targets:
            return targets
        if cut is not None and not any(isinstance(e, TemporaryDNSError) for e in errors):
            raise PermanentDNSError(f"{domain}: mail loop, best MX is this server", "5.4.6")
        for err in errors:
            if isinstance(err, TemporaryDNSError):
                raise err
        if errors and len(mx) == 1:
            raise errors[0]
        raise PermanentDNSError(f"{domain}: no mail exchanger has an address", "5.4.4")


def _exchange(record: Any) -> str:
    name = record.exchange.to_text(omit_final_dot=True).lower()
    return name or "."


def _target(record: Any) -> str:
    name = record.target.to_text(omit_final_dot=True).lower()
    return name or "."


def srv_order(records: list[tuple[int, int, int, str]], rng: random.Random | None = None
              ) -> list[tuple[int, int, int, str]]:
    """RFC 2782 ordering: by priority; inside one priority repeatedly pick a
    record with probability proportional to its weight (weight-0 records
    first in the running sum, so they are chosen only rarely when others
    have weight), until none is left."""
    pick = rng or random
    out: list[tuple[int, int, int, str]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        group.sort(key=lambda r: r[1] != 0)  # weight 0 at the beginning (stable)
        while group:
            total = sum(r[1] for r in group)
            chosen = pick.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record[1]
                if running >= chosen:
                    out.append(group.pop(index))
                    break
    return out


def _shuffled(mx: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Sort by preference; shuffle hosts of equal preference (RFC 5321 §5.1)."""
    keyed = [(pref, random.random(), name) for pref, name in mx]
    keyed.sort()
    return [(pref, name) for pref, _, name in keyed]
