"""Which domain an HTTP request belongs to (web.md §3, router.md §6.5, §7.8).

A pure decision over the Router and its Directory snapshot; no HTTP here, so
it is unit-tested on names. The HTTP engine calls :func:`detect` (in a worker
thread: the Router may rebuild its table) with the ``Host:`` header and the
server address the connection came in on.

Invariants:

* the host name is routed as the ``access`` address ``LoginPage@<host>``, so
  domain aliases and Router records (``www.client.com = client.com``,
  ``<LoginPage@john.site.dom> = john@domain.dom``) apply; the route ends in
  ``DOMAIN(d)`` (a domain's login page) or ``LOCAL(account)`` (a personal
  site), anything else is "unknown domain", never some other domain;
* an IP address as host (``192.0.2.7``, ``[2001:db8::1]``) means the domain
  that address is assigned to, else the Main Domain (§3 step 4);
* a request without a ``Host:`` (HTTP/1.0) is placed by the server address
  it reached, like an IP host [waypost];
* a host that is not a syntactically valid name is "unknown" (never routed:
  ``LoginPage@a@b`` or ``%`` tricks cannot steer the Router) [waypost].
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from waypost.services.router.table import Kind
from waypost.services.routing import Router

MAX_HOST = 253
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


class Place(StrEnum):
    DOMAIN = "domain"
    """a server domain: its login page and skin"""
    SITE = "site"
    """an account's personal web site (router.md §7.8)"""
    UNKNOWN = "unknown"
    """no server domain: the "unknown domain" page"""


@dataclass(frozen=True, slots=True)
class WebTarget:
    """Where a request goes: ``domain`` is set for DOMAIN and SITE (the
    account's domain), ``account`` (``name@domain``) for SITE only; ``host``
    is the host name as understood (for logs and the error page)."""

    place: Place
    host: str
    domain: str = ""
    account: str = ""


def host_name(header: str | None) -> tuple[str, bool] | None:
    """``Host:`` header -> (lower-case name or IP text, is an IP), port and a
    trailing dot removed; None when it is not a valid host."""
    if header is None:
        return None
    text = header.strip().lower()
    if not text or len(text) > MAX_HOST + 8:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        try:
            return str(ipaddress.IPv6Address(inner)), True
        except ValueError:
            return None
    name, sep, port = text.rpartition(":")
    if sep:
        if not port.isdigit() or len(port) > 5:
            return None
        text = name
    text = text.rstrip(".")
    try:
        return str(ipaddress.IPv4Address(text)), True
    except ValueError:
        pass
    if len(text) > MAX_HOST or not _NAME.fullmatch(text):
        return None
    return text, False


def detect(router: Router, host_header: str | None, server_ip: str | None = None) -> WebTarget:
    """Place a request (web.md §3). Blocking (reads the Router's snapshot)."""
    _, snap = router.current()
    parsed = host_name(host_header)
    if parsed is None and host_header is None and server_ip:
        parsed = (server_ip.removeprefix("::ffff:"), True)
    if parsed is None:
        return WebTarget(Place.UNKNOWN, _printable(host_header or ""))
    host, is_ip = parsed
    if is_ip:
        domain = snap.ip_domains.get(host) or snap.main_domain
        return WebTarget(Place.DOMAIN, host, domain)
    result = router.route(f"LoginPage@{host}", Kind.ACCESS, trusted=True)
    if result.error is None and len(result.routes) == 1:
        route = result.routes[0]
        if route.module == "DOMAIN" and route.queue:
            return WebTarget(Place.DOMAIN, host, route.queue)
        if route.module == "LOCAL" and "@" in route.queue and not route.mailbox:
            return WebTarget(Place.SITE, host, route.queue.rpartition("@")[2], route.queue)
    return WebTarget(Place.UNKNOWN, host)


def _printable(text: str) -> str:
    """A bad Host header as safe text for a log line or an error page."""
    return re.sub(r"[^a-zA-Z0-9.:_\[\]-]", "?", text[:100])
