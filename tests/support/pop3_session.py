"""An in-process POP3 session on a loopback socket, with a stub post office:
for what a ``waypost serve`` process cannot show (the AUTHORIZATION state
seen from a non-loopback address, timers)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from waypost.protocols.pop3.session import ListenerConfig, Session
from waypost.services.login_guard import Attempt
from waypost.services.mailaccess.maildrop import MaildropLocks
from waypost.settings import ServerSettings


class StubOffice:
    """Just enough PostOffice for the AUTHORIZATION state."""

    def __init__(self, **settings: str) -> None:
        self.settings = ServerSettings.from_store(settings)
        self.hostname = "main.dom"
        self.locks = MaildropLocks()
        self.logins: list[str] = []

    async def login(self, ip: str, login: str, password: str) -> Attempt:
        self.logins.append(login)
        return Attempt(None)


async def _session(
    office: StubOffice, script: Callable[..., Awaitable[None]], tls: ssl.SSLContext | None = None
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(office, ListenerConfig(tls), reader, writer).run()  # type: ignore[arg-type]

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def line() -> str:
        return (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n")

    async def cmd(text: str) -> str:
        writer.write(text.encode() + b"\r\n")
        return await line()

    try:
        await script(line, cmd, reader)
    finally:
        writer.close()
        srv.close()
        await srv.wait_closed()


def run_session(
    office: StubOffice, script: Callable[..., Awaitable[None]], tls: ssl.SSLContext | None = None
) -> None:
    asyncio.run(asyncio.wait_for(_session(office, script, tls), 20))

