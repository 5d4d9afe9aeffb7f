"""WebUser listeners: HTTP on ``WebUserPort`` (8100) and HTTPS on
``WebUserSPort`` (9100, the server certificate), web.md §1.

One aiohttp application, one ``AppRunner``, two sites, all in the server's
event loop. HTTP/1.1 keep-alive is aiohttp's (``KEEPALIVE`` seconds idle);
header lines and fields are bounded by aiohttp's parser, bodies by
``WebUserMaxRequest``. The login guard is the process-wide one, so failed
web logins count with IMAP, POP3 and SMTP AUTH. Idle sessions are swept
every ``SWEEP`` seconds (lookups check the timeout too). Connections are
admitted by ``admission.serve`` (per-address limits, 503 when over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiohttp import web

from waypost.protocols.connlimits import ConnectionLimits
from waypost.protocols.http.admission import serve
from waypost.protocols.http.webuser import WebUser, build_app
from waypost.protocols.listen import ListenContext, Listener, TLSAcceptor, shares_ports
from waypost.services.login_guard import shared_guard
from waypost.services.queue import Queue
from waypost.services.reception import Reception

log = logging.getLogger("waypost.http")

KEEPALIVE = 75.0
SWEEP = 60.0
DEFAULT_MAX_REQUEST = 1024 * 1024
MODES = (("WebUser", "WebUserPort", False), ("WebUserS", "WebUserSPort", True))


class WebContext(ListenContext, Protocol):
    """A listen context with the queue Send submits to, as SMTP AUTH does."""

    @property
    def queue(self) -> Queue | None: ...


async def start_webuser(server: WebContext) -> list[Listener]:
    reception = Reception(server.services, server.queue) if server.queue is not None else None
    webuser = WebUser(server.services, shared_guard(), tls=server.tls, reception=reception)
    max_request = webuser.settings.size("WebUserMaxRequest") or 50 * DEFAULT_MAX_REQUEST
    app = build_app(webuser, max_request=max_request)
    runner = web.AppRunner(app, access_log=logging.getLogger("waypost.http.access"),
                           keepalive_timeout=KEEPALIVE, shutdown_timeout=5.0)
    await runner.setup()

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP)
            with contextlib.suppress(Exception):  # the store is away: next time
                await webuser.run(webuser.sessions.expire)

    sweeper = asyncio.create_task(sweep())
    listeners: list[Listener] = []
    servers: list[asyncio.Server | TLSAcceptor] = []
    closed = False

    async def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        for srv in servers:
            srv.close()
        await runner.cleanup()
        webuser.close()

    limits = ConnectionLimits.from_settings(webuser.settings)
    assert runner.server is not None
    for name, port_setting, secure in MODES:
        if secure and server.tls is None:
            log.warning("%s not started: no TLS context", name)
            continue
        port = server.port(port_setting)
        servers.append(await serve(runner.server, server.listen, port, limits=limits,
                                   ssl_context=server.tls if secure else None, name=name,
                                   log=log, reuse_port=shares_ports(server)))
        log.info("%s listening on %s:%d", name, server.listen, port)
        listeners.append(Listener(name, server.listen, port, close))
    return listeners
