"""What every TCP listener shares: binding, the connection limits, closing.

A protocol gives a session runner and the bytes to send when a limit is
reached (its own refusal: SMTP 421, POP3 -ERR, IMAP BYE); this module
accepts, counts in a :class:`~waypost.protocols.connlimits.ConnectionTable`
(per address, per network, per listener), and on shutdown cancels the
sessions still running before the socket closes.

Invariant: this module knows nothing of ``server.py``, which imports the
listeners. What a listener needs from the process that starts it is the
:class:`ListenContext` declared here (``server.Server`` is one); what it gives
back is a list of :class:`Listener`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from waypost.protocols.connlimits import ConnectionLimits, ConnectionTable, Refusal, RefusalLog
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

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        ticket = table.admit(endpoints(writer)[0])
        if isinstance(ticket, Refusal):
            log_refusal(log, name, ticket)
            writer.write(refuse(ticket))
            writer.close()
            return
        if task is not None:
            active.add(task)
        try:
            await run(reader, writer)
        except Exception:
            log.exception("%s session failed", name)
            writer.close()
        finally:
            table.release(ticket)
            if task is not None:
                active.discard(task)

    port = server.port(port_setting)
    ssl_ctx: ssl.SSLContext | None = server.tls if implicit_tls else None
    srv = await asyncio.start_server(
        handle, server.listen, port, ssl=ssl_ctx, limit=stream_limit, reuse_address=True
    )
    log.info("%s listening on %s:%d", name, server.listen, port)

    async def close() -> None:
        srv.close()
        for task in list(active):
            task.cancel()
        await asyncio.gather(*active, return_exceptions=True)
        await srv.wait_closed()

    return Listener(name, server.listen, port, close)


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
