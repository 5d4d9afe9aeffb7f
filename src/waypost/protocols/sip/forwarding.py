"""Proxy forwarding rules of RFC 3261 §16, pure: parsed messages in, parsed
messages out; no sockets, clocks, storage or services. The stateful engine
(``proxy.py``) calls these; the fuzzers call them on anything that parses.

Invariants:

* Nothing here changes a message it is given: every function that edits
  returns a copy (:meth:`SipMessage.copy`), so a proxy can fork one request
  into many.
* For any message :func:`~wire.parse_message` accepted, :func:`validate`
  and :func:`next_hop` answer a :class:`Refusal` (status, reason, extra
  header fields) or go on, and the other functions raise nothing but
  :class:`~syntax.SipError` (a malformed Route, 400); the fuzz target
  ``tests/fuzz/test_fuzz_sip_forwarding.py`` holds them to it.
* Our own Via on a forwarded request has a branch ``z9hG4bK`` + ``wp`` +
  the request's loop hash + ``.`` + a per-branch suffix, so a request that
  comes back is recognised by the hash (§16.3 step 4) and two branches of
  one request never share a branch parameter (§16.6 step 8).

Choices where RFC 3261 leaves one:

* **Loop hash** (§16.6 step 8, as RFC 5393 §4.2 corrects it): SHA-256 over
  the Request-URI, the From and To tags, the Call-ID, the CSeq number and the
  Route, Proxy-Require and Proxy-Authorization fields *after* our own Route
  is removed, and no Via at all (a looped request arrives with other Vias on
  top, so hashing the top Via, as RFC 3261 suggests, would never match). A
  request that comes back with an equal hash has looped (482); one that was
  retargeted (another Request-URI) is spiralling and is forwarded. Not
  Proxy-Authorization either: the proxy consumes its own credentials, so a
  looped request comes back without them.
* **Max-Forwards 0** is a 483 for every method: OPTIONS to this server is
  answered by ``core`` before the proxy sees it, and an OPTIONS for anybody
  else is not ours to answer (§16.3 step 3 allows either).
* **Proxy-Require**: this proxy supports no extension, so every option
  tag listed is a 420 with ``Unsupported`` naming them (§16.3 step 5).
* **Route naming us** (§16.4): every Route entry on top that names this
  server is removed (a double Record-Route, RFC 5658, or a spiral leaves
  two); a Request-URI that is our Record-Route URI (our address, no user)
  with Route entries present comes from a strict router, and the last
  Route entry becomes the Request-URI. A Route entry naming one of our
  domains without a user (a phone's outbound proxy setting) is ours too.
* **Record-Route** is added to the dialog-creating requests (INVITE,
  SUBSCRIBE, REFER, NOTIFY; §12.1, RFC 6665 §4.1.1) that are not yet in a
  dialog (no To tag), always with ``lr``; ``sips`` when the Request-URI is;
  twice (RFC 5658) when the copy leaves by another transport or address
  than the request came in by, so each side reaches us its own way.
* **Best response** (§16.7 step 6): a 6xx if any (the lowest), else the
  lowest class; inside the 4xx class 401, 407, 415, 420 and 484 first
  (the RFC's SHOULD), then the lowest code; none at all is a 408. A 503
  becomes 500 and loses its Retry-After (§16.7 step 6: the far end was
  unavailable, not this server). 401/407 carry every challenge of every
  401/407 received (step 7), each value once.
* **3xx** responses are forwarded to the caller, never recursed on: the
  caller's user agent decides where to go next, as Kamailio does by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from waypost.protocols.sip.headers import Headers, NameAddr, Via, parse_name_addr
from waypost.protocols.sip.syntax import Params, SipError
from waypost.protocols.sip.uri import SipUri, Uri, host_key, parse_uri
from waypost.protocols.sip.wire import (
    MAGIC_COOKIE,
    SipMessage,
    SipRequest,
    SipResponse,
    response_for,
)

BRANCH_PREFIX = MAGIC_COOKIE + "wp"
"""Start of the branch parameter of every Via this proxy adds."""
DEFAULT_MAX_FORWARDS = 70
"""§16.6 step 3 (and §8.1.1.6): the value a request without one gets."""
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
"""Methods that may create a dialog, so the proxy Record-Routes them."""
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
PREFERRED_4XX = (401, 407, 415, 420, 484)
"""§16.7 step 6: the 4xx responses a proxy should prefer, in this order."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The response a request gets instead of being forwarded."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def response(self, request: SipRequest) -> SipResponse:
        """This refusal as a response to ``request`` (§8.2.6)."""
        out = response_for(request, self.status, self.reason)
        for name, value in self.headers:
            out.headers.add(name, value)
        return out


@dataclass(frozen=True, slots=True)
class Us:
    """What names this proxy: the (host, port) pairs it listens on and signs
    Vias and Record-Routes with, and host names (local domains, its own
    names) that mean it on any port it listens on."""

    addresses: frozenset[tuple[str, int]] = frozenset()
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, addresses: Sequence[tuple[str, int]], names: Sequence[str] = ()) -> Us:
        return cls(frozenset((host_key(h), p) for h, p in addresses),
                   frozenset(host_key(n.rstrip(".")) for n in names))

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(p for _, p in self.addresses)

    def owns_host(self, host: str, port: int | None, secure: bool = False, *,
                  names: bool = True) -> bool:
        """Whether ``host:port`` is this server (no port: the scheme's
        default); by one of its names too unless ``names`` is false."""
        key = host_key(host.rstrip("."))
        port = port if port is not None else (5061 if secure else 5060)
        if (key, port) in self.addresses:
            return True
        return names and key in self.names and (port in self.ports or not self.addresses)

    def owns_uri(self, uri: Uri, *, names: bool = True) -> bool:
        """A URI naming this server itself (no user part): one we put in a
        Record-Route, or (``names``) a Route to one of our names."""
        if not isinstance(uri, SipUri) or uri.user is not None:
            return False
        host = uri.maddr or uri.host
        return self.owns_host(host, uri.port, uri.scheme == "sips", names=names)

    def owns_via(self, via: Via) -> bool:
        """A Via this proxy added: our branch prefix and our sent-by."""
        branch = via.branch or ""
        return branch.startswith(BRANCH_PREFIX) and self.owns_host(
            via.host, via.port, via.transport.upper() == "TLS")


# --------------------------------------------------------------------------
# §16.3 request validation


def loop_hash(request: SipRequest) -> str:
    """The branch hash of §16.6 step 8 (see the module notes for what it covers)."""
    h = hashlib.sha256()

    def part(text: str | None) -> None:
        h.update((text or "").encode("utf-8", "surrogateescape") + b"\x00")

    part(str(request.uri))
    for name in ("From", "To"):
        try:
            part(parse_name_addr(request.single(name), name).tag)
        except SipError:
            part(None)
    part(request.headers.get("Call-ID"))
    try:
        part(str(request.cseq.number))
    except SipError:
        part(None)
    for name in ("Route", "Proxy-Require"):
        for value in request.headers.fields(name):
            part(value)
    return h.hexdigest()[:20]


def branch_for(request: SipRequest, suffix: str) -> str:
    """A branch for one forwarded copy of ``request`` (as received, after
    :func:`preprocess_routes`): our prefix, its loop hash and ``suffix``,
    which tells branches of one request apart."""
    return f"{BRANCH_PREFIX}{loop_hash(request)}.{suffix}"


def stateless_branch(request: SipRequest) -> str:
    """The branch a statelessly forwarded request gets (§16.11): a function
    of the request, so its retransmissions get the same one. The received
    top Via's branch tells apart two ACKs with the same loop hash."""
    try:
        received = request.top_via.branch or str(request.top_via)
    except SipError:
        received = ""
    digest = hashlib.sha256(received.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return branch_for(request, "s" + digest)


def validate(request: SipRequest, us: Us) -> Refusal | None:
    """§16.3 steps 2-5 for a request this proxy is about to forward (after
    :func:`preprocess_routes`): None when it may go on. ACK and CANCEL are
    not checked for loops (they get no response of their own from a loop)."""
    try:
        if not isinstance(request.uri, SipUri):
            return Refusal(416, "Unsupported URI Scheme")
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            return Refusal(483, "Too Many Hops")
        required = [v for v in request.headers.values("Proxy-Require") if v]
        if required:
            return Refusal(420, "Bad Extension", (("Unsupported", ", ".join(required)),))
        if request.method not in ("ACK", "CANCEL") and looped(request, us):
            return Refusal(482, "Loop Detected")
    except SipError as exc:
        return Refusal(exc.status or 400, exc.reason)
    return None


def looped(request: SipRequest, us: Us) -> bool:
    """§16.3 step 4: one of our Vias carries this request's loop hash."""
    mine = loop_hash(request)
    for via in request.vias:
        branch = via.branch or ""
        if us.owns_via(via) and branch[len(BRANCH_PREFIX):].split(".", 1)[0] == mine:
            return True
    return False


# --------------------------------------------------------------------------
# §16.4 route information preprocessing


@dataclass(frozen=True, slots=True)
class Preprocessed:
    """A request after §16.4, and whether a Route entry naming us was removed
    (an in-dialog request that we Record-Routed carries one)."""

    request: SipRequest
    our_route: bool


def preprocess_routes(request: SipRequest, us: Us) -> Preprocessed:
    """§16.4: a strict router's Request-URI naming us is replaced by the last
    Route entry; every Route entry naming us on top is removed."""
    out = request.copy()
    routes = out.name_addrs("Route")
    our_route = False
    if routes and us.owns_uri(out.uri, names=False):
        out.uri = routes[-1].uri
        routes = routes[:-1]
        our_route = True
    while routes and us.owns_uri(routes[0].uri):
        routes = routes[1:]
        our_route = True
    if our_route:
        _set_list(out, "Route", [str(r) for r in routes])
    return Preprocessed(out, our_route)


def _set_list(message: SipMessage, name: str, values: Sequence[str]) -> None:
    """``name`` as one field per value, where its first field was (else on top)."""
    fields = list(message.headers)
    key = name.lower()
    at = next((i for i, (n, _) in enumerate(fields) if n.lower() == key), 0)
    kept = [(n, v) for n, v in fields[:at] if n.lower() != key]
    rest = [(n, v) for n, v in fields[at:] if n.lower() != key]
    message.headers = Headers([*kept, *((name, v) for v in values), *rest])


# --------------------------------------------------------------------------
# §16.6 forwarding a copy


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes next (§16.6 step 7, RFC 3263 §4): the host (a
    ``maddr`` wins), its port and transport when written, and ``secure``
    for a ``sips`` URI. ``uri`` is the URI they come from."""

    uri: SipUri
    host: str
    port: int | None
    transport: str | None
    secure: bool


def target_of(uri: SipUri) -> Target:
    transport = uri.transport
    secure = uri.scheme == "sips"
    if secure and transport in (None, "tcp"):
        transport = "tls"
    return Target(uri, (uri.maddr or uri.host).removeprefix("[").removesuffix("]"),
                  uri.port, transport, secure)


def next_hop(request: SipRequest) -> Target | Refusal:
    """The first Route entry's URI, else the Request-URI (§16.6 step 7)."""
    try:
        routes = request.name_addrs("Route")
    except SipError as exc:
        return Refusal(exc.status or 400, exc.reason)
    uri = routes[0].uri if routes else request.uri
    if not isinstance(uri, SipUri):
        return Refusal(416, "Unsupported URI Scheme")
    return target_of(uri)


def record_route(sent_by: tuple[str, int], transport: str, *, secure: bool = False) -> NameAddr:
    """Our Record-Route entry (§16.6 step 4): our address, ``lr`` always,
    ``transport`` for streams so in-dialog requests come back the same way
    (``tls`` only on a ``sip:`` URI; a ``sips:`` URI implies it)."""
    host, port = sent_by
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    params: list[tuple[str, str | None]] = []
    if transport.lower() in ("tcp", "tls") and not secure:
        params.append(("transport", transport.lower()))
    params.append(("lr", None))
    return NameAddr(SipUri("sips" if secure else "sip", host, port=port, params=Params(
        tuple(params))))


def record_routes(incoming: NameAddr, outgoing: NameAddr) -> tuple[NameAddr, ...]:
    """The Record-Route entries of one copy: one when both sides reach us
    by the same URI, else two (RFC 5658 §3.2: the one facing the next hop
    on top, the one facing the caller below)."""
    return (incoming,) if str(incoming) == str(outgoing) else (outgoing, incoming)


def is_dialog_creating(request: SipRequest) -> bool:
    if request.method not in DIALOG_CREATING:
        return False
    try:
        return request.to.tag is None
    except SipError:
        return False


def forward_copy(request: SipRequest, *, target: Uri | None, via_transport: str,
                 sent_by: tuple[str, int], branch: str,
                 record: NameAddr | Sequence[NameAddr] | None = None,
                 max_breadth: int | None = None) -> SipRequest:
    """The copy of ``request`` sent on one branch (§16.6 steps 1-8):
    Request-URI set to ``target`` (None keeps it), Max-Forwards one less (70
    when absent), ``record`` (one entry or several, top first) added on top
    of Record-Route for a
    dialog-creating request, a strict router's Route rewritten (step 6),
    ``Max-Breadth`` set (RFC 5393) and our Via on top with ``branch`` and
    ``rport`` (RFC 3581, so the answer comes back to the port we sent from)."""
    out = request.copy()
    if target is not None:
        out.uri = target
    max_forwards = request.max_forwards
    out.headers.set("Max-Forwards", str(
        DEFAULT_MAX_FORWARDS if max_forwards is None else max(max_forwards - 1, 0)))
    if record is not None and is_dialog_creating(request):
        entries = [record] if isinstance(record, NameAddr) else list(record)
        for entry in reversed(entries):
            out.headers.add("Record-Route", str(entry), first=True)
    routes = out.name_addrs("Route")
    if routes and isinstance(routes[0].uri, SipUri) and not routes[0].uri.loose_route:
        # §16.6 step 6: the next hop is a strict router
        _set_list(out, "Route", [str(r) for r in routes[1:]] + [f"<{out.uri}>"])
        out.uri = routes[0].uri
    if max_breadth is not None:
        out.headers.set("Max-Breadth", str(max_breadth))
    host, port = sent_by
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    via = Via(via_transport.upper(), host, port, Params((("branch", branch), ("rport", None))))
    out.headers.add("Via", str(via), first=True)
    return out


def breadth_shares(incoming: int | None, limit: int, branches: int) -> list[int]:
    """RFC 5393 §5.3: the Max-Breadth of each of ``branches`` parallel
    copies, their sum at most the incoming value (else ``limit``, the
    server's own ceiling); fewer shares than branches means only that many
    may be forked; none means 440 Max-Breadth Exceeded."""
    total = min(incoming, limit) if incoming is not None else limit
    count = min(branches, total)
    if count <= 0:
        return []
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def max_breadth_of(request: SipRequest) -> int | None:
    """The Max-Breadth header (RFC 5393 §5.1); a malformed one counts as absent."""
    value = request.headers.get("Max-Breadth")
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) <= 10 else None


# --------------------------------------------------------------------------
# §16.7 response processing


def strip_via(response: SipResponse) -> SipResponse | None:
    """The response without its top Via (ours, §16.7 step 3); None when no
    Via is left (the response was for this proxy itself)."""
    out = response.copy()
    out.headers.pop_first_value("Via")
    if not out.headers.values("Via"):
        return None
    return out


@dataclass(frozen=True, slots=True)
class ViaHop:
    """Where a response goes by a Via (§18.2.2, RFC 3581 §4): ``host`` may
    be a name when no ``received`` was stamped."""

    transport: str
    host: str
    port: int


def response_hop(response: SipMessage) -> ViaHop:
    """The next hop of a response by its (new) top Via; raises SipError."""
    via = response.top_via
    transport = via.transport.lower()
    host = (via.received or via.maddr or via.host).removeprefix("[").removesuffix("]")
    port = via.rport if via.rport is not None and via.received is not None else None
    if port is None:
        port = via.port or DEFAULT_PORTS.get(transport, 5060)
    return ViaHop(transport, host, port)


def _chosen(finals: Sequence[SipResponse]) -> SipResponse | None:
    if not finals:
        return None
    sixes = [r for r in finals if r.status >= 600]
    if sixes:
        return min(sixes, key=lambda r: r.status)
    low = min(r.status // 100 for r in finals)
    pool = [r for r in finals if r.status // 100 == low]
    for status in PREFERRED_4XX if low == 4 else ():
        for response in pool:
            if response.status == status:
                return response
    return min(pool, key=lambda r: r.status)


def choose_response(request: SipRequest, finals: Sequence[SipResponse]) -> SipResponse:
    """The final response to send back from the finals of every branch
    (their Via already stripped): §16.7 step 6 and 7, see the module notes."""
    chosen = _chosen(finals)
    if chosen is None:
        return response_for(request, 408, "Request Timeout")
    out = chosen.copy()
    if out.status == 503:
        out.status, out.reason = 500, "Server Internal Error"
        out.headers.remove("Retry-After")
    if out.status in (401, 407):
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            have = out.headers.fields(name)
            for other in finals:
                if other is chosen or other.status not in (401, 407):
                    continue
                for value in other.headers.fields(name):
                    if value not in have:
                        out.headers.add(name, value)
                        have.append(value)
    return out


def forward_now(status: int) -> bool:
    """§16.7 step 5: provisional responses but 100, and every 2xx, go to the
    caller at once; the other finals wait for the best response."""
    return 100 < status < 300


# --------------------------------------------------------------------------
# §9.1 CANCEL


def cancel_for(sent: SipRequest) -> SipRequest:
    """The CANCEL of a forwarded request (§9.1): same Request-URI, Call-ID,
    To, From, CSeq number and Route; one Via, the top Via of the request
    cancelled (so it matches its transaction, §9.2)."""
    headers = Headers()
    headers.add("Via", sent.headers.values("Via")[0])
    for name in ("Route",):
        for value in sent.headers.fields(name):
            headers.add(name, value)
    headers.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
    for name in ("From", "To", "Call-ID"):
        headers.add(name, sent.single(name))
    headers.add("CSeq", f"{sent.cseq.number} CANCEL")
    return SipRequest("CANCEL", sent.uri, headers)


def uri_from_text(text: str) -> SipUri | None:
    """A contact or target URI text as a SIP URI, or None when it is none."""
    try:
        uri = parse_uri(text.strip().removeprefix("<").removesuffix(">"), "URI")
    except SipError:
        return None
    return uri if isinstance(uri, SipUri) else None

