"""SMTP listeners: 25 (MX), 587 (submission) and 465 (implicit TLS)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from waypost.protocols.listen import listen
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
    reception = Reception(server.services, server.queue, getattr(server, "delivery", None))
    await reception.refresh()
    hostname = reception.main_domain
    limit = reception.settings.number("MaxConnections")
    busy = Reply(421, "4.7.0", "Too many connections, try later").to_bytes()
    listeners: list[Listener] = []
    for name, port_setting, mode in MODES:
        config = ListenerConfig(mode=mode, tls=server.tls, hostname=hostname)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      config: ListenerConfig = config) -> None:
            await Session(reception, config, reader, writer).run()

        listeners.append(await listen(server, name, port_setting, run, limit=limit,
                                      busy_reply=busy, implicit_tls=mode == "smtps", log=log,
                                      stream_limit=2**20))
    return listeners
