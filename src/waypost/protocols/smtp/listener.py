"""SMTP listeners: 25 (MX), 587 (submission) and 465 (implicit TLS)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from waypost.protocols.smtp.session import ListenerConfig, Session
from waypost.protocols.smtp.wire import Reply
from waypost.services.reception import Reception

if TYPE_CHECKING:
    from waypost.server import Listener, Server

log = logging.getLogger("waypost.smtp")

MODES = (
    ("SMTP", "SMTPPort", "mx"),
    ("Submission", "SubmissionPort", "submission"),
    ("SMTPS", "SMTPSPort", "smtps"),
)


async def start_smtp(server: Server) -> list[Listener]:
    from waypost.server import Listener

    reception = Reception(server.services, server.queue, getattr(server, "delivery", None))
    await reception.refresh()
    hostname = reception.main_domain
    limit = reception.settings.number("MaxConnections")
    listeners: list[Listener] = []
    for name, port_setting, mode in MODES:
        config = ListenerConfig(mode=mode, tls=server.tls, hostname=hostname)
        active: set[asyncio.Task[None]] = set()

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            config: ListenerConfig = config,
            active: set[asyncio.Task[None]] = active,
        ) -> None:
            task = asyncio.current_task()
            if len(active) >= limit:
                writer.write(Reply(421, "4.7.0", "Too many connections, try later").to_bytes())
                writer.close()
                return
            if task is not None:
                active.add(task)
            try:
                await Session(reception, config, reader, writer).run()
            except Exception:
                log.exception("SMTP session failed")
            finally:
                if task is not None:
                    active.discard(task)

        port = server.port(port_setting)
        ssl_ctx = server.tls if mode == "smtps" else None
        srv = await asyncio.start_server(
            handle, server.listen, port, ssl=ssl_ctx, limit=2**20, reuse_address=True
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
