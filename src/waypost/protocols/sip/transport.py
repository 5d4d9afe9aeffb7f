"""SIP transports (RFC 3261 §18): datagrams over UDP, framed messages over
TCP and TLS, both directions.

Invariants:

* Every received datagram or framed message is handed to ``receive`` once,
  already parsed; a request's top Via is stamped first (§18.2.1
  ``received``, RFC 3581 ``rport``). A request that does not parse gets
  its error response here (400/505/513/413 with what was read of its
  headers, ``wire.error_response``) and never reaches the transaction
  layer; a response that does not parse is dropped (§18.1.2).
* A stream whose framing is lost (``SipError.fatal``: a missing or lying
  Content-Length, a header section or body over the limits) is answered
  once, where the request was readable, and closed: what follows on it
  cannot be trusted to start a message (after ``LINGER`` seconds, so the
  answers to requests read before the break still go out).
* Inbound streams are admitted by the listener's connection table
  (``listen.py``); every stream, inbound or outbound, is closed after
  ``SIPIdleTimeout`` seconds without a byte. Outbound streams are kept per
  (transport, address, port) and reused; a stream the peer opened is used
  for every response on it and for requests to that peer's address and
  port (RFC 3261 §18.2.2, RFC 5923 spirit), so a phone behind NAT
  reachable only over its own connection still gets its calls.
* Sends never raise to the caller except :class:`TransportError`, which the
  transaction layer turns into a synthesized 503 (§8.1.3.1).
* **Several worker processes** (``serve --worker I/N``, N > 1) share the
  listening ports (SO_REUSEPORT); the kernel hashes each datagram's source
  address and port to one worker, so a phone's requests and their
  retransmissions always reach the same one, but the responses to a request
  this worker sent come from another address and could reach any worker.
  So each worker also binds a *client* UDP socket (an ephemeral port on the
  listen address, :attr:`Transports.client_port`): every request sent over
  UDP (a forwarded request, a CANCEL, an ACK) leaves from it, and the
  transaction layer names its port in the Via sent-by, where responses go
  (RFC 3261 §18.1.1, §18.2.2; RFC 3581 ``rport`` answers to the source
  port, the same one). Responses leave from the listening socket, the
  address and port the request was sent to. With one worker there is no
  client socket: everything leaves from the listening port, as before.
  A consequence: a phone behind a NAT whose filter admits only the address
  *and port* it sent to (address-and-port-dependent filtering, Linux
  conntrack without a SIP helper) drops an INVITE that comes from a client
  port; such phones need one worker, or a NAT that admits the server's
  address (or TCP/TLS from one worker).
* **Streams belong to the worker that accepted or opened them.** A phone
  registered over TCP through worker A and called through worker B gets a
  new connection from B to its Contact address (B knows nothing of A's
  connection). A phone behind NAT, reachable only over the connection it
  opened, is then unreachable from B (the call fails with 408/503 after
  the connect attempt): keeping calls on the registering worker's flow
  needs RFC 5626 outbound or a hand-over between workers, both out of
  scope; with one worker nothing changes.

Choices where the RFCs leave one:

* An error response to an unparsable request over UDP goes to the
  datagram's source address and port, not to the Via's sent-by: the sent-by
  of a message that failed to parse is not trustworthy, and the source is
  what RFC 3581 would answer to anyway.
* Outbound TLS checks the peer's certificate chain against the system's
  trust store but not its host name, which the transport does not know (it
  is given an address); ``SIPTLSVerify`` NO turns the check off for
  private peers with self-signed certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waypost.protocols.sip.headers import Headers, parse_via
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.wire import (
    KeepAlive,
    SipLimits,
    SipMessage,
    SipRequest,
    StreamFramer,
    error_response,
    parse_message,
)

log = logging.getLogger("waypost.sip.transport")

STREAMS = ("tcp", "tls")
UDP_MAX = 65_507
"""The largest UDP payload over IPv4."""
LINGER = 1.0
"""Seconds a stream whose framing broke stays open for answers already due."""
CONNECT_TIMEOUT = 10.0
"""Seconds an outbound TCP/TLS connection (and its handshake) may take."""
UDP_BUFFER = 4 * 1024 * 1024
"""Receive buffer asked for the UDP socket (the kernel caps it at
``net.core.rmem_max``): a burst of datagrams that arrives while the loop is
busy waits there instead of being dropped (the default, ~200 kB, is a few
hundred INVITEs); a dropped response costs a retransmission T1 later."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a message goes or came from."""

    transport: str  # "udp" | "tcp" | "tls"
    address: str  # an IP literal
    port: int
    connection: object | None = None  # siptx only: a stream to answer on; others never set it


class TransportError(Exception):
    """A message could not be sent (no route, refused, reset, timed out)."""


Receive = Callable[[SipMessage, Destination], None]


def _host(address: str) -> str:
    return address.removeprefix("[").removesuffix("]")


def stamp_via(request: SipRequest, source: Destination) -> None:
    """§18.2.1 and RFC 3581 §4: ``received`` when the top Via's sent-by is
    not the source address, ``rport`` filled when the Via asks for it."""
    _stamp(request.headers, source)


def _stamp(headers: Headers, source: Destination) -> None:
    values = headers.values("Via")
    if not values:
        return
    via = parse_via(values[0])
    stamped = via.received_from(source.address, source.port)
    if stamped is not via:
        headers.pop_first_value("Via")
        headers.add("Via", str(stamped), first=True)


def response_destination(request: SipRequest, source: Destination) -> Destination:
    """Where the responses to ``request`` go (§18.2.2, RFC 3581 §4): over a
    stream, the same connection; over UDP the ``received`` address (else
    sent-by host) at the ``rport`` (else sent-by port, else 5060). ``maddr``
    (multicast) is not supported: answering to an address the request names
    would make this server a reflector."""
    if source.transport in STREAMS:
        return source
    via = request.top_via
    address = via.received or _host(via.host)
    try:
        ipaddress.ip_address(_host(address))
    except ValueError:  # stamp_via adds received to a name: not reached
        address = source.address
    port = via.rport if via.rport is not None else via.port or 5060
    return Destination("udp", _host(address), port)


class StreamConnection:
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(self, transport: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.transport = transport
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        self.address: str = peer[0]
        self.port: int = peer[1]
        self.closed = False
        self.watchers: set[Callable[[], None]] = set()
        """Called once when the connection closes (client transactions on it)."""

    def __repr__(self) -> str:
        return f"<{self.transport} {self.address}:{self.port}>"

    def send(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            raise TransportError(f"connection to {self.address}:{self.port} closed")
        self.writer.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            watchers, self.watchers = self.watchers, set()
            for watcher in watchers:
                try:
                    watcher()
                except Exception:
                    log.exception("SIP: a connection watcher failed")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.datagram(data, addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and friends
        log.debug("SIP/UDP: %s", exc)


class Transports:
    """The UDP socket, the TCP/TLS streams, and sending on any of them."""

    def __init__(self, limits: SipLimits, receive: Receive, *, idle_timeout: float = 300.0,
                 client_tls: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.receive = receive
        self.idle_timeout = idle_timeout
        self.client_tls = client_tls
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_client: asyncio.DatagramTransport | None = None
        """The worker's private UDP socket for requests (several workers only)."""
        self.client_port: int | None = None
        self.local: dict[str, tuple[str, int]] = {}
        """transport -> the (address, port) it listens on."""
        self.outbound: dict[tuple[str, str, int], StreamConnection] = {}
        self.inbound: dict[tuple[str, str, int], StreamConnection] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Future[StreamConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- receiving -------------------------------------------------------

    async def start_udp(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Bind UDP; ``reuse_port`` when worker processes share the port (the
        kernel then hashes each source address and port to one of them),
        and then a private client socket too (see the module notes)."""
        self.udp = await self._bind_udp(host, port, reuse_port)
        bound = self.udp.get_extra_info("sockname")
        self.local["udp"] = (host, bound[1] if bound else port)
        if reuse_port:
            self.udp_client = await self._bind_udp(host, 0, False)
            self.client_port = int(self.udp_client.get_extra_info("sockname")[1])

    async def _bind_udp(self, host: str, port: int, reuse_port: bool
                        ) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(host, port), reuse_port=reuse_port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        return transport

    def datagram(self, data: bytes, address: str, port: int) -> None:
        source = Destination("udp", address, port)
        try:
            message = parse_message(data, limits=self.limits)
        except SipError as exc:
            self._refuse(exc, source)
            return
        self._deliver(message, source)

    def _deliver(self, message: SipMessage, source: Destination) -> None:
        if isinstance(message, SipRequest):
            try:
                stamp_via(message, source)
            except SipError:  # parse_message read the Via already
                return
        try:
            self.receive(message, source)
        except Exception:
            log.exception("SIP: handling a message from %s:%d failed", source.address,
                          source.port)

    def _refuse(self, error: SipError, source: Destination) -> None:
        if error.headers is not None and not error.drop:
            try:  # so the error goes where a NAT lets it through (RFC 3581)
                _stamp(error.headers, source)
            except SipError:
                pass
        answer = error_response(error)
        if answer is None:
            log.debug("SIP: dropped from %s:%d: %s", source.address, source.port, error.reason)
            return
        log.info("SIP: %d %s to %s %s:%d", error.status, error.reason, source.transport,
                 source.address, source.port)
        with contextlib.suppress(TransportError):
            self.send_now(answer.to_bytes(), source)

    async def serve_stream(self, transport: str, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Read an inbound connection until it closes, idles or breaks."""
        conn = StreamConnection(transport, reader, writer)
        key = (transport, conn.address, conn.port)
        self.inbound[key] = conn
        try:
            await self._read(conn)
        finally:
            if self.inbound.get(key) is conn:
                del self.inbound[key]

    async def _read(self, conn: StreamConnection) -> None:
        framer = StreamFramer(self.limits)
        source = Destination(conn.transport, conn.address, conn.port, conn)
        try:
            while not conn.closed:
                try:
                    data = await asyncio.wait_for(conn.reader.read(65536), self.idle_timeout)
                except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
                    return
                if not data:
                    return
                framer.feed(data)
                while True:
                    try:
                        item = framer.next()
                    except SipError as exc:
                        self._refuse(exc, source)
                        if exc.fatal:
                            await self._linger(conn)
                            return
                        continue
                    if item is None:
                        break
                    if isinstance(item, KeepAlive):
                        if item.answer:
                            with contextlib.suppress(TransportError):
                                conn.send(item.answer)
                        continue
                    self._deliver(item, source)
        finally:
            conn.close()

    @staticmethod
    async def _linger(conn: StreamConnection) -> None:
        """Nothing more is read; answers to the requests read before the
        framing broke get ``LINGER`` seconds to go out, then it closes."""
        await asyncio.sleep(LINGER)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.writer.drain(), LINGER)

    # -- sending ---------------------------------------------------------

    def send_now(self, data: bytes, destination: Destination) -> StreamConnection | None:
        """Send without waiting: over UDP, or on the stream the destination
        names (returned). TransportError when that is impossible."""
        if destination.transport == "udp":
            sock = self.udp
            if self.udp_client is not None and not data.startswith(b"SIP/2.0 "):
                sock = self.udp_client  # a request: its Via names this port
            if sock is None or sock.is_closing():
                raise TransportError("no UDP socket")
            if len(data) > UDP_MAX:
                raise TransportError("message too large for UDP")
            try:
                sock.sendto(data, (destination.address, destination.port))
            except OSError as exc:
                raise TransportError(str(exc)) from exc
            return None
        conn = destination.connection
        if not isinstance(conn, StreamConnection) or conn.closed:
            conn = self._open_stream(destination)
            if conn is None:
                raise TransportError("no connection")
        conn.send(data)
        return conn

    def ready(self, destination: Destination) -> bool:
        """Whether :meth:`send_now` can send to ``destination`` (no connect needed)."""
        if destination.transport == "udp":
            return True
        conn = destination.connection
        if isinstance(conn, StreamConnection) and not conn.closed:
            return True
        return self._open_stream(destination) is not None

    def _open_stream(self, destination: Destination) -> StreamConnection | None:
        key = (destination.transport, destination.address, destination.port)
        for table in (self.outbound, self.inbound):
            conn = table.get(key)
            if conn is not None and not conn.closed:
                return conn
        return None

    async def send(self, data: bytes, destination: Destination) -> StreamConnection | None:
        """Send, opening (or reusing) a stream when needed; the stream used."""
        if destination.transport == "udp":
            return self.send_now(data, destination)
        conn = destination.connection
        if not isinstance(conn, StreamConnection) or conn.closed:
            conn = self._open_stream(destination) or await self._connect(destination)
        conn.send(data)
        return conn

    async def _connect(self, destination: Destination) -> StreamConnection:
        key = (destination.transport, destination.address, destination.port)
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StreamConnection] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            context = None
            if destination.transport == "tls":
                context = self.client_tls or ssl.create_default_context()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    destination.address, destination.port, ssl=context,
                    limit=2**16), CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
                error = TransportError(f"connect to {destination.address}:"
                                       f"{destination.port}: {exc}")
                future.set_exception(error)
                future.exception()  # retrieved: nobody else may be waiting
                raise error from exc
            conn = StreamConnection(destination.transport, reader, writer)
            self.outbound[key] = conn
            future.set_result(conn)
            self._spawn(self._keep(key, conn))
            return conn
        finally:
            self._connecting.pop(key, None)

    async def _keep(self, key: tuple[str, str, int], conn: StreamConnection) -> None:
        try:
            await self._read(conn)
        finally:
            if self.outbound.get(key) is conn:
                del self.outbound[key]

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for udp in (self.udp, self.udp_client):
            if udp is not None:
                udp.close()
        for conn in [*self.outbound.values(), *self.inbound.values()]:
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
