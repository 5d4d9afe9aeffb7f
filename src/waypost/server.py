"""The server process: services over one store, the listeners, signals.

Protocol listeners register themselves in :data:`LISTENERS` as factories;
each gets the shared :class:`Services` and the listen address and port
offset, and returns started asyncio servers. ``serve`` runs until SIGINT or
SIGTERM, then closes every listener and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from waypost.services.container import Services, open_services

log = logging.getLogger("waypost")


@dataclass
class Listener:
    """One bound socket: what it is and where, for the start-up banner."""

    name: str
    host: str
    port: int
    close: Callable[[], Awaitable[None]]


ListenerFactory = Callable[["Server"], Awaitable[list[Listener]]]

LISTENERS: list[ListenerFactory] = []


@dataclass
class Server:
    services: Services
    listen: str = "0.0.0.0"
    port_offset: int = 0
    listeners: list[Listener] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def port(self, setting: str) -> int:
        return self.services.settings().number(setting) + self.port_offset

    async def start(self) -> None:
        for factory in LISTENERS:
            self.listeners.extend(await factory(self))

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.close()
        self.listeners.clear()


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _run(server: Server, ready: Callable[[Server], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    ready(server)
    await stop.wait()
    log.info("stopping")
    await server.stop()


def serve(
    data_dir: Path,
    *,
    listen: str = "0.0.0.0",
    port_offset: int = 0,
    ready: Callable[[Server], None] = lambda server: None,
) -> None:
    """Run the server until SIGINT/SIGTERM."""
    services = open_services(data_dir)
    server = Server(services, listen=listen, port_offset=port_offset)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is optional
            asyncio.run(_run(server, ready))
        else:
            uvloop.run(_run(server, ready))
    finally:
        services.close()
        log.info("stopped")
