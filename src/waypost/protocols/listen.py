"""What every TCP listener shares: binding, the connection limits, closing.

A protocol gives a session runner and the bytes to send when a limit is
reached (its own refusal: SMTP 421, POP3 -ERR, IMAP BYE); this module
accepts, counts in a :class:`~waypost.protocols.connlimits.ConnectionTable`
(per address, per network, per listener), and on shutdown cancels the
sessions still running before the socket closes.

Implicit-TLS ports (:class:`TLSAcceptor`, also used by the web listeners)
count a connection from its TCP accept, not from the end of its handshake:
asyncio's ``create_server(ssl=...)`` calls back only after the handshake, so
one address could otherwise hold any number of connections that never send
a ClientHello (each a file descriptor until the loop's 60 s handshake
timeout), the flood of issue 13 point 1 moved to port 993. The acceptor
accepts itself, asks the table at once, and only then hands the socket to
the loop with ``connect_accepted_socket(ssl=...)``; starting TLS on a stream
after admission instead loses the ClientHello under uvloop. A refused
client still gets its protocol's refusal over TLS, so it can read why, but
at most ``REFUSAL_HANDSHAKES`` such handshakes run at once per listener,
each for at most ``REFUSAL_HANDSHAKE_SECONDS``; beyond that a refused
socket is closed at once.

Invariant: this module knows nothing of ``server.py``, which imports the
listeners. What a listener needs from the process that starts it is the
:class:`ListenContext` declared here (``server.Server`` is one); what it gives
back is a list of :class:`Listener`. Every admitted connection's ticket is
released exactly once (:class:`Claim`); an accept error (EMFILE) never stops
a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from waypost.protocols.connlimits import (
    ConnectionLimits,
    ConnectionTable,
    Refusal,
    RefusalLog,
    Ticket,
)
from waypost.services.container import Services

SessionRunner = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RefusalReply = Callable[[Refusal], bytes]

_refusals = RefusalLog()
"""Process-wide, so a flood on every port still logs once a minute per address."""


@dataclass
class Listener:
    """One bound socket: what it is and where, for the start-up banner."""

    name: str
    host: str
    port: int
    close: Callable[[], Awaitable[None]]


class ListenContext(Protocol):
    """What a protocol's listeners are started with."""

    @property
    def services(self) -> Services: ...

    @property
    def listen(self) -> str:
        """The address to bind."""
        ...

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The server certificate, for implicit TLS and STARTTLS."""
        ...

    def port(self, setting: str) -> int:
        """The port a ``...Port`` setting names, with the port offset added."""
        ...

    @property
    def worker(self) -> int:
        """This process's index among the server's worker processes (0 when alone)."""
        ...

    @property
    def workers(self) -> int:
        """How many worker processes share the listeners (1: this one alone)."""
        ...


def shares_ports(server: ListenContext) -> bool:
    """Whether the listeners are bound with ``SO_REUSEPORT``: several worker
    processes bind the same ports and the kernel spreads connections (and
    UDP datagrams, by source address and port) over them. A lone process
    does not set it, so a second server started by mistake on the same
    ports fails to bind instead of silently taking half the traffic."""
    return server.workers > 1


async def listen(
    server: ListenContext,
    name: str,
    port_setting: str,
    run: SessionRunner,
    *,
    limits: ConnectionLimits,
    refuse: RefusalReply,
    implicit_tls: bool = False,
    log: logging.Logger,
    stream_limit: int = 2**16,
) -> Listener:
    """Bind ``name`` on its port and run ``run`` for every connection the
    ``limits`` admit (the others get ``refuse(refusal)`` and are closed)."""
    active: set[asyncio.Task[None]] = set()
    table = ConnectionTable(limits)

    async def session(claim: Claim, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            active.add(task)
        try:
            await run(reader, writer)
        except Exception:
            log.exception("%s session failed", name)
            writer.close()
        finally:
            claim.release()
            if task is not None:
                active.discard(task)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = table.admit(endpoints(writer)[0])
        if isinstance(ticket, Refusal):
            log_refusal(log, name, ticket)
            writer.write(refuse(ticket))
            writer.close()
            return
        await session(Claim(table, ticket), reader, writer)

    def admitted(claim: Claim) -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=stream_limit)
        return asyncio.StreamReaderProtocol(reader, partial(session, claim))

    port = server.port(port_setting)
    srv: asyncio.Server | TLSAcceptor
    if implicit_tls and server.tls is not None:
        srv = await TLSAcceptor.start(
            server.listen, port, server.tls, table, name=name, log=log,
            admitted=admitted, refused=lambda refusal: _Refuser(refuse(refusal)),
            reuse_port=shares_ports(server))
    else:
        srv = await asyncio.start_server(
            handle, server.listen, port, limit=stream_limit, reuse_address=True,
            reuse_port=shares_ports(server) or None)
    log.info("%s listening on %s:%d", name, server.listen, port)

    async def close() -> None:
        srv.close()
        for task in list(active):
            task.cancel()
        await asyncio.gather(*active, return_exceptions=True)
        await srv.wait_closed()

    return Listener(name, server.listen, port, close)


REFUSAL_HANDSHAKES = 64
"""TLS handshakes at once per listener only to tell refused clients why."""

REFUSAL_HANDSHAKE_SECONDS = 5.0
"""How long a refused client may take over its handshake."""


class Claim:
    """An admitted connection's ticket, released once by whoever ends the
    connection first: the session, or the acceptor when the handshake fails."""

    __slots__ = ("_table", "_ticket")

    def __init__(self, table: ConnectionTable, ticket: Ticket) -> None:
        self._table = table
        self._ticket: Ticket | None = ticket

    def release(self) -> None:
        if self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            self._table.release(ticket)


class _Refuser(asyncio.Protocol):
    """Says the refusal once the handshake is done, then closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer: Any = transport  # uvloop's transports are no asyncio subclasses
        writer.write(self.reply)
        writer.close()


def bind(host: str, port: int, backlog: int = 511, *,
         reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names (as asyncio binds
    them: SO_REUSEADDR, IPv6 sockets IPv6-only), non-blocking; with
    ``reuse_port``, shared with the other worker processes (:func:`shares_ports`)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class TLSAcceptor:
    """An implicit-TLS listener that admits at TCP accept (see the module
    docstring); ``close``/``wait_closed`` as an ``asyncio.Server``."""

    def __init__(self, socks: list[socket.socket], context: ssl.SSLContext,
                 table: ConnectionTable, *, name: str, log: logging.Logger,
                 admitted: Callable[[Claim], asyncio.BaseProtocol],
                 refused: Callable[[Refusal], asyncio.BaseProtocol]) -> None:
        self.socks = socks
        self.context = context
        self.table = table
        self.name = name
        self.log = log
        self.admitted = admitted
        self.refused = refused
        self.refusing = 0
        self.tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, host: str, port: int, context: ssl.SSLContext,
                    table: ConnectionTable, *, name: str, log: logging.Logger,
                    admitted: Callable[[Claim], asyncio.BaseProtocol],
                    refused: Callable[[Refusal], asyncio.BaseProtocol],
                    reuse_port: bool = False) -> TLSAcceptor:
        acceptor = cls(bind(host, port, reuse_port=reuse_port), context, table, name=name, log=log,
                       admitted=admitted, refused=refused)
        for sock in acceptor.socks:
            acceptor._spawn(acceptor._accept(sock))
        return acceptor

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listening)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: wait, keep listening
                self.log.warning("%s: accept failed: %s", self.name, exc)
                await asyncio.sleep(0.1)
                continue
            peer = address[0] if isinstance(address, tuple) else str(address)
            decision = self.table.admit(peer)
            if isinstance(decision, Refusal):
                log_refusal(self.log, self.name, decision)
                if self.refusing >= REFUSAL_HANDSHAKES:
                    conn.close()
                else:
                    self._spawn(self._refuse(conn, decision))
            else:
                self._spawn(self._open(conn, Claim(self.table, decision)))

    async def _open(self, conn: socket.socket, claim: Claim) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: self.admitted(claim), conn,
                                               ssl=self.context)
        except BaseException as exc:  # the handshake failed, timed out or was cancelled
            claim.release()
            conn.close()
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            self.log.debug("%s: TLS handshake failed: %s", self.name, exc)

    async def _refuse(self, conn: socket.socket, refusal: Refusal) -> None:
        loop = asyncio.get_running_loop()
        self.refusing += 1
        try:
            await loop.connect_accepted_socket(
                lambda: self.refused(refusal), conn, ssl=self.context,
                ssl_handshake_timeout=REFUSAL_HANDSHAKE_SECONDS)
        except Exception as exc:
            conn.close()
            self.log.debug("%s: TLS handshake of a refused client failed: %s", self.name, exc)
        finally:
            self.refusing -= 1

    def close(self) -> None:
        """Stop accepting and cancel the handshakes in progress; admitted
        sessions are their owner's to end."""
        for task in list(self.tasks):
            task.cancel()
        # After the cancelled accepts have let go of their sockets' readers.
        asyncio.get_running_loop().call_soon(self._close_sockets)

    def _close_sockets(self) -> None:
        for sock in self.socks:
            sock.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


def log_refusal(log: logging.Logger, listener: str, refusal: Refusal) -> None:
    """One INFO line per refused address a minute at most (see RefusalLog)."""
    refused = _refusals.note(refusal.address, time.monotonic())
    if refused is not None:
        scope = refusal.scope.name.lower()
        log.info("%s: refused %s: over the %s connection limit (%d); %d refused since the "
                 "last line about it", listener, refusal.address, scope, refusal.limit, refused)


def endpoints(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(client IP, server IP) of a connection: trust depends on the first,
    the domain of bare login names on the second."""
    peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
    local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
    return peer[0], local[0]


def is_loopback(ip: str) -> bool:
    """Loopback clients may send passwords without TLS (nothing to sniff)."""
    return ip.startswith("127.") or ip == "::1"
