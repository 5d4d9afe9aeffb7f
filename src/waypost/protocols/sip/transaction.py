"""The SIP transaction layer (RFC 3261 §17): client and server transactions
for INVITE and for every other method, their timers and retransmissions.

Invariants:

* A transaction is in the layer's tables from its first message until it
  terminates, and then nowhere: its timers are cancelled and its entries
  (and its source address's count) deleted, so a flood leaves nothing
  behind. Every timer is bounded by 64*T1, T4, 32 s or, for INVITE, the
  ``INVITE_LIFETIME`` safety cap.
* Retransmissions (Timers A, E, G) happen over UDP only (§17.1.1.2,
  §17.1.2.2, §17.2.1); over TCP/TLS Timers D, I, J, K are zero.
* Server transactions are matched by the top Via's branch, sent-by and
  method (ACK matches INVITE, §17.2.3); client transactions by the top Via
  branch and the CSeq method (§17.1.3). A response whose top Via this
  server did not write is dropped (§18.1.2); one that matches no client
  transaction goes to the transaction user (a proxy forwards 2xx
  retransmissions that way, §16.7).
* A request retransmission is absorbed: the last response is sent again
  and the transaction user never sees it twice.
* ``SIPMaxTransactions`` (server transactions still waiting for their
  final response, in all) and ``SIPMaxTransactionsPerAddress`` (those of
  one source address: the work a client can make the server do at once)
  are answered statelessly with ``503 Service Unavailable`` and
  ``Retry-After`` (§21.5.4); an ACK is never answered. Answered
  transactions only wait out Timer J (or H/I) to absorb retransmissions:
  they do not count against new work, so a burst of quickly answered
  requests is never refused (32 s of Timer J at thousands per second would
  fill any limit); their number is bounded by ``SIPMaxTransactions`` too,
  the oldest answered one ending early when a new one would pass it.

Choices where the RFC leaves one:

* A request without the RFC 3261 magic cookie in its branch (RFC 2543
  peers) is matched by Request-URI, From tag, Call-ID, CSeq and the top Via
  (§17.2.3, the To tag left out: ours is not in the request).
* The layer writes this server's Via on requests it sends unless the
  request's top Via is already this server's (a proxy that chose its own
  branch for loop detection keeps it); either way the Via names the
  transport actually used and carries ``rport`` (RFC 3581 §3).
* With several worker processes the Via of a request sent over UDP names
  the worker's private client port (:meth:`TransactionLayer.use_client_port`,
  ``transport.py``), so its responses come back to the worker that holds
  the client transaction; Record-Route and everything else keep naming the
  shared port (:meth:`TransactionLayer.sent_by`), so in-dialog requests may
  reach any worker, which routes them statelessly by their Route set.
* A client transaction whose TCP/TLS connection closes before its final
  response ends at once with the synthesized 503 (§8.1.3.1), rather than
  waiting for Timer B/F.
* A request sent over UDP whose size exceeds 1300 bytes goes over TCP to
  the same address and port, its Via saying TCP (§18.1.1); a TCP failure
  then gives the synthesized 503 (the RFC's "MAY retry over UDP" is not
  done: a large request over UDP fragments, which is why the rule exists).
* An answered server transaction ended early because too many are kept
  (see above) makes a late retransmission of its request a new request:
  the cost of a bounded table under a flood, paid by the oldest first.
* An INVITE server transaction whose transaction user never sends a final
  response, and an INVITE client transaction that never gets one after a
  provisional (no Timer B then), end after ``INVITE_LIFETIME`` seconds
  (beyond Timer C's three minutes, §16.6 step 11, which is the proxy's to
  run); a non-INVITE server transaction without a final response ends
  after 64*T1, when the client has given up (Timer F).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from waypost.protocols.sip.headers import Headers, Via
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.transport import Destination, TransportError
from waypost.protocols.sip.uri import host_key
from waypost.protocols.sip.wire import (
    MAGIC_COOKIE,
    SipMessage,
    SipRequest,
    SipResponse,
    new_branch,
    response_for,
)

if TYPE_CHECKING:
    from waypost.settings import ServerSettings

log = logging.getLogger("waypost.sip.transaction")

MTU_LIMIT = 1300
"""§18.1.1: a larger request is not sent over UDP."""
INVITE_LIFETIME = 300.0
"""Seconds an INVITE transaction may wait for a final response (see above)."""
RETRY_AFTER = 5
"""Seconds a client refused for too many transactions is asked to wait."""
TRYING_DELAY = 0.2
"""§17.2.1: an INVITE server transaction sends 100 Trying after 200 ms."""
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True, slots=True)
class Timers:
    """T1, T2, T4 in seconds (§17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Timers:
        return cls(max(1, settings.number("SIPTimerT1")) / 1000,
                   max(1, settings.number("SIPTimerT2")) / 1000,
                   max(1, settings.number("SIPTimerT4")) / 1000)


@dataclass(frozen=True, slots=True)
class TransactionLimits:
    total: int = 10_000
    per_address: int = 500

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> TransactionLimits:
        return cls(max(1, settings.number("SIPMaxTransactions")),
                   max(1, settings.number("SIPMaxTransactionsPerAddress")))


class Sender(Protocol):
    """What the layer sends through (``transport.Transports``, or a test's fake)."""

    def ready(self, destination: Destination) -> bool: ...

    def send_now(self, data: bytes, destination: Destination) -> Any:
        """Send; the stream used (with a ``watchers`` set), or None."""
        ...

    async def send(self, data: bytes, destination: Destination) -> Any: ...


class TransactionUser(Protocol):
    """What the layer calls."""

    async def on_request(self, request: SipRequest, transaction: ServerTransaction | None,
                         source: Destination) -> None:
        """A new request; ``transaction`` None for an ACK to a 2xx (no transaction)."""
        ...

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None:
        ...


ServerKey = tuple[str, ...]
ClientKey = tuple[str, str]


def _sent_by(via: Via) -> str:
    return f"{host_key(via.host)}:{via.port or DEFAULT_PORTS.get(via.transport.lower(), 5060)}"


def server_key(request: SipRequest, method: str | None = None) -> ServerKey:
    """The key a request is matched to its server transaction by (§17.2.3)."""
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, _sent_by(via), method)
    cseq = request.cseq
    return ("2543", str(request.uri) if request.method != "ACK" else "", request.from_.tag or "",
            request.call_id, str(cseq.number), str(via.with_param("received").with_param(
                "rport")), method)


class _Base:
    state: str
    layer: TransactionLayer

    def __init__(self) -> None:
        self._handles: list[asyncio.TimerHandle] = []

    def _later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = asyncio.get_running_loop().call_later(delay, callback, *args)
        self._handles.append(handle)
        return handle

    def _cancel_timers(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


class ServerTransaction(_Base):
    """§17.2: answers one request; the transaction user calls :meth:`respond`."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, source: Destination,
                 key: ServerKey, received_from: str) -> None:
        super().__init__()
        self.layer = layer
        self.request = request
        self.source = source
        """Where responses go (already §18.2.2 / RFC 3581 resolved)."""
        self.key = key
        self.received_from = received_from
        self.invite = request.method == "INVITE"
        self.state = "proceeding" if self.invite else "trying"
        self.final: SipResponse | None = None
        self.counted = True
        """Still counted for ``SIPMaxTransactionsPerAddress`` (until answered)."""
        self._last: bytes | None = None
        self._reliable = source.transport != "udp"
        t1 = layer.timers.t1
        if self.invite:
            self._trying = self._later(TRYING_DELAY, self._send_trying)
            self._cap = self._later(max(INVITE_LIFETIME, 64 * t1), self._terminate)
        else:
            self._cap = self._later(64 * t1, self._terminate)

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state} {self.key[0]}>"

    async def respond(self, response: SipResponse) -> None:
        """Send ``response``; a final one moves the transaction on (retransmitted
        over UDP by the layer until acknowledged or timed out). Responses after
        the final one are dropped (§17.2.1, §17.2.2)."""
        if self.state in ("completed", "confirmed", "terminated"):
            log.debug("%r: response %d after the final one dropped", self, response.status)
            return
        data = response.to_bytes()
        self._last = data
        status = response.status
        t1 = self.layer.timers.t1
        if status < 200:
            self.state = "proceeding"
            if self.invite:
                self._trying.cancel()
            self.layer.post(data, self.source)
            return
        self.final = response
        self._cancel_timers()
        self.layer._release_address(self)
        self.layer.post(data, self.source)
        if self.invite and status < 300:
            self._terminate()  # §17.2.1: the 2xx is retransmitted by the TU end to end
            return
        self.layer._answered(self)
        if self.invite:
            self.state = "completed"
            if not self._reliable:
                self._later(t1, self._timer_g, t1)
            self._later(64 * t1, self._terminate)  # Timer H
        else:
            self.state = "completed"
            self._later(0 if self._reliable else 64 * t1, self._terminate)  # Timer J

    def _send_trying(self) -> None:
        if self.state == "proceeding" and self._last is None:
            trying = response_for(self.request, 100, "Trying")
            self._last = trying.to_bytes()
            self.layer.post(self._last, self.source)

    def _timer_g(self, interval: float) -> None:
        if self.state == "completed" and self._last is not None:
            self.layer.post(self._last, self.source)
            interval = min(2 * interval, self.layer.timers.t2)
            self._later(interval, self._timer_g, interval)

    def retransmitted(self) -> None:
        """§17.2.1/§17.2.2: a request retransmission gets the last response again."""
        if self._last is not None and self.state in ("proceeding", "completed"):
            self.layer.post(self._last, self.source)

    def acknowledged(self) -> None:
        """The ACK of a non-2xx final response (§17.2.1: Timer I)."""
        if self.state == "completed":
            self.state = "confirmed"
            self._cancel_timers()
            self._later(0 if self._reliable else self.layer.timers.t4, self._terminate)

    def _terminate(self) -> None:
        if self.state != "terminated":
            self.state = "terminated"
            self._cancel_timers()
            self.layer._forget_server(self)


class ClientTransaction(_Base):
    """§17.1: sends one request and yields its responses."""

    def __init__(self, layer: TransactionLayer, request: SipRequest, destination: Destination,
                 key: ClientKey, data: bytes | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.request = request
        self.destination = destination
        self.key = key
        self.invite = request.method == "INVITE"
        self.state = "calling" if self.invite else "trying"
        self._queue: asyncio.Queue[SipResponse | None] = asyncio.Queue()
        self._data = data if data is not None else request.to_bytes()
        self._ack: bytes | None = None
        self._reliable = destination.transport != "udp"
        self._finished = False
        self._stream: Any = None

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.state} {self.key[0]}>"

    async def responses(self) -> AsyncIterator[SipResponse]:
        """Every provisional, then the final, then ends; Timer B/F expiry
        yields a synthesized 408, a transport error a synthesized 503
        (§8.1.3.1, §16.7)."""
        while True:
            response = await self._queue.get()
            if response is None:
                return
            yield response
            if response.status >= 200:
                return

    async def next_response(self) -> SipResponse | None:
        """The next of :meth:`responses`, None once there are no more than
        those given (call it no more after a final one). Safe to cancel (a
        timeout around it loses nothing), which an async generator is not."""
        return await self._queue.get()

    def start(self) -> None:
        t1 = self.layer.timers.t1
        self.layer.post(self._data, self.destination, self._transport_error, self._watch)
        if not self._reliable:
            self._later(t1, self._retransmit, t1)  # Timer A or E
        self._later(64 * t1, self._timeout)  # Timer B or F

    def _retransmit(self, interval: float) -> None:
        if self.state in ("calling", "trying", "proceeding") and not (
                self.invite and self.state == "proceeding"):
            self.layer.post(self._data, self.destination, self._transport_error)
            t2 = self.layer.timers.t2
            if self.invite:
                interval = 2 * interval  # Timer A doubles without a ceiling
            else:
                interval = t2 if self.state == "proceeding" else min(2 * interval, t2)
            self._later(interval, self._retransmit, interval)

    def _watch(self, stream: Any) -> None:
        """A stream that closes before the final response is a transport
        error (§8.1.3.1: 503), not a wait for Timer B/F."""
        watchers = getattr(stream, "watchers", None)
        if watchers is None or self.terminated:
            return
        if getattr(stream, "closed", False):
            self._connection_lost()
            return
        self._stream = stream
        watchers.add(self._connection_lost)

    def _connection_lost(self) -> None:
        self._transport_error(TransportError("connection closed"))

    def _timeout(self) -> None:
        if self.state in ("calling", "trying") or (self.state == "proceeding"
                                                    and not self.invite):
            self._give(response_for(self.request, 408, "Request Timeout"))
            self._terminate()

    def _transport_error(self, error: Exception) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            log.info("%r to %s:%d: %s", self, self.destination.address, self.destination.port,
                     error)
            self._give(response_for(self.request, 503, "Service Unavailable"))
            self._terminate()

    def _give(self, response: SipResponse) -> None:
        if not self._finished:
            self._queue.put_nowait(response)
            if response.status >= 200:
                self._finished = True

    def receive(self, response: SipResponse) -> None:
        status = response.status
        if self.state == "completed":
            if self.invite and status >= 300 and self._ack is not None:
                self.layer.post(self._ack, self.destination)  # Timer D absorbs
            return
        if self.state == "terminated":
            return
        if status < 200:
            if self.state != "proceeding":
                self.state = "proceeding"
                if self.invite:
                    self._cancel_timers()
                    self._later(max(INVITE_LIFETIME, 64 * self.layer.timers.t1), self._timeout)
            self._give(response)
            return
        self._give(response)
        self._cancel_timers()
        if self.invite and status < 300:
            self._terminate()  # §17.1.1.2: the TU ACKs a 2xx
            return
        self.state = "completed"
        if self.invite:
            self._ack = ack_for(self.request, response).to_bytes()
            self.layer.post(self._ack, self.destination)
            self._later(0 if self._reliable else 32.0, self._terminate)  # Timer D
        else:
            self._later(0 if self._reliable else self.layer.timers.t4, self._terminate)  # K

    def _terminate(self) -> None:
        if self.state != "terminated":
            self.state = "terminated"
            self._cancel_timers()
            if not self._finished:
                self._finished = True
                self._queue.put_nowait(None)
            if self._stream is not None:
                self._stream.watchers.discard(self._connection_lost)
                self._stream = None
            self.layer._forget_client(self)


def ack_for(request: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK of a non-2xx final response to ``request``."""
    headers = Headers()
    headers.add("Via", request.headers.values("Via")[0])
    headers.add("Max-Forwards", "70")
    for name in ("From",):
        headers.add(name, request.single(name))
    headers.add("To", response.single("To"))
    headers.add("Call-ID", request.single("Call-ID"))
    headers.add("CSeq", f"{request.cseq.number} ACK")
    for route in request.headers.fields("Route"):
        headers.add("Route", route)
    return SipRequest("ACK", request.uri, headers)


class TransactionLayer:
    """Transactions of the whole server, over one :class:`Sender`."""

    def __init__(self, sender: Sender, *, host: str, ports: dict[str, int],
                 timers: Timers | None = None, limits: TransactionLimits | None = None,
                 user: TransactionUser | None = None) -> None:
        self.sender = sender
        self.host = host
        self.ports = dict(ports)
        """transport -> the port this server listens on (for Via and Record-Route)."""
        self.timers = timers or Timers()
        self.limits = limits or TransactionLimits()
        self.user = user
        self.server: dict[ServerKey, ServerTransaction] = {}
        self.client: dict[ClientKey, ClientTransaction] = {}
        self._per_address: dict[str, int] = {}
        self._kept: dict[ServerKey, ServerTransaction] = {}
        """Answered server transactions waiting out Timer H/I/J, oldest first."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._ours = {f"{host_key(host)}:{port}" for port in self.ports.values()}
        self._via_ports: dict[str, int] = {}

    # -- identity ----------------------------------------------------------

    def use_client_port(self, transport: str, port: int) -> None:
        """Requests sent over ``transport`` leave from ``port`` (a worker's
        private socket): their Via names it, so their responses come here."""
        self._via_ports[transport.lower()] = port
        self._ours.add(f"{host_key(self.host)}:{port}")

    def sent_by(self, transport: str) -> tuple[str, int]:
        """This server's address/port for a Via or Record-Route."""
        transport = transport.lower()
        port = self.ports.get(transport) or self.ports.get("udp") or 5060
        return self.host, port

    def is_ours(self, via: Via) -> bool:
        return _sent_by(via) in self._ours

    # -- sending -------------------------------------------------------------

    def post(self, data: bytes, destination: Destination,
             on_error: Any = None, on_sent: Any = None) -> None:
        """Send now when no connection must be opened, else in a task;
        ``on_error(TransportError)`` on failure, ``on_sent(stream or None)``
        after sending."""
        try:
            if self.sender.ready(destination):
                used = self.sender.send_now(data, destination)
                if on_sent is not None:
                    on_sent(used)
                return
        except TransportError as exc:
            if on_error is not None:
                on_error(exc)
            return
        self.spawn(self._send(data, destination, on_error, on_sent))

    async def _send(self, data: bytes, destination: Destination, on_error: Any,
                    on_sent: Any) -> None:
        try:
            used = await self.sender.send(data, destination)
        except TransportError as exc:
            if on_error is not None:
                on_error(exc)
            return
        if on_sent is not None:
            on_sent(used)

    def _stamp(self, request: SipRequest, transport: str) -> None:
        """Our Via on top, naming ``transport`` (see the module notes)."""
        host, port = self.sent_by(transport)
        port = self._via_ports.get(transport.lower(), port)
        top = request.headers.values("Via")[:1]
        branch: str | None = None
        params = ";rport"
        if top:
            try:
                via = request.top_via
            except SipError:
                via = None
            if via is not None and self.is_ours(via):
                request.headers.pop_first_value("Via")
                branch = via.branch
                extra = via.params.without("branch").without("rport")
                params = f"{extra};rport"
        if branch is None:
            branch = new_branch()
        request.headers.add("Via", f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch}"
                            f"{params}", first=True)

    def send_request(self, request: SipRequest, destination: Destination) -> ClientTransaction:
        """Start a client transaction (ACKs for non-2xx finals to INVITE are
        generated here, §17.1.1.3)."""
        if request.method == "ACK":
            raise ValueError("an ACK is no transaction: use send_stateless")
        self._stamp(request, destination.transport)
        data = request.to_bytes()  # serialised once, sent and retransmitted as it is
        if destination.transport == "udp" and len(data) > MTU_LIMIT:
            destination = Destination("tcp", destination.address, destination.port)
            self._stamp(request, "tcp")
            data = request.to_bytes()  # the Via changed
        via = request.top_via
        key: ClientKey = (via.branch or "", request.cseq.method)
        old = self.client.get(key)
        if old is not None:
            old._terminate()
        txn = ClientTransaction(self, request, destination, key, data)
        self.client[key] = txn
        txn.start()
        return txn

    async def send_stateless(self, message: SipMessage, destination: Destination) -> None:
        """Send ``message`` as it is (a forwarded response, an ACK to a 2xx)."""
        try:
            await self.sender.send(message.to_bytes(), destination)
        except TransportError as exc:
            log.info("SIP: stateless send to %s:%d failed: %s", destination.address,
                     destination.port, exc)

    # -- receiving -----------------------------------------------------------

    def receive(self, message: SipMessage, source: Destination) -> None:
        """A parsed message from the transport (its Via already stamped)."""
        if isinstance(message, SipResponse):
            self._response(message, source)
        elif isinstance(message, SipRequest):
            self._request(message, source)

    def _request(self, request: SipRequest, source: Destination) -> None:
        from waypost.protocols.sip.transport import response_destination

        try:
            key = server_key(request)
            reply_to = response_destination(request, source)
        except SipError as exc:  # parse_message checked these; defensive
            log.debug("SIP: request not matched: %s", exc.reason)
            return
        existing = self.server.get(key)
        if request.method == "ACK":
            if existing is not None and existing.invite and existing.final is not None:
                existing.acknowledged()
                return
            self._call_user(request, None, reply_to)
            return
        if existing is not None:
            existing.retransmitted()
            return
        address = source.address
        if (len(self.server) - len(self._kept) >= self.limits.total
                or self._per_address.get(address, 0) >= self.limits.per_address):
            busy = response_for(request, 503, "Service Unavailable")
            busy.headers.add("Retry-After", str(RETRY_AFTER))
            self.post(busy.to_bytes(), reply_to)
            return
        txn = ServerTransaction(self, request, reply_to, key, address)
        self.server[key] = txn
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._call_user(request, txn, reply_to)

    def _call_user(self, request: SipRequest, txn: ServerTransaction | None,
                   source: Destination) -> None:
        self.spawn(self._run_user(request, txn, source))

    async def _run_user(self, request: SipRequest, txn: ServerTransaction | None,
                        source: Destination) -> None:
        try:
            if self.user is None:
                if txn is not None:
                    await txn.respond(response_for(request, 503, "Service Unavailable"))
                return
            await self.user.on_request(request, txn, source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("SIP: %s from %s:%d failed", request.method, source.address,
                          source.port)
            if txn is not None and txn.final is None and not txn.terminated:
                with contextlib.suppress(Exception):
                    await txn.respond(response_for(request, 500, "Server Internal Error"))

    def _response(self, response: SipResponse, source: Destination) -> None:
        try:
            via = response.top_via
            method = response.cseq.method
        except SipError:
            return
        if not self.is_ours(via):
            log.debug("SIP: response %d with a Via not ours dropped (§18.1.2)", response.status)
            return
        txn = self.client.get((via.branch or "", method))
        if txn is not None:
            txn.receive(response)
            return
        if self.user is not None:
            self.spawn(self._stray(response, source))

    async def _stray(self, response: SipResponse, source: Destination) -> None:
        assert self.user is not None
        try:
            await self.user.on_stray_response(response, source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("SIP: a stray response from %s:%d failed", source.address,
                          source.port)

    def invite_for(self, cancel: SipRequest) -> ServerTransaction | None:
        """§9.2: the INVITE server transaction a CANCEL cancels."""
        try:
            return self.server.get(server_key(cancel, "INVITE"))
        except SipError:
            return None

    # -- bookkeeping ---------------------------------------------------------

    def _forget_server(self, txn: ServerTransaction) -> None:
        if self.server.get(txn.key) is txn:
            del self.server[txn.key]
        if self._kept.get(txn.key) is txn:
            del self._kept[txn.key]
        self._release_address(txn)

    def _answered(self, txn: ServerTransaction) -> None:
        """``txn`` has its final response: it no longer counts as work, and
        the oldest answered one ends when more than the limit are kept."""
        self._kept[txn.key] = txn
        while len(self._kept) > self.limits.total:
            key = next(iter(self._kept))
            self._kept.pop(key)._terminate()

    def _release_address(self, txn: ServerTransaction) -> None:
        """A transaction stops counting for its address once it is answered."""
        if txn.counted:
            txn.counted = False
            left = self._per_address.get(txn.received_from, 1) - 1
            if left > 0:
                self._per_address[txn.received_from] = left
            else:
                self._per_address.pop(txn.received_from, None)

    def _forget_client(self, txn: ClientTransaction) -> None:
        if self.client.get(txn.key) is txn:
            del self.client[txn.key]

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Transactions and tasks still alive (tests wait for 0)."""
        return len(self.server) + len(self.client) + len(self._tasks)

    async def close(self) -> None:
        for server_txn in list(self.server.values()):
            server_txn._terminate()
        for client_txn in list(self.client.values()):
            client_txn._terminate()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
