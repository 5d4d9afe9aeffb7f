"""The stateful SIP proxy (RFC 3261 §16): what ``core`` hands every request
to that it does not answer itself. :func:`stateful_proxy` is the
``ProxyFactory``; the forwarding rules themselves are pure, in
``forwarding.py``.

Invariants:

* :meth:`StatefulProxy.handle` never waits for the far end: it answers or
  starts a task and returns, so ``core`` may await it on a stream's read
  loop (a CANCEL behind an INVITE on one TCP connection is never stuck).
* Every request with a server transaction gets exactly one final response
  on it; a later 2xx to an INVITE (another fork answering) goes statelessly
  to the transaction's source (RFC 3261 §16.7 step 5, RFC 6026).
* Every wait is bounded by a setting: DNS by ``SIPDNSTimeout`` (the
  resolver answers 503 itself; one more second here is the backstop), a
  branch by Timer C (``SIPTimerC``, reset by each provisional response) and,
  once cancelled, by ``SIPCancelWait``; non-INVITE branches end by Timer F
  in the transaction layer and by Timer C here at the latest.
* State lives only as long as its request: a response context is dropped
  when its task ends, a branch when its client transaction ends or is given
  up (:meth:`StatefulProxy.pending` counts both; the tests check it is zero).
* Blocking work (settings and directory reads, a routing decision that
  needs the store) runs in worker threads; the routing decision is made on
  the loop when everything it needs is in memory (``routing.decide_now``:
  a thread hand-off per call costs more than the decision); digest checks
  go through ``digest.verify`` and so through the login guard, as the
  registrar's do.

Choices where the RFC or the brief leave one:

* **Stateless requests** (no server transaction: an ACK to a 2xx) are
  forwarded by Route or Request-URI when a Route entry naming us was on
  top (we Record-Routed the dialog). An ACK without any Route (a UA that
  ignores Record-Route, as sipp's built-in ``uac`` scenario does) is routed
  by the decision like a new request: to every contact of a local account
  (the proxy keeps no dialogs; only the UA in the dialog takes the ACK) or
  to a remote target the source may relay to; refused or to the server
  itself, dropped. Anything else without a transaction is dropped, so
  nobody relays through this server without the relaying rules.
* **In-dialog requests** (To tag and a Route entry naming us) follow their
  Route set without a routing decision, as Kamailio's ``loose_route`` does;
  a To tag without our Route is routed like a new request (and so is
  subject to the relaying rules).
* **A pre-loaded Route** (not naming us) on a new request is followed only
  when the routing decision for its Request-URI is a remote relay this
  source may use; for a local target it is a 403, so a Route header cannot
  turn the proxy into an open relay.
* **Proxy-Authorization**: only credentials whose realm is one of our
  domains are checked, the first such only; when they prove an account
  they are removed before forwarding (RFC 3261 §22.3 keeps the others).
  A stale nonce is challenged again with ``stale=true`` when the decision
  asks for authentication.
* **Itself** (the Request-URI names this server or a local domain without
  a user): OPTIONS gets 200; BYE, INFO, UPDATE, PRACK and NOTIFY, which
  exist only inside a dialog, get 481; any other method 405 with ``Allow``.
* **CANCEL** without a matching INVITE transaction gets 481 (this proxy
  never forwards an INVITE statelessly, so there is nothing to pass it on
  to, §16.10). A cancelled INVITE whose branches end without a 2xx answers
  ``487 Request Terminated`` whatever they answered (§9.2: the caller asked
  to stop), and branches that had no provisional response yet are
  cancelled on their first one (§9.1).
* **Failover** (RFC 3263 §4.3): a hop answering 503 or 408 (the layer's
  transport error and Timer B/F) before any provisional response is
  followed by the next hop of the same target, unless the request was
  cancelled; the last hop's answer counts.
* **Forking** follows the contacts' order (highest q first) in parallel,
  at most Max-Breadth (RFC 5393) branches, each given its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from waypost.protocols.sip.core import Proxy
from waypost.protocols.sip.forwarding import (
    Refusal,
    Target,
    Us,
    branch_for,
    breadth_shares,
    cancel_for,
    choose_response,
    forward_copy,
    max_breadth_of,
    next_hop,
    preprocess_routes,
    record_route,
    record_routes,
    response_hop,
    stateless_branch,
    strip_via,
    target_of,
    uri_from_text,
    validate,
)
from waypost.protocols.sip.headers import Headers
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
)
from waypost.protocols.sip.transport import Destination
from waypost.protocols.sip.uri import SipUri, host_key
from waypost.protocols.sip.wire import SipRequest, SipResponse, response_for
from waypost.services.container import Services
from waypost.services.login_guard import shared_guard
from waypost.services.signals import digest, nexthop, routing
from waypost.services.signals.nexthop import Hop, NextHopError
from waypost.services.signals.nonces import shared_nonces
from waypost.services.signals.routing import (
    Decision,
    Itself,
    Local,
    Refuse,
    Remote,
    SignalRequest,
)
from waypost.settings import ServerSettings

log = logging.getLogger("waypost.sip.proxy")

TIMER_C_FLOOR = 181.0
"""RFC 3261 §16.8: Timer C is greater than 3 minutes."""
TRANSPORTS = ("udp", "tcp", "tls")
DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK", "NOTIFY"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, REFER, SUBSCRIBE, NOTIFY"

Decide = Callable[[Services, SignalRequest], Decision]
Resolve = Callable[..., Awaitable[list[Hop]]]


@dataclass(frozen=True, slots=True)
class ProxyTiming:
    """The proxy's timings and limits, in seconds (the settings of the same
    meaning; tests make them short). ``refresh``: how old the cached
    settings and domain names may get."""

    timer_c: float = 200.0
    cancel_wait: float = 32.0
    next_hop_timeout: float = 10.0
    max_breadth: int = 60
    refresh: float = 5.0
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ProxyTiming:
        return cls(
            timer_c=max(float(settings.number("SIPTimerC")), TIMER_C_FLOOR),
            cancel_wait=float(settings.number("SIPCancelWait")),
            next_hop_timeout=float(settings.number("SIPDNSTimeout")) + 1.0,
            digest_algorithms=digest.offered(settings),
            max_breadth=settings.number("SIPMaxBreadth"),
        )


@dataclass(eq=False)
class _Branch:
    """One client transaction of a response context."""

    request: SipRequest
    destination: Destination
    client: ClientTransaction
    provisional: bool = False
    done: bool = False
    cancel_wanted: bool = False  # cancel on the first provisional (§9.1)
    cancel_deadline: float | None = None  # set when our CANCEL went out


@dataclass(eq=False)
class _Context:
    """The response context of one server transaction (§16.2)."""

    request: SipRequest
    transaction: ServerTransaction
    source: Destination
    branches: list[_Branch] = field(default_factory=list)
    finals: list[SipResponse] = field(default_factory=list)
    final_sent: bool = False
    stopped: bool = False  # no new branches (a 2xx, a 6xx or a CANCEL came)
    cancelled: bool = False

    @property
    def invite(self) -> bool:
        return self.request.method == "INVITE"


class StatefulProxy:
    """The transaction-stateful proxy core uses for everything it does not
    answer itself (see the module notes)."""

    def __init__(self, services: Services, layer: TransactionLayer, *,
                 timing: ProxyTiming | None = None, decide: Decide | None = None,
                 resolve: Resolve | None = None) -> None:
        self.services = services
        self.layer = layer
        self._fixed_timing = timing
        self.timing = timing or ProxyTiming()
        self._decide = decide or routing.decide
        self._decide_now = routing.decide_now if decide is None else None
        self._resolve = resolve or nexthop.resolve
        self._settings: ServerSettings | None = None
        self._domains: frozenset[str] = frozenset()
        self._us = Us()
        self._refreshed = -1e18
        self._loading: asyncio.Task[None] | None = None
        self._contexts: dict[int, _Context] = {}
        self._branches: set[_Branch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = 0

    # -- bookkeeping ---------------------------------------------------------

    def pending(self) -> tuple[int, int, int]:
        """Live response contexts, branches and tasks (all 0 when idle)."""
        return len(self._contexts), len(self._branches), len(self._tasks)

    async def join(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until no task is left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tasks and loop.time() < end:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, end - loop.time()))

    async def close(self) -> None:
        """Stop every task (at server shutdown)."""
        if self._loading is not None:
            self._loading.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP proxy task failed", exc_info=task.exception())

    async def _refresh(self) -> None:
        """Settings, our names and addresses; re-read at most every ``refresh`` s.
        Only the first read is waited for: later ones run in a task while
        requests go on with what is known, so no request waits on a thread
        that the next one (an ACK's BYE) does not wait on, which would
        forward them out of order."""
        now = time.monotonic()
        if self._loading is None and now - self._refreshed >= self.timing.refresh:
            self._refreshed = now
            self._loading = asyncio.get_running_loop().create_task(self._reload())
        if self._settings is None and self._loading is not None:
            await asyncio.shield(self._loading)

    async def _reload(self) -> None:
        try:
            await self._read()
        finally:
            self._loading = None

    async def _read(self) -> None:
        settings, names = await asyncio.to_thread(self._read_world)
        self._settings = settings
        if self._fixed_timing is None:
            self.timing = ProxyTiming.from_settings(settings)
        addresses: list[tuple[str, int]] = []
        for transport in TRANSPORTS:
            with contextlib.suppress(LookupError, ValueError, OSError, NotImplementedError):
                addresses.append(self.layer.sent_by(transport))
        self._domains = frozenset(host_key(n) for n in names)
        self._us = Us.of(addresses, [*names, *(h for h, _ in addresses)])

    def _read_world(self) -> tuple[ServerSettings, list[str]]:
        settings = self.services.settings()
        snap = self.services.router.current()[1]
        names = [*snap.domains, *snap.domain_aliases, *settings.items("ServerIPAddresses")]
        return settings, names

    # -- the Proxy protocol --------------------------------------------------

    async def handle(self, request: SipRequest, transaction: ServerTransaction | None,
                     source: Destination) -> None:
        if transaction is None or request.method == "ACK":
            self._spawn(self._stateless(request, source))
            return
        if request.method == "CANCEL":
            await self._cancel(request, transaction)
            return
        ctx = _Context(request, transaction, source)
        self._contexts[id(transaction)] = ctx
        if ctx.invite:  # §16.2: the caller stops retransmitting at once
            await self._respond(ctx.transaction, response_for(request, 100, "Trying"))
        self._spawn(self._run(ctx))

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None:
        """A 2xx to an INVITE whose client transaction is gone (the UAS
        retransmits it until the ACK): forwarded statelessly by its Via."""
        try:
            if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
                return
            await self._refresh()
            if not self._us.owns_via(response.top_via):
                return
            stripped = strip_via(response)
            if stripped is None:
                return
            hop = response_hop(stripped)
        except SipError:
            return
        destination = await self._destination_of(hop.host, hop.port, hop.transport)
        if destination is not None:
            await self._send_stateless(stripped, destination)

    # -- stateless -----------------------------------------------------------

    async def _stateless(self, request: SipRequest, source: Destination) -> None:
        """§16.11 for an ACK to a 2xx (and anything else without a server
        transaction): by our Route, else (an ACK only) by the decision."""
        await self._refresh()
        try:
            pre = preprocess_routes(request, self._us)
        except SipError:
            return
        refusal = validate(pre.request, self._us)
        if refusal is not None:
            log.debug("stateless %s dropped: %s", request.method, refusal.reason)
            return
        if pre.our_route:
            target = next_hop(pre.request)
            if not isinstance(target, Refusal):
                await self._send_copy(pre.request, None, target)
            return
        if request.method != "ACK" or pre.request.headers.values("Route"):
            return
        try:
            ask = SignalRequest("ACK", str(pre.request.uri), str(pre.request.from_.uri),
                                source.address, None)
        except SipError:
            return
        decision = await self._decision(ask)
        if isinstance(decision, Local):
            for contact in decision.contacts[: self.timing.max_breadth]:
                uri = uri_from_text(contact)
                if uri is not None:
                    await self._send_copy(pre.request, uri, target_of(uri))
        elif isinstance(decision, Remote):
            uri = uri_from_text(decision.target)
            if uri is not None:
                await self._send_copy(pre.request, uri, Target(
                    uri, decision.host, decision.port,
                    decision.transport.lower() if decision.transport else None,
                    uri.scheme == "sips"))

    async def _send_copy(self, request: SipRequest, uri: SipUri | None, target: Target) -> None:
        """One stateless copy to the first hop of ``target``."""
        hops = await self._hops(target)
        if isinstance(hops, SipResponse):
            return
        hop = hops[0]
        transport = hop.transport.lower()
        copy = forward_copy(request, target=uri, via_transport=transport,
                            sent_by=self.layer.sent_by(transport),
                            branch=stateless_branch(request))
        await self._send_stateless(copy, Destination(transport, hop.address, hop.port))

    async def _destination_of(self, host: str, port: int, transport: str) -> Destination | None:
        try:
            async with asyncio.timeout(self.timing.next_hop_timeout):
                hops = await self._resolve(self.services, host, port, transport)
        except (NextHopError, TimeoutError):
            return None
        return Destination(hops[0].transport, hops[0].address, hops[0].port) if hops else None

    async def _send_stateless(self, message: SipRequest | SipResponse,
                              destination: Destination) -> None:
        try:
            await self.layer.send_stateless(message, destination)
        except (OSError, ConnectionError) as exc:
            log.info("SIP message to %s:%s not sent: %s", destination.address,
                     destination.port, exc)

    # -- CANCEL --------------------------------------------------------------

    async def _cancel(self, request: SipRequest, transaction: ServerTransaction) -> None:
        """§16.10: answer the CANCEL, then cancel the INVITE's branches."""
        invite = self.layer.invite_for(request)
        if invite is None:
            await self._respond(transaction, response_for(
                request, 481, "Call/Transaction Does Not Exist"))
            return
        await self._respond(transaction, response_for(request, 200, "OK"))
        ctx = self._contexts.get(id(invite))
        if ctx is None or ctx.final_sent:
            return
        ctx.cancelled = ctx.stopped = True
        for branch in list(ctx.branches):
            self._cancel_branch(branch)

    def _cancel_branch(self, branch: _Branch) -> None:
        if branch.done or branch.cancel_deadline is not None:
            return
        if not branch.provisional:
            branch.cancel_wanted = True  # §9.1: not before a provisional response
            return
        branch.cancel_deadline = asyncio.get_running_loop().time() + self.timing.cancel_wait
        cancel = cancel_for(branch.request)
        client = self.layer.send_request(cancel, branch.destination)
        self._spawn(self._drain(client))

    async def _drain(self, client: ClientTransaction) -> None:
        """Read a CANCEL's responses (they end at its final or Timer F)."""
        async def read() -> None:
            async for _ in client.responses():
                pass

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), self.timing.cancel_wait)

    # -- one response context -------------------------------------------------

    async def _run(self, ctx: _Context) -> None:
        try:
            await self._route(ctx)
            if not ctx.final_sent:
                best = choose_response(ctx.request, ctx.finals)
                if ctx.cancelled and best.status >= 300:
                    best = response_for(ctx.request, 487, "Request Terminated")
                await self._final(ctx, best)
        except Exception:
            log.exception("SIP proxy failed on %s %s", ctx.request.method, ctx.request.uri)
            if not ctx.final_sent:
                await self._final(ctx, response_for(ctx.request, 500, "Server Internal Error"))
        finally:
            self._contexts.pop(id(ctx.transaction), None)

    async def _route(self, ctx: _Context) -> None:
        """Validation, routes and the decision; returns when every branch ended."""
        await self._refresh()
        try:
            pre = preprocess_routes(ctx.request, self._us)
        except SipError as exc:
            await self._final(ctx, response_for(ctx.request, exc.status or 400, exc.reason))
            return
        request = pre.request
        refusal = validate(request, self._us)
        if refusal is not None:
            await self._final(ctx, refusal.response(ctx.request))
            return
        in_dialog = pre.our_route and ctx.request.to.tag is not None
        if in_dialog:
            await self._forward_by_route(ctx, request)
            return
        account, stale, malformed = await self._authenticate(ctx, request)
        if malformed:
            await self._final(ctx, response_for(ctx.request, 400, "Bad Request"))
            return
        if account is not None:
            request = _without_credentials(request, account_realm(account), self._domains)
        ask = SignalRequest(request.method, str(request.uri), str(request.from_.uri),
                            ctx.source.address, account)
        decision = await self._decision(ask)
        if isinstance(decision, Refuse):
            await self._final(ctx, self._refuse(ctx.request, decision, stale))
        elif request.headers.values("Route"):
            if isinstance(decision, Remote):
                await self._forward_by_route(ctx, request)
            else:
                await self._final(ctx, response_for(ctx.request, 403, "Forbidden"))
        elif isinstance(decision, Local):
            await self._fork(ctx, request, decision)
        elif isinstance(decision, Remote):
            await self._relay(ctx, request, decision)
        elif isinstance(decision, Itself):
            await self._final(ctx, self._itself(ctx.request))

    async def _decision(self, ask: SignalRequest) -> Decision:
        """The routing decision: from memory when it can be, else in a thread."""
        if self._decide_now is not None:
            decision = self._decide_now(self.services, ask)
            if decision is not None:
                return decision
        return await asyncio.to_thread(self._decide, self.services, ask)

    def _refuse(self, request: SipRequest, decision: Refuse, stale: bool) -> SipResponse:
        response = response_for(request, decision.status, decision.reason)
        if decision.status == 407 and decision.realm:
            nonce = shared_nonces().issue(decision.realm)
            for value in digest.challenges(decision.realm, nonce, stale=stale,
                                           algorithms=self.timing.digest_algorithms):
                response.headers.add("Proxy-Authenticate", value)
        return response

    @staticmethod
    def _itself(request: SipRequest) -> SipResponse:
        if request.method == "OPTIONS":
            response = response_for(request, 200, "OK")
            response.headers.add("Allow", ALLOW + ", REGISTER")
            return response
        if request.method in DIALOG_ONLY:
            return response_for(request, 481, "Call/Transaction Does Not Exist")
        response = response_for(request, 405, "Method Not Allowed")
        response.headers.add("Allow", "OPTIONS, REGISTER")
        return response

    async def _authenticate(self, ctx: _Context, request: SipRequest
                            ) -> tuple[str | None, bool, bool]:
        """(account proven, stale nonce, malformed) from Proxy-Authorization."""
        for value in request.headers.fields("Proxy-Authorization"):
            try:
                creds = digest.parse_credentials(value)
            except digest.DigestError:
                continue  # perhaps another proxy's; not ours to judge
            if host_key(creds.realm) not in self._domains:
                continue
            assert self._settings is not None
            result = await digest.verify(
                self.services, shared_guard(), shared_nonces(), self._settings,
                digest.DigestRequest(creds, ctx.request.method, str(ctx.request.uri),
                                     creds.realm, ctx.source.address))
            if result.verdict is digest.Verdict.OK:
                return result.account, False, False
            return None, result.verdict is digest.Verdict.STALE, (
                result.verdict is digest.Verdict.MALFORMED)
        return None, False, False

    # -- branches ------------------------------------------------------------

    async def _forward_by_route(self, ctx: _Context, request: SipRequest) -> None:
        target = next_hop(request)
        if isinstance(target, Refusal):
            await self._final(ctx, target.response(ctx.request))
            return
        await self._try_target(ctx, request, None, target, max_breadth_of(request))

    async def _relay(self, ctx: _Context, request: SipRequest, decision: Remote) -> None:
        uri = uri_from_text(decision.target)
        if uri is None:
            await self._final(ctx, response_for(ctx.request, 416, "Unsupported URI Scheme"))
            return
        transport = decision.transport.lower() if decision.transport else None
        target = Target(uri, decision.host, decision.port, transport, uri.scheme == "sips")
        shares = breadth_shares(max_breadth_of(request), self.timing.max_breadth, 1)
        if not shares:
            await self._final(ctx, response_for(ctx.request, 440, "Max-Breadth Exceeded"))
            return
        await self._try_target(ctx, request, uri, target, shares[0])

    async def _fork(self, ctx: _Context, request: SipRequest, decision: Local) -> None:
        uris = [u for u in (uri_from_text(c) for c in decision.contacts) if u is not None]
        if not uris:
            await self._final(ctx, response_for(ctx.request, 480, "Temporarily Unavailable"))
            return
        shares = breadth_shares(max_breadth_of(request), self.timing.max_breadth, len(uris))
        if not shares:
            await self._final(ctx, response_for(ctx.request, 440, "Max-Breadth Exceeded"))
            return
        if len(uris) == 1:  # one phone: no task to gather
            await self._try_target(ctx, request, uris[0], target_of(uris[0]), shares[0],
                                   alone=False)
            return
        await asyncio.gather(*(
            self._try_target(ctx, request, uri, target_of(uri), share, alone=False)
            for uri, share in zip(uris, shares, strict=False)))

    async def _hops(self, target: Target) -> list[Hop] | SipResponse:
        """The next hops of a target (RFC 3263), or the response a failure gives."""
        try:  # asyncio.timeout, not wait_for: no task per lookup (3.11)
            async with asyncio.timeout(self.timing.next_hop_timeout):
                hops = await self._resolve(self.services, target.host, target.port,
                                           target.transport, secure=target.secure)
        except NextHopError as exc:
            return SipResponse(exc.status, exc.reason)
        except TimeoutError:
            return SipResponse(503, "Service Unavailable")
        return hops or SipResponse(503, "Service Unavailable")

    async def _try_target(self, ctx: _Context, request: SipRequest, uri: SipUri | None,
                          target: Target, share: int | None, *, alone: bool = True) -> None:
        """One target: its hops one after the other (RFC 3263 §4.3). When the
        next hop cannot be found, the target's answer is the resolver's
        status (404, 503); ``alone`` sends it at once."""
        hops = await self._hops(target)
        if isinstance(hops, SipResponse):
            failure = response_for(ctx.request, hops.status, hops.reason)
            if alone:  # our own answer, not a downstream 503 (no §16.7 conversion)
                await self._final(ctx, failure)
            else:
                ctx.finals.append(failure)
            return
        for index, hop in enumerate(hops):
            if ctx.stopped:
                return
            branch = self._start_branch(ctx, request, uri, hop, share)
            final = await self._follow(ctx, branch)
            if final is None:
                return
            if (final.status in (408, 503) and index + 1 < len(hops) and not ctx.stopped
                    and not branch.provisional):
                continue
            ctx.finals.append(final)
            if final.status >= 600 and ctx.invite:  # §16.7 step 5
                ctx.stopped = True
                for other in list(ctx.branches):
                    self._cancel_branch(other)
            return

    def _start_branch(self, ctx: _Context, request: SipRequest, uri: SipUri | None, hop: Hop,
                      share: int | None) -> _Branch:
        self._serial += 1
        transport = hop.transport.lower()
        sent_by = self.layer.sent_by(transport)
        secure = isinstance(request.uri, SipUri) and request.uri.scheme == "sips"
        incoming = ctx.source.transport.lower()
        record = record_routes(
            record_route(self.layer.sent_by(incoming), incoming, secure=secure),
            record_route(sent_by, transport, secure=secure))
        copy = forward_copy(
            request, target=uri, via_transport=transport, sent_by=sent_by,
            branch=branch_for(request, f"{self._serial:x}{secrets.token_hex(4)}"), record=record,
            max_breadth=share)
        destination = Destination(transport, hop.address, hop.port)
        client = self.layer.send_request(copy, destination)
        branch = _Branch(copy, destination, client)
        ctx.branches.append(branch)
        self._branches.add(branch)
        return branch

    async def _follow(self, ctx: _Context, branch: _Branch) -> SipResponse | None:
        """A branch's responses until its final: None after a 2xx (forwarded),
        else the final, its Via stripped. Timer C (§16.8) bounds it."""
        loop = asyncio.get_running_loop()
        timeout = response_for(ctx.request, 408, "Request Timeout")
        try:
            timer_c = loop.time() + self.timing.timer_c
            while True:
                limit = timer_c
                if branch.cancel_deadline is not None:
                    limit = min(limit, branch.cancel_deadline)
                try:  # read straight from the transaction: no task, no queue per branch
                    async with asyncio.timeout_at(limit):
                        response = await branch.client.next_response()
                except TimeoutError:
                    if (branch.cancel_deadline is not None or not branch.provisional
                            or not ctx.invite):
                        return timeout  # given up (§16.8: as if a 408 came)
                    log.info("SIP Timer C fired on %s: cancelling", branch.request.uri)
                    self._cancel_branch(branch)
                    continue
                if response is None:
                    return timeout
                stripped = _for_caller(response, ctx.request)
                if response.status < 200:
                    if response.status > 100:
                        branch.provisional = True
                        timer_c = loop.time() + self.timing.timer_c
                        if branch.cancel_wanted:
                            self._cancel_branch(branch)
                        if not ctx.final_sent:
                            await self._respond(ctx.transaction, stripped)
                    continue
                branch.done = True
                if response.status < 300:
                    await self._forward_2xx(ctx, stripped)
                    return None
                return stripped
        finally:
            branch.done = True
            self._branches.discard(branch)

    async def _forward_2xx(self, ctx: _Context, response: SipResponse) -> None:
        """§16.7 step 5: every 2xx at once; the first ends the context."""
        if not ctx.final_sent:
            await self._final(ctx, response)
            if ctx.invite:
                ctx.stopped = True
                for other in list(ctx.branches):
                    self._cancel_branch(other)
        elif ctx.invite:
            await self._send_stateless(response, ctx.transaction.source)

    async def _final(self, ctx: _Context, response: SipResponse) -> None:
        ctx.final_sent = True
        await self._respond(ctx.transaction, response)

    @staticmethod
    async def _respond(transaction: ServerTransaction, response: SipResponse) -> None:
        try:
            await transaction.respond(response)
        except Exception:  # the caller's problem must not end the other branches
            log.warning("SIP response %s not sent", response.status, exc_info=True)


def _for_caller(response: SipResponse, request: SipRequest) -> SipResponse:
    """A branch's response as the caller gets it: our Via stripped (§16.7
    step 3), which leaves exactly the Vias of the request we received; they
    are set from it, so a response the layer synthesized (Timer B/F, a
    transport error) with or without our Via comes out the same."""
    out = response.copy()
    fields = [(n, v) for n, v in response.headers if n.lower() != "via"]
    out.headers = Headers([*(("Via", v) for v in request.headers.fields("Via")), *fields])
    return out


def account_realm(account: str) -> str:
    return account.rpartition("@")[2]


def _without_credentials(request: SipRequest, realm: str, domains: frozenset[str]
                         ) -> SipRequest:
    """``request`` without the Proxy-Authorization of our realms (consumed)."""
    def ours(value: str) -> bool:
        try:
            return host_key(digest.parse_credentials(value).realm) in domains | {
                host_key(realm)}
        except digest.DigestError:
            return False

    out = request.copy()
    out.headers = Headers([(n, v) for n, v in request.headers
                           if n.lower() != "proxy-authorization" or not ours(v)])
    return out


def stateful_proxy(services: Services, layer: TransactionLayer) -> Proxy:
    """The ProxyFactory ``core`` calls: a :class:`StatefulProxy` with the
    server's settings (read again every few seconds)."""
    return StatefulProxy(services, layer)
