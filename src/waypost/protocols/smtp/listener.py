"""SMTP listeners: 25 (MX), 587 (submission) and 465 (implicit TLS).

All three share one :class:`Reception` over the server's queue; ETRN/ATRN
reach the delivery runner through it when the server has one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from waypost.protocols.connlimits import ConnectionLimits, Refusal
from waypost.protocols.listen import ListenContext, Listener, listen
from waypost.protocols.smtp.session import ListenerConfig, Session
from waypost.protocols.smtp.wire import Reply
from waypost.services.queue import Queue
from waypost.services.reception import Reception, Turner

log = logging.getLogger("waypost.smtp")

MODES = (
    ("SMTP", "SMTPPort", "mx"),
    ("Submission", "SubmissionPort", "submission"),
    ("SMTPS", "SMTPSPort", "smtps"),
)


class SMTPContext(ListenContext, Protocol):
    """A listen context with the queue SMTP submits to (and the runner that
    turns queues around for ETRN/ATRN, smtp.md §6)."""

    @property
    def queue(self) -> Queue: ...

    @property
    def delivery(self) -> Turner | None: ...


async def start_smtp(server: SMTPContext) -> list[Listener]:
    reception = Reception(server.services, server.queue, server.delivery)
    await reception.refresh()
    hostname = reception.main_domain
    limits = ConnectionLimits.from_settings(reception.settings)

    def refuse(refusal: Refusal) -> bytes:
        """RFC 5321 §3.8: 421 with the server's name, then close."""
        return Reply(421, "4.7.0", f"{hostname} {refusal.text}").to_bytes()

    listeners: list[Listener] = []
    for name, port_setting, mode in MODES:
        config = ListenerConfig(mode=mode, tls=server.tls, hostname=hostname)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      config: ListenerConfig = config) -> None:
            await Session(reception, config, reader, writer).run()

        listeners.append(await listen(server, name, port_setting, run, limits=limits,
                                      refuse=refuse, implicit_tls=mode == "smtps", log=log,
                                      stream_limit=2**20))
    return listeners
