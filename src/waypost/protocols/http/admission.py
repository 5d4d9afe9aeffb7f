"""Connection limits for the aiohttp listeners, checked at accept.

aiohttp's sites take every connection; :func:`serve` binds the socket itself
and puts :class:`Admission` in front of each connection aiohttp's
``web.Server`` would get. An admitted connection is handed to aiohttp
unchanged (every protocol callback is passed on); a refused one never
reaches aiohttp.

A refused client gets ``503 Service Unavailable`` with ``Retry-After``
(RFC 9110 §15.6.4, §10.2.3) at once, before it has sent its request:
clients read the response after writing theirs, so nothing waits for the
request to be parsed. Closing at once could reset the connection before
the client has read the answer (its request still unread in our socket),
so the connection lingers, discarding input, until the client's request
head has arrived, ``LINGER_BYTES`` were read, or ``LINGER_SECONDS`` passed.
Refused connections are not counted, but each lingers for a bounded time.
On HTTPS the decision is made at TCP accept, before the handshake
(:class:`~waypost.protocols.listen.TLSAcceptor`), and handed in.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from waypost.protocols.connlimits import ConnectionLimits, ConnectionTable, Refusal, Ticket
from waypost.protocols.listen import Claim, TLSAcceptor, log_refusal

RETRY_AFTER = 60
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024


def refusal_response(refusal: Refusal) -> bytes:
    body = f"{refusal.text}\r\n".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Admission(asyncio.Protocol):
    """One accepted connection: admitted (aiohttp's protocol, made only now,
    does the rest) or refused (a 503, then a bounded linger)."""

    def __init__(self, table: ConnectionTable, factory: Callable[[], Any], name: str,
                 log: logging.Logger, decided: Claim | Refusal | None = None) -> None:
        self.table = table
        self.factory = factory
        self.name = name
        self.log = log
        self.decided = decided
        self.inner: Any = None
        self.claim: Claim | None = None
        self.refused: asyncio.Transport | None = None
        self.seen = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted = self.decided
        if admitted is None:
            peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
            decision = self.table.admit(peer[0])
            admitted = Claim(self.table, decision) if isinstance(decision, Ticket) else decision
        if isinstance(admitted, Claim):
            self.claim = admitted
            self.inner = self.factory()
            self.inner.connection_made(transport)
            return
        self.refused = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if self.decided is None:  # the acceptor logged its own
            log_refusal(self.log, self.name, admitted)
        self.refused.write(refusal_response(admitted))
        self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.claim is not None:
            self.claim.release()
            self.claim = None
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused is None:
            self.inner.data_received(data)
            return
        self.seen = (self.seen + data)[-LINGER_BYTES:]
        if b"\r\n\r\n" in self.seen or len(self.seen) >= LINGER_BYTES:
            self.refused.close()

    def eof_received(self) -> bool | None:
        if self.refused is None:
            result: bool | None = self.inner.eof_received()
            return result
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


async def serve(factory: Callable[[], Any], host: str, port: int, *, limits: ConnectionLimits,
                ssl_context: ssl.SSLContext | None, name: str,
                log: logging.Logger, reuse_port: bool = False) -> asyncio.Server | TLSAcceptor:
    """Bind ``host:port`` for aiohttp's ``web.Server`` ``factory``, one
    :class:`ConnectionTable` for this listener (``reuse_port``: see
    ``listen.shares_ports``)."""
    table = ConnectionTable(limits)
    if ssl_context is not None:
        return await TLSAcceptor.start(
            host, port, ssl_context, table, name=name, log=log,
            admitted=lambda claim: Admission(table, factory, name, log, claim),
            refused=lambda refusal: Admission(table, factory, name, log, refusal),
            reuse_port=reuse_port)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Admission(table, factory, name, log), host, port,
        reuse_address=True, reuse_port=reuse_port or None,
    )
