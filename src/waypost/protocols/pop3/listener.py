"""POP3 listeners: 110 (plain, STLS offered) and 995 (implicit TLS).

Both share one :class:`PostOffice`, so a maildrop locked through one port
is locked for the other, and the process-wide login guard, so password
guessing is counted across POP3 and the other protocols.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.maildrop import MaildropLocks, PostOffice
from waypost.protocols.pop3.session import ListenerConfig, Session
from waypost.services.login_guard import shared_guard

if TYPE_CHECKING:
    from waypost.server import Listener, Server

log = logging.getLogger("waypost.pop3")

MODES = (("POP3", "POP3Port", False), ("POP3S", "POP3SPort", True))


async def start_pop3(server: Server) -> list[Listener]:
    from waypost.server import Listener

    office = PostOffice(server.services, shared_guard(), MaildropLocks())
    await office.refresh()
    limit = office.settings.number("MaxConnections")
    listeners: list[Listener] = []
    for name, port_setting, implicit in MODES:
        config = ListenerConfig(tls=server.tls, implicit_tls=implicit)
        active: set[asyncio.Task[None]] = set()

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            config: ListenerConfig = config,
            active: set[asyncio.Task[None]] = active,
        ) -> None:
            task = asyncio.current_task()
            if len(active) >= limit:
                writer.write(wire.err("Too many connections, try later", wire.SYS_TEMP).to_bytes())
                writer.close()
                return
            if task is not None:
                active.add(task)
            try:
                await office.refresh()
                await Session(office, config, reader, writer).run()
            except Exception:
                log.exception("POP3 session failed")
                writer.close()
            finally:
                if task is not None:
                    active.discard(task)

        port = server.port(port_setting)
        ssl_ctx = server.tls if implicit else None
        srv = await asyncio.start_server(
            handle, server.listen, port, ssl=ssl_ctx, limit=2**16, reuse_address=True
        )
        listeners.append(Listener(name, server.listen, port, _closer(srv, active)))
        log.info("%s listening on %s:%d", name, server.listen, port)
    return listeners


def _closer(srv: asyncio.Server, active: set[asyncio.Task[None]]) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        srv.close()
        for task in list(active):
            task.cancel()
        await asyncio.gather(*active, return_exceptions=True)
        await srv.wait_closed()

    return close
