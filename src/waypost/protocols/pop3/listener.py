"""POP3 listeners: 110 (plain, STLS offered) and 995 (implicit TLS).

Both share one :class:`PostOffice`, whose maildrop locks are in the store,
so a maildrop locked through one port (or another process) is locked for
all, and the process-wide login guard, so password
guessing is counted across POP3 and the other protocols.
"""

from __future__ import annotations

import asyncio
import logging

from waypost.protocols.connlimits import ConnectionLimits, Refusal
from waypost.protocols.listen import ListenContext, Listener, listen
from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.office import PostOffice
from waypost.protocols.pop3.session import ListenerConfig, Session
from waypost.services.login_guard import shared_guard

log = logging.getLogger("waypost.pop3")

MODES = (("POP3", "POP3Port", False), ("POP3S", "POP3SPort", True))


async def start_pop3(server: ListenContext) -> list[Listener]:
    office = PostOffice(server.services, shared_guard())
    await office.refresh()
    limits = ConnectionLimits.from_settings(office.settings)

    def refuse(refusal: Refusal) -> bytes:
        """RFC 3206 §4: SYS/TEMP, try again later (IN-USE is for a locked maildrop)."""
        return wire.err(refusal.text, wire.SYS_TEMP).to_bytes()

    listeners: list[Listener] = []
    for name, port_setting, implicit in MODES:
        config = ListenerConfig(tls=server.tls, implicit_tls=implicit)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      config: ListenerConfig = config) -> None:
            await office.refresh()
            await Session(office, config, reader, writer).run()

        listeners.append(await listen(server, name, port_setting, run, limits=limits,
                                      refuse=refuse, implicit_tls=implicit, log=log))
    return listeners
