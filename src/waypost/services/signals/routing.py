"""Where a SIP request goes: the Router's answer for its Request-URI (sip.md §2, §4).

The proxy hands over plain values (:class:`SignalRequest`); :func:`decide`
routes the Request-URI with kind ``signal`` through the one Router
(router.md §4), so aliases, forwarders, ``user%domain``, ``Signal:``
records and the domain's ``SignalToUnknown`` act exactly as for mail, and
turns the route into one of four decisions: :class:`Local` (fork to the
account's registrations), :class:`Remote` (send to the next hop,
``nexthop.resolve``), :class:`Itself` (the URI names this server) or
:class:`Refuse` (answer with that status).

Invariants:

* Synchronous and free of network I/O; it reads the store (bindings, the
  settings on a change), so it runs in a worker thread, except through
  :func:`decide_now`: the same decision made on the event loop from what
  is in memory (the Router's current table, the trust list of the current
  settings, bindings read less than ``registrar.BINDINGS_TTL`` ago), or
  None when something must be read first. The proxy asks it first and
  calls :func:`decide` in a thread only then: a thread per call costs
  more than the decision.
* The relaying decision is the Router's (``router.route.decide_relaying``
  through ``Router.route``): the source is trusted when ``authenticated``
  is set or ``source_ip`` is in ``ClientIPAddresses``; an untrusted source
  whose final route is remote gets ``403`` unless a ``Relay:``/``RelayAll:``
  record allowed it (router.md §8.3, sip.md §4).
* Bindings come from the registrar's store and only live ones
  (``expires`` after now) are used; ``Local.contacts`` is never empty.

Choices where the specs are silent:

* **407 before relaying out.** A request that is not authenticated, whose
  From routes (as a signal) to a local account and that would be relayed
  out (a :class:`Remote`, or the 403 of relaying) is refused with ``407``
  whatever its source address, so nobody calls out under a local user's
  name without that user's password (the Kamailio default configuration
  does the same). The realm is the domain of
  that account (the From domain, after aliases: the realm the digest
  verification uses). ACK and CANCEL are never challenged (RFC 3261 §22.1).
* **The From of an authenticated request is the account's.** RFC 3261
  §22.3 leaves it to policy what an authenticated identity may claim; a
  provider's policy: a request whose Proxy-Authorization proved an account
  but whose From routes (as a signal: aliases, ``user%domain``) to another
  account, or to no local account, is ``403``, so nobody calls as a
  colleague (or as a stranger) with their own password. ACK and CANCEL are
  exempt (never challenged, §22.1).
* **Contact order.** Highest ``q`` first; a contact registered without
  ``q`` counts as ``q=1.0``; equal ``q``: the most recent registration
  first.
* **Groups** (a signal fork, router.md §7.2): the contacts of every member
  that is a local account, in one :class:`Local` named after the first such
  account; remote members are left out (one decision has one kind); a
  group without local contacts goes to its first remote member.
* **Request-URI of a remote route.** When no record or object rewrote the
  address, the Request-URI is sent as it came (port, ``transport=`` and
  other parameters kept: RFC 3261 §16.6 step 1); after a rewrite it is
  ``scheme:user@host`` of the routed address (the host part restored as
  sip.md §3 says), its port the route's (a ``host.port._via``), no
  ``transport``.
* **A URI without a user part**: naming a server domain, a domain alias or
  one of this server's addresses it is :class:`Itself`; another host is
  routed like an address in that domain (so ``Signal:`` domain records
  apply) and ends :class:`Remote`, or :class:`Itself` when the records make
  it local. An own IP address with any port is this server, with or
  without a user (the Router's rule, router.md §1.3: ``sip:bob@127.0.0.1:5070``
  is Main Domain ``bob``); reach a peer on loopback through a ``._via``
  record.
* **Statuses**: a scheme other than ``sip``/``sips`` ``416``; a URI with no
  host or an empty user part ``400``; unknown names, unknown domains, unqualified names, mailing
  lists and ``SignalToUnknown`` = ``Discarded`` ``404`` (router.md §7.3:
  Discarded is 404 without logging); no live registration ``480``; a
  routing loop in the Router table ``500``.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from urllib.parse import quote

from waypost.services.container import Services
from waypost.services.router.address import SipTarget, ip_literal, sip_target, strip_sip_uri
from waypost.services.router.route import ALWAYS_OWN_IPS, ErrorKind, Route, RouteResult
from waypost.services.router.route import route as route_address
from waypost.services.signals.registrar import WouldBlock, live_bindings, router_tables
from waypost.services.trust import ClientTrust
from waypost.storage.interface import NotFound, SipBinding, Store


@dataclass(frozen=True, slots=True)
class SignalRequest:
    """What routing needs of a request (the proxy fills it from the wire)."""

    method: str
    request_uri: str
    from_uri: str
    source_ip: str
    authenticated: str | None  # account proven by Proxy-Authorization, else None


@dataclass(frozen=True, slots=True)
class Local:
    """Fork to these contact URIs of ``account`` (highest q first, never empty)."""

    account: str
    contacts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Remote:
    """Send ``target`` (the Request-URI) towards ``host`` (``port`` when the
    route or URI wrote one, ``transport`` from the URI's ``transport=``)."""

    target: str
    host: str
    port: int | None
    transport: str | None


@dataclass(frozen=True, slots=True)
class Itself:
    """The URI names this server or a local domain with no user."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with ``status`` and ``reason``; ``realm`` for a 407 challenge."""

    status: int
    reason: str
    realm: str | None = None


Decision = Local | Remote | Itself | Refuse

NOT_FOUND = Refuse(404, "Not Found")
FORBIDDEN = Refuse(403, "Forbidden")
UNAVAILABLE = Refuse(480, "Temporarily Unavailable")
NO_USER = "~sip-no-user~"
"""Stands for the missing user part while a user-less URI's host is routed."""
_UNCHALLENGED = frozenset({"ACK", "CANCEL"})
_USER_SAFE = "-_.!~*'()&=+$,;?/"  # RFC 3261 §25.1 unreserved and user-unreserved
_DEFAULT_Q = 1000


# -- trust, cached per store version ------------------------------------------------


class _TrustCache:
    """``ClientIPAddresses`` of the current settings, re-read only after a
    store change (``Store.version()`` is cheap; settings are not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_store: weakref.WeakKeyDictionary[Store, tuple[int, ClientTrust]] = (
            weakref.WeakKeyDictionary())

    def trusted(self, services: Services, ip: str, *, block: bool = True) -> bool:
        store = services.store
        version = store.version()
        with self._lock:
            cached = self._by_store.get(store)
        if cached is None or cached[0] != version:
            if not block:
                raise WouldBlock
            cached = (version, ClientTrust(services.settings()))
            with self._lock:
                self._by_store[store] = cached
        return cached[1].is_trusted(ip)


_TRUST = _TrustCache()


def _route(services: Services, address: str, *, trusted: bool, block: bool) -> RouteResult:
    table, snap = router_tables(services, block)
    return route_address(address, "signal", trusted, table, snap)


# -- the decision -------------------------------------------------------------------


def decide(services: Services, request: SignalRequest) -> Decision:
    """Route ``request.request_uri`` (kind ``signal``) and say what to do with
    the request. Blocking (store reads): call it in a worker thread."""
    return _decide(services, request, block=True)


def decide_now(services: Services, request: SignalRequest) -> Decision | None:
    """:func:`decide` from memory only, without blocking (the event loop
    may call it); None when :func:`decide` must run in a thread."""
    try:
        return _decide(services, request, block=False)
    except WouldBlock:
        return None


def _decide(services: Services, request: SignalRequest, *, block: bool) -> Decision:
    target = sip_target(request.request_uri)
    if target is None or target.scheme not in ("sip", "sips"):
        return Refuse(416, "Unsupported URI Scheme")
    if not target.host or (target.user is not None and not target.user):
        return Refuse(400, "Bad Request")
    if target.user is None and _names_this_server(services, target.host, block):
        return Itself()
    if (request.authenticated is not None and request.method.upper() not in _UNCHALLENGED
            and not _same_account(local_account(services, request.from_uri, block=block),
                                  request.authenticated)):
        return FORBIDDEN
    trusted = request.authenticated is not None or _TRUST.trusted(
        services, request.source_ip, block=block)
    address = target.address() if target.user is not None else f"{NO_USER}@{target.host}"
    result = _route(services, address, trusted=trusted, block=block)
    decision = _decision(services, request.request_uri, target, result, block)
    relayed = isinstance(decision, Remote) or (
        decision == FORBIDDEN and result.error is not None
        and result.error.kind is ErrorKind.RELAY_DENIED)
    if (relayed and request.authenticated is None
            and request.method.upper() not in _UNCHALLENGED):
        realm = _local_from_domain(services, request.from_uri, block)
        if realm is not None:
            return Refuse(407, "Proxy Authentication Required", realm=realm)
    return decision


def _decision(services: Services, uri: str, target: SipTarget, result: RouteResult,
              block: bool) -> Decision:
    """The Router's result for the URI as a decision, before any challenge."""
    transport = target.param("transport")
    if result.error is not None and not result.routes:
        if target.user is None and result.error.kind is ErrorKind.UNKNOWN_USER:
            return Itself()
        return _refusal(result)
    if target.user is None:
        remote = next((r for r in result.routes if r.module == "SIP"), None)
        if remote is None:
            return Itself()
        return _remote(uri, target.scheme, None, target.host, target.port, transport, remote)
    return _final(services, uri, target.scheme, target.user, target.host, target.port,
                  transport, result, block)


def _names_this_server(services: Services, host: str, block: bool = True) -> bool:
    """A server domain, a domain alias, or one of our IP addresses (router.md §1.3)."""
    snap = router_tables(services, block)[1]
    ip = ip_literal(host)
    if ip is not None:
        return ip in snap.own_ips or ip in ALWAYS_OWN_IPS or ip in snap.ip_domains
    return snap.real_domain(host) is not None


def local_account(services: Services, uri: str, *, block: bool = True) -> str | None:
    """The one local account a SIP URI (or plain address) routes to as a
    signal, or None. Blocking unless ``block`` is false (see :func:`decide_now`)."""
    address = strip_sip_uri(uri)
    if not address or "@" not in address:
        return None
    result = _route(services, address, trusted=True, block=block)
    if result.error or len(result.routes) != 1 or result.routes[0].module != "LOCAL":
        return None
    return result.routes[0].queue


def _same_account(a: str | None, b: str) -> bool:
    return a is not None and a.lower() == b.lower()


def _local_from_domain(services: Services, from_uri: str, block: bool) -> str | None:
    account = local_account(services, from_uri, block=block)
    return account.rpartition("@")[2] if account else None


def _refusal(result: RouteResult) -> Refuse:
    error = result.error
    assert error is not None
    if error.kind is ErrorKind.RELAY_DENIED:
        return FORBIDDEN
    if error.kind is ErrorKind.LOOP:
        return Refuse(500, "Routing Loop")
    return NOT_FOUND


def _final(services: Services, uri: str, scheme: str, user: str, host: str, port: int | None,
           transport: str | None, result: RouteResult, block: bool) -> Decision:
    """Routes to a decision: local contacts first, else the first remote route."""
    accounts: list[str] = []
    bindings: list[SipBinding] = []
    first_remote: Route | None = None
    now = time.time()
    for route in result.routes:
        if route.module == "LOCAL":
            accounts.append(route.queue)
            bindings.extend(_live_bindings(services, route.queue, now, block))
        elif route.module == "SIP" and first_remote is None:
            first_remote = route
    if bindings:
        bindings.sort(key=lambda b: (-(b.q if b.q is not None else _DEFAULT_Q), -b.registered))
        contacts = tuple(dict.fromkeys(b.contact for b in bindings))
        return Local(_owner(accounts, bindings), contacts)
    if first_remote is not None:
        return _remote(uri, scheme, user, host, port, transport, first_remote)
    if accounts:
        return UNAVAILABLE
    return NOT_FOUND  # DISCARD(): SignalToUnknown = Discarded


def _owner(accounts: list[str], bindings: list[SipBinding]) -> str:
    """The account the decision names: the first one that has contacts."""
    with_contacts = {f"{b.account}@{b.domain}".lower() for b in bindings}
    return next((a for a in accounts if a.lower() in with_contacts), accounts[0])


def _live_bindings(services: Services, account: str, now: float, block: bool
                   ) -> list[SipBinding]:
    try:
        found = live_bindings(services, account, now, block=block)
    except NotFound:  # deleted between routing and this read
        return []
    if found is None:
        raise WouldBlock
    return found


def _remote(uri: str, scheme: str, user: str | None, host: str, port: int | None,
            transport: str | None, route: Route) -> Remote:
    """A remote route as a :class:`Remote`; the URI as it came when the
    route did not change the address (§16.6 step 1), else rebuilt."""
    route_host, route_port = route.host_port()
    local, _, domain = route.address.rpartition("@")
    if user is None:
        unchanged = _same_host(domain, host) and local == NO_USER
    else:
        unchanged = _same_host(domain, host) and local == user
    if unchanged and _same_host(route_host, host) and route_port is None:
        text = uri.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1].strip()
        return Remote(text, _hop_host(host), port, transport.lower() if transport else None)
    host_text = _uri_host(domain)
    if user is None or local == NO_USER:
        target = f"{scheme}:{host_text}"
    else:
        target = f"{scheme}:{quote(local, safe=_USER_SAFE)}@{host_text}"
    return Remote(target, _hop_host(route_host), route_port, None)


def _same_host(a: str, b: str) -> bool:
    ip_a, ip_b = ip_literal(a), ip_literal(b)
    if ip_a is not None or ip_b is not None:
        return ip_a == ip_b
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def _uri_host(host: str) -> str:
    """A host as a SIP URI and the next hop take it: IPv4 as it is, IPv6 in
    brackets, names lower case."""
    ip = ip_literal(host)
    if ip is None:
        return host.lower().rstrip(".")
    return f"[{ip}]" if ":" in ip else ip


def _hop_host(host: str) -> str:
    """A host as ``nexthop.resolve`` takes it: an IP without brackets, names lower case."""
    ip = ip_literal(host)
    return ip if ip is not None else host.lower().rstrip(".")


__all__ = [
    "Decision",
    "Itself",
    "Local",
    "Refuse",
    "Remote",
    "SignalRequest",
    "decide",
    "decide_now",
    "local_account",
]
