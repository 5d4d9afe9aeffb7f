"""The routing algorithm (router.md §4, §6, §7) and the relaying decision (§8).

``route()`` is a pure function of the address, its kind, the source's trust,
the compiled table and a :class:`DirectorySnapshot`. It returns one route per
final destination (a group expands to several) or an error, and, when asked,
every step that led there, for ``waypost route --explain``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from enum import StrEnum

from waypost.services.router.address import (
    Address,
    AddressError,
    ip_literal,
    ip_queue,
    normalise_domain,
    parse_address,
    resplit,
    sip_target,
    strip_sip_uri,
)
from waypost.services.router.table import CompiledTable, Kind
from waypost.services.router.view import (
    DirectorySnapshot,
    DirObject,
    ObjectKind,
    UnknownMode,
    UnknownPolicy,
)

MAX_STEPS = 10
"""[waypost] Rewrites allowed for one address before "routing loop" (§4; the
figure is unconfirmed in CGP)."""

ALWAYS_OWN_IPS = frozenset({"127.0.0.1", "0.0.0.0"})


class ErrorKind(StrEnum):
    UNKNOWN_USER = "unknown user account"
    RELAY_DENIED = "relaying prohibited"
    LOOP = "routing loop"
    UNQUALIFIED = "unqualified domain name"
    UNKNOWN_DOMAIN = "unknown domain"
    BAD_ADDRESS = "invalid address"
    NOT_ALLOWED = "not allowed"


# SMTP reply code and enhanced status for each error (smtp.md §1).
SMTP_REPLIES: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.UNKNOWN_USER: (550, "5.1.1"),
    ErrorKind.RELAY_DENIED: (550, "5.7.1"),
    ErrorKind.LOOP: (554, "5.4.6"),
    ErrorKind.UNQUALIFIED: (550, "5.1.2"),
    ErrorKind.UNKNOWN_DOMAIN: (550, "5.1.2"),
    ErrorKind.BAD_ADDRESS: (501, "5.1.3"),
    ErrorKind.NOT_ALLOWED: (550, "5.7.1"),
}


@dataclass(frozen=True, slots=True)
class Route:
    """``MODULE(queue)address`` (§9).

    ``real_to`` is the original recipient kept for the X-Real-To header of
    unified domain-wide accounts (.local/.domain); ``mailbox`` is set by
    Direct Mailbox Addressing (``account#mailbox``).
    """

    module: str
    queue: str = ""
    address: str = ""
    real_to: str | None = None
    mailbox: str | None = None

    @property
    def remote(self) -> bool:
        return self.module in ("SMTP", "SIP")

    def host_port(self) -> tuple[str, int | None]:
        """The host a remote queue names and its explicit port, if any."""
        queue = self.queue
        if queue.startswith("["):
            host, _, rest = queue[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
            return host.removeprefix("IPv6:"), int(port) if port else None
        host, sep, port = queue.rpartition(":")
        if sep and port.isdigit():
            return host, int(port)
        return queue, None

    def __str__(self) -> str:
        suffix = f"#{self.mailbox}" if self.mailbox else self.address
        return f"{self.module}({self.queue}){suffix}"


@dataclass(frozen=True, slots=True)
class RouteError:
    kind: ErrorKind
    text: str
    address: str = ""
    denied_route: Route | None = None  # the remote route refused for relaying

    @property
    def smtp(self) -> tuple[int, str]:
        return SMTP_REPLIES[self.kind]

    def __str__(self) -> str:
        return f"error: {self.text}"


@dataclass
class RouteResult:
    routes: list[Route] = field(default_factory=list)
    error: RouteError | None = None
    member_errors: list[RouteError] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def lines(self) -> list[str]:
        if self.error:
            return [str(self.error)]
        return [str(r) for r in self.routes]


class _Trace:
    """Collects explanation lines only when asked, so plain routing stays cheap."""

    __slots__ = ("lines", "on")

    def __init__(self, on: bool) -> None:
        self.on = on
        self.lines: list[str] = []

    def add(self, text: str, indent: int = 0) -> None:
        self.lines.append("  " * indent + text)


@dataclass(slots=True)
class _Ctx:
    kind: Kind
    trusted: bool
    table: CompiledTable
    snap: DirectorySnapshot
    trace: _Trace
    max_steps: int


def route(
    address: str,
    kind: Kind | str,
    trusted: bool,
    table: CompiledTable,
    snap: DirectorySnapshot,
    *,
    explain: bool = False,
    max_steps: int = MAX_STEPS,
) -> RouteResult:
    """Route one address. Untrusted sources get the relaying check of §8.3."""
    kind = Kind(kind)
    trace = _Trace(explain)
    ctx = _Ctx(kind, trusted, table, snap, trace, max_steps)
    text = strip_sip_uri(address) if kind is Kind.SIGNAL else address
    result = RouteResult()
    if kind is Kind.SIGNAL and _hostonly_uri(address):
        # ``sip:host`` names a server, not an address: routing it as the
        # local part ``host`` of the Main Domain would be a wrong answer.
        result.error = RouteError(ErrorKind.BAD_ADDRESS,
                                  "invalid address: a SIP URI without a user part", address)
        return result
    try:
        addr = parse_address(text)
    except AddressError as exc:
        result.error = RouteError(ErrorKind.BAD_ADDRESS, f"invalid address: {exc}", address)
        result.steps = trace.lines
        return result
    if trace.on:
        trace.add(f"parsed {text!r}: local part {addr.local!r}, domain part {addr.domain!r}")
    original = text.strip().strip("<>")
    _route_one(ctx, addr, original, result, phase_a=True, visited=frozenset(), depth=0)
    if result.routes:
        result.error = None
    elif result.error is None and result.member_errors:
        result.error = result.member_errors[0]
    if trace.on:
        trace.add("result: " + "; ".join(result.lines()))
    result.steps = trace.lines
    return result


def _hostonly_uri(text: str) -> bool:
    target = sip_target(text)
    return target is not None and target.scheme != "tel" and target.user is None


def _normalise(ctx: _Ctx, addr: Address, depth: int) -> Address:
    """§1.2 and §1.3: strip the Main Domain (and own IPs), re-split ``%``."""
    snap, trace = ctx.snap, ctx.trace
    while True:
        domain = addr.domain
        if domain:
            ip = ip_literal(domain)
            if ip is not None:
                assigned = snap.ip_domains.get(ip)
                if assigned:
                    if trace.on:
                        trace.add(f"IP {domain} is assigned to domain {assigned}", depth)
                    return Address(addr.local, assigned)
                if ip in snap.own_ips or ip in ALWAYS_OWN_IPS:
                    if trace.on:
                        trace.add(f"own IP address {domain} -> Main Domain", depth)
                    addr = Address(addr.local, "")
                    continue
                return addr
            if snap.real_domain(domain) == snap.main_domain:
                if trace.on:
                    trace.add(f"Main Domain {domain!r} stripped -> {addr.local!r}", depth)
                addr = Address(addr.local, "")
                continue
            return addr
        split = resplit(addr)
        if split is addr:
            return addr
        if trace.on:
            trace.add(f"re-split -> local part {split.local!r}, "
                      f"domain part {split.domain!r}", depth)
        addr = split


def _is_local(snap: DirectorySnapshot, addr: Address) -> bool:
    """Local after Phase A (§8.3): Main Domain, a server domain or alias,
    or a unified-account suffix. Own IPs were already emptied."""
    domain = addr.domain
    if not domain:
        return True
    if domain.endswith((".local", ".domain")):
        return True
    return snap.real_domain(domain) is not None


def _remote_route(ctx: _Ctx, addr: Address, original: str) -> Route | RouteError:
    """The route of an address that is not local: ``._via``, IP literal,
    dotted domain, else an error (§4, §6.1, §1.3)."""
    domain = addr.domain
    module = "SIP" if ctx.kind is Kind.SIGNAL else "SMTP"
    if ctx.kind is Kind.ACCESS:
        return RouteError(ErrorKind.UNKNOWN_DOMAIN, f"unknown domain {domain!r}", original)
    if domain.endswith("._via"):
        return _via_route(module, domain[: -len("._via")], addr.local, original)
    ip = ip_literal(domain)
    if ip is not None:
        return Route(module, ip_queue(ip), _cut_domain(addr.local, domain))
    if "." in domain:
        return Route(module, domain, f"{addr.local}@{domain}")
    return RouteError(ErrorKind.UNQUALIFIED, f"unqualified domain name {domain!r}", original)


def _via_route(module: str, host: str, local: str, original: str) -> Route | RouteError:
    """``local@host[.port]._via``: straight to that host; the last ``%`` of
    the local part becomes ``@`` (§6.1)."""
    port = ""
    head, dot, last = host.rpartition(".")
    # ``10.0.0.5._via`` is an address; ``10.0.0.5.26._via`` adds a port.
    if dot and last.isdigit() and ip_literal(host) is None:
        host, port = head, last
        if not 0 < int(port) < 65536:
            return RouteError(ErrorKind.BAD_ADDRESS, f"invalid port {port} in {original!r}")
    if not host:
        return RouteError(ErrorKind.BAD_ADDRESS, f"no host before ._via in {original!r}")
    ip = ip_literal(host)
    if ip is not None:
        if not port:
            queue = ip_queue(ip)
        elif ":" in ip:
            queue = f"{ip_queue(ip)}:{port}"
        else:
            queue = f"{ip}:{port}"
        host_text = ip_queue(ip)
    else:
        queue = f"{host}:{port}" if port else host
        host_text = host
    return Route(module, queue, _cut_domain(local, host_text))


def _cut_domain(local: str, host: str) -> str:
    """The envelope address once the routing domain is cut off."""
    head, sep, tail = local.rpartition("%")
    if sep and head and tail:
        return f"{head}@{tail}"
    return f"{local}@{host}"


def _held(snap: DirectorySnapshot, route: Route, addr: Address) -> bool:
    if not snap.hold_domains:
        return False
    host, _ = route.host_port()
    names = {host.lower(), route.queue.lower(), addr.domain}
    target = route.address.rpartition("@")[2].lower()
    if target:
        names.add(target)
    return any(fnmatch.fnmatchcase(n, p.lower()) for n in names for p in snap.hold_domains)


def _route_one(
    ctx: _Ctx,
    addr: Address,
    original: str,
    result: RouteResult,
    *,
    phase_a: bool,
    visited: frozenset[str],
    depth: int,
) -> None:
    trace, snap, table = ctx.trace, ctx.snap, ctx.table
    relay_permitted = False
    for _step in range(ctx.max_steps):
        addr = _normalise(ctx, addr, depth)
        canonical = addr.canonical().lower()
        found = table.match(canonical, addr.domain, ctx.kind, ctx.trusted)
        if found:
            record, star = found
            new_text = table.rewrite(record, star, addr.local)
            if phase_a and record.relay:
                relay_permitted = True
            if trace.on:
                note = " (relaying permitted)" if record.relay and phase_a else ""
                trace.add(f"Router record line {record.line} `{record.text.strip()}` -> "
                          f"{new_text!r}{note}", depth)
            try:
                addr = parse_address(new_text)
            except AddressError as exc:
                result.error = RouteError(ErrorKind.BAD_ADDRESS, str(exc), original)
                return
            continue
        if phase_a:
            phase_a = False
            if not _is_local(snap, addr):
                _finish_remote(ctx, addr, original, result, relay_permitted, depth)
                return
            if trace.on:
                trace.add(f"{addr.canonical()!r} is local after the Router table: "
                          "accepted from any source", depth)
        try:
            outcome = _local_or_remote(ctx, addr, original, depth, result, visited)
        except AddressError as exc:
            result.error = RouteError(ErrorKind.BAD_ADDRESS, f"invalid address: {exc}", original)
            return
        if isinstance(outcome, Address):
            addr = outcome
            continue
        return
    result.error = RouteError(
        ErrorKind.LOOP, f"routing loop: more than {ctx.max_steps} rewrites", original
    )
    if trace.on:
        trace.add(f"stopped after {ctx.max_steps} rewrites: routing loop", depth)


def _finish_remote(
    ctx: _Ctx, addr: Address, original: str, result: RouteResult, relay_permitted: bool,
    depth: int,
) -> None:
    trace = ctx.trace
    outcome = _remote_route(ctx, addr, original)
    if isinstance(outcome, RouteError):
        result.error = outcome
        if trace.on:
            trace.add(f"{outcome.text}", depth)
        return
    reason = decide_relaying(ctx.trusted, relay_permitted, _held(ctx.snap, outcome, addr))
    if trace.on:
        trace.add(f"remote after the Router table: {outcome}; relaying: {reason[1]}", depth)
    if reason[0]:
        result.routes.append(outcome)
    else:
        result.error = RouteError(
            ErrorKind.RELAY_DENIED, "relaying prohibited", original, denied_route=outcome
        )


def decide_relaying(trusted: bool, relay_record: bool, held: bool) -> tuple[bool, str]:
    """§8.3 for an address that is remote after the Router table.

    The one place the relaying rule lives (the spec asks to keep it in one
    function, as its Relay/RelayAll detail is a reconstruction).
    "Relay to All Hosts We Backup" needs DNS, so the SMTP layer applies it
    to the ``denied_route`` of a refusal.
    """
    if trusted:
        return True, "allowed: trusted source"
    if relay_record:
        return True, "allowed: a Relay:/RelayAll: record was applied"
    if held:
        return True, "allowed: the domain is in Hold Mail for Domains"
    return False, "prohibited: untrusted source and no Relay: record"


def _local_or_remote(
    ctx: _Ctx,
    addr: Address,
    original: str,
    depth: int,
    result: RouteResult,
    visited: frozenset[str],
) -> Address | None:
    """Phase B for one address: suffixes, objects, Unknown settings.

    Returns the next address for a rewrite, or None once the result holds
    the outcome.
    """
    snap, trace, kind = ctx.snap, ctx.trace, ctx.kind
    domain = addr.domain
    if domain.endswith(".local") and kind is not Kind.ACCESS:
        name = domain[: -len(".local")]
        _unified(ctx, snap.main_domain, name, original, result, depth, ".local")
        return None
    if domain.endswith(".domain") and kind is not Kind.ACCESS:
        sec = domain[: -len(".domain")]
        name = addr.local.rpartition("%")[2]
        real = snap.real_domain(sec)
        if real is None:
            result.error = RouteError(ErrorKind.UNKNOWN_DOMAIN, f"unknown domain {sec!r}", original)
            return None
        _unified(ctx, real, name, original, result, depth, ".domain")
        return None
    real = snap.main_domain if not domain else snap.real_domain(domain)
    if real is None:
        outcome = _remote_route(ctx, addr, original)
        if isinstance(outcome, RouteError):
            result.error = outcome
        else:
            if trace.on:
                trace.add(f"remote: {outcome}", depth)
            result.routes.append(outcome)
        return None
    return _lookup_object(ctx, real, addr.local, original, result, depth, visited)


def _unified(
    ctx: _Ctx, domain: str, name: str, original: str, result: RouteResult, depth: int,
    suffix: str,
) -> None:
    """``.local`` / ``.domain``: every address ends in one account (§6.2, §6.3)."""
    obj = ctx.snap.find_object(domain, name)
    if obj is not None and obj.kind is ObjectKind.ALIAS:
        obj = ctx.snap.find_object(domain, obj.targets[0]) if obj.targets else None
    if obj is None or obj.kind is not ObjectKind.ACCOUNT:
        result.error = RouteError(
            ErrorKind.UNKNOWN_USER, f"unknown user account {name}@{domain}", original
        )
        return None
    route = Route("LOCAL", f"{obj.name}@{domain}".lower(), real_to=original)
    if ctx.trace.on:
        ctx.trace.add(f"{suffix}: unified account {route.queue}, X-Real-To {original}", depth)
    result.routes.append(route)
    return None


def _lookup_object(
    ctx: _Ctx,
    domain: str,
    local: str,
    original: str,
    result: RouteResult,
    depth: int,
    visited: frozenset[str],
) -> Address | None:
    snap, trace, kind = ctx.snap, ctx.trace, ctx.kind
    name, hash_sign, mailbox = local.partition("#")
    obj = snap.find_object(domain, name)
    if obj is None and name.lower() == "postmaster" and domain != snap.main_domain:
        if trace.on:
            trace.add(f"{domain}: no 'postmaster' -> postmaster of the Main Domain", depth)
        return Address("postmaster", "")
    if obj is None:
        return _unknown(ctx, domain, name, original, result, depth)
    if trace.on:
        trace.add(f"{domain}: {obj.kind.value} {obj.name!r}", depth)
    if obj.kind is ObjectKind.ACCOUNT:
        route = Route("LOCAL", f"{obj.name}@{domain}".lower())
        if hash_sign and mailbox and kind is Kind.MAIL:
            route = Route("LOCAL", route.queue, mailbox=mailbox)
        result.routes.append(route)
        return None
    if obj.kind is ObjectKind.ALIAS:
        target = obj.targets[0] if obj.targets else ""
        return Address(target + (f"#{mailbox}" if hash_sign else ""), domain)
    if kind is Kind.ACCESS:
        result.error = RouteError(
            ErrorKind.NOT_ALLOWED, f"{obj.name}@{domain} is a {obj.kind.value}: cannot log in",
            original,
        )
        return None
    if obj.kind is ObjectKind.LIST:
        if kind is Kind.MAIL:
            result.routes.append(Route("LIST", f"{obj.name}@{domain}".lower()))
        else:
            result.error = RouteError(
                ErrorKind.NOT_ALLOWED, f"{obj.name}@{domain} is a mailing list", original
            )
        return None
    if obj.kind is ObjectKind.FORWARDER:
        if not obj.targets:
            result.error = RouteError(ErrorKind.UNKNOWN_USER, "forwarder without target", original)
            return None
        return parse_address(obj.targets[0])
    _expand_group(ctx, obj, domain, result, depth, visited)
    return None


def _expand_group(
    ctx: _Ctx, obj: DirObject, domain: str, result: RouteResult, depth: int,
    visited: frozenset[str],
) -> None:
    """A group routes each member on its own; members inherit the trust of
    the original submission and are past Phase A (§8.3)."""
    key = f"{obj.name}@{domain}".lower()
    if key in visited:
        result.member_errors.append(
            RouteError(ErrorKind.LOOP, f"group {key} contains itself", key)
        )
        return None
    visited = visited | {key}
    for member in obj.targets:
        if ctx.trace.on:
            ctx.trace.add(f"member {member!r}", depth + 1)
        sub = RouteResult()
        try:
            addr = parse_address(member)
        except AddressError as exc:
            result.member_errors.append(RouteError(ErrorKind.BAD_ADDRESS, str(exc), member))
            continue
        _route_one(ctx, addr, member, sub, phase_a=False, visited=visited, depth=depth + 1)
        result.routes.extend(r for r in sub.routes if r not in result.routes)
        if sub.error:
            result.member_errors.append(sub.error)
        result.member_errors.extend(sub.member_errors)
    if not obj.targets:
        result.member_errors.append(
            RouteError(ErrorKind.UNKNOWN_USER, f"group {key} is empty", key)
        )
    return None


def _unknown(
    ctx: _Ctx, domain: str, name: str, original: str, result: RouteResult, depth: int
) -> Address | None:
    """No object of that name: the domain's "... to Unknown" setting (§7.3)."""
    snap, trace, kind = ctx.snap, ctx.trace, ctx.kind
    view = snap.domains.get(domain)
    if kind is Kind.ACCESS and name.lower() == "loginpage":
        result.routes.append(Route("DOMAIN", domain))
        if trace.on:
            trace.add(f"LoginPage in {domain}: the domain's login page", depth)
        return None
    policy: UnknownPolicy = UnknownPolicy()
    setting = "MailToUnknown"
    if view is not None:
        if kind is Kind.MAIL:
            policy = view.mail_unknown
        elif kind is Kind.SIGNAL:
            policy, setting = view.signal_unknown, "SignalToUnknown"
        else:
            policy, setting = view.access_unknown, "AccessToUnknown"
    if trace.on:
        extra = f" {policy.reroute!r}" if policy.mode is UnknownMode.REROUTED else ""
        trace.add(f"{domain}: no object {name!r}; {setting} = {policy.mode.value}{extra}", depth)
    if policy.mode is UnknownMode.REROUTED and policy.reroute:
        return parse_address(policy.reroute.replace("*", name))
    if policy.mode is UnknownMode.DISCARDED and kind is not Kind.ACCESS:
        result.routes.append(Route("DISCARD"))
        return None
    if policy.mode is UnknownMode.BOUNCED and kind is Kind.MAIL:
        result.routes.append(Route("BOUNCE", "", f"{name}@{domain}"))
        return None
    result.error = RouteError(ErrorKind.UNKNOWN_USER, f"unknown user account {name}@{domain}",
                              original)
    return None


__all__ = [
    "MAX_STEPS",
    "ErrorKind",
    "Route",
    "RouteError",
    "RouteResult",
    "decide_relaying",
    "normalise_domain",
    "route",
]
