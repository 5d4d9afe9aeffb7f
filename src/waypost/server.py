"""The server process: services over one store, the listeners, signals.

:func:`components` names the background services and the protocol
listeners; each gets the :class:`Server` (services, listen address, port
offset, TLS context, queue) and listeners return what they bound. ``serve`` runs until SIGINT or
SIGTERM, then closes every listener and the store. SIGHUP reloads the TLS
certificate and key (settings TLSCertificate/TLSKey): new handshakes use the
new pair, open sessions go on; a pair that does not load is logged and the
old one stays (``tls.ServerTLS``).

Several processes (``waypost serve --workers N``, ``cli/supervisor.py``):
this module still runs ONE process, worker ``worker`` of ``workers``; the
supervisor calls :func:`prepare` once before it starts them, so that store
migrations and the first self-signed TLS pair happen once, not N times at
once. What runs where, per worker process:

* queue delivery (``start_delivery``): in every worker. Claiming a recipient
  is the queue's business (the lease, issue 15), so N runners never deliver
  one message twice; each worker also wakes at once for what it received.
  Blob GC (``DeliveryRunner._collect_garbage``) runs inside each runner; it is
  idempotent (only bodies untouched for an hour and named by no row go), so N
  runners cost N scans every 10 minutes, not harm; a runner flag to keep it to
  worker 0 belongs in runner.py (its owner's).
* the WebUser session sweeper: in every worker, since each sweeps the
  sessions held in its own memory.
* SIP bindings need no sweeper (expired ones are skipped on lookup).

Invariants: this is the top layer. It wires what the layers below may not
import: the protocols' SMTP client becomes the delivery relay's transport
(services import nothing from protocols), and the listeners see the server
only as ``protocols.listen.ListenContext`` (they import nothing from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waypost import logformat, tls
from waypost.protocols.listen import Listener
from waypost.services.container import Services, open_services
from waypost.tls import ServerTLS

__all__ = ["Listener", "Server", "prepare", "serve", "setup_logging"]

log = logging.getLogger("waypost")

ListenerFactory = Callable[["Server"], Awaitable[list[Listener]]]
Starter = Callable[["Server"], Awaitable[None]]


def components() -> tuple[list[Starter], list[ListenerFactory]]:
    """Background services first (the queue and its delivery), then the
    protocol listeners that feed them. Imported here so that the CLI does
    not load every protocol. The relay sends through the protocols' SMTP
    client, handed to it here (smtp.md §2.1); the SIP core forwards what it
    does not answer itself through the stateful proxy (sip.md §1)."""
    from waypost.protocols.http.listener import start_webuser
    from waypost.protocols.imap.listener import start_imap
    from waypost.protocols.pop3.listener import start_pop3
    from waypost.protocols.sip.listener import start_sip
    from waypost.protocols.sip.proxy import stateful_proxy
    from waypost.protocols.smtp.client import ClientTransport
    from waypost.protocols.smtp.listener import start_smtp
    from waypost.services.delivery.relay import Relay
    from waypost.services.delivery.runner import start_delivery

    relay = Relay(ClientTransport())
    sip = functools.partial(start_sip, proxy=stateful_proxy)
    return [functools.partial(start_delivery, relay=relay)], [start_smtp, start_pop3, start_imap,
                                                           start_webuser, sip]


@dataclass
class Server:
    """The running process: a ``ListenContext`` for every protocol's listeners."""

    services: Services
    listen: str = "0.0.0.0"
    port_offset: int = 0
    worker: int = 0
    """This process's index among ``workers`` processes sharing the ports."""
    workers: int = 1
    listeners: list[Listener] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    queue: Any = None
    delivery: Any = None
    tls: ssl.SSLContext | None = None
    certificate: ServerTLS | None = None
    _reloads: set[asyncio.Task[None]] = field(default_factory=set)

    def port(self, setting: str) -> int:
        """A port setting plus the offset (tests and non-root users shift every port)."""
        return self.services.settings().number(setting) + self.port_offset

    async def start(self) -> None:
        self.certificate = ServerTLS(await asyncio.to_thread(self._tls_context))
        self.tls = self.certificate.context
        starters, factories = components()
        for starter in starters:
            await starter(self)
        for factory in factories:
            self.listeners.extend(await factory(self))

    def _tls_context(self) -> ssl.SSLContext:
        """The configured certificate, or a self-signed one made on first start."""
        files = _certificate_files(self.services)
        log.info("TLS certificate %s, key %s", *files)
        return tls.server_context(*files)

    def reload_tls(self) -> None:
        """SIGHUP: load the configured pair anew (off the loop), then swap it in."""
        task = asyncio.get_running_loop().create_task(self._reload_tls())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_tls(self) -> None:
        if self.certificate is None:
            return
        try:
            context = await asyncio.to_thread(self._tls_context)
        except Exception as exc:  # a bad file must not take the listeners down
            log.error("TLS certificate not reloaded (the old one stays in use): %s", exc)
            return
        self.certificate.use(context)
        log.info("TLS certificate reloaded")

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


def _certificate_files(services: Services) -> tuple[Path, Path]:
    """The configured certificate and key, made (self-signed) when missing."""
    settings = services.settings()
    files = tls.certificate_files(
        services.data_dir, settings.text("TLSCertificate"), settings.text("TLSKey"),
        services.directory.main_domain())
    assert files is not None  # create=True
    return files


def prepare(data_dir: Path) -> None:
    """Open the store once (its migrations run), make the self-signed TLS pair
    if none is configured, and close: what a supervisor does before it starts
    its workers, so that they do not all do it at once."""
    services = open_services(data_dir)
    try:
        _certificate_files(services)
    finally:
        services.close()


def setup_logging(level: str = "INFO", log_format: str = "text", tag: str = "") -> None:
    """Log to stderr, as text lines or JSON objects (``logformat.py``); ``tag``
    names this process in every line when several share the log (``w1``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logformat.formatter(log_format, tag))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


async def _run(server: Server, ready: Callable[[Server], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    try:
        await server.start()
    except BaseException:
        # A listener that cannot bind (a port in use): stop what did start
        # (the delivery runner, the other listeners) before the store closes,
        # or a runner thread still in the store meets a closed connection.
        await server.stop()
        raise
    ready(server)
    await stop.wait()
    log.info("stopping")
    await server.stop()


FILE_LIMIT = 65536
"""Descriptors the server asks for at start, within the hard limit."""


def raise_file_limit() -> None:
    """Lift the soft descriptor limit (often 1024) towards the hard one: every
    connection is a descriptor, and the connection limits (MaxConnections,
    per listener) are meant to refuse a flood before the process runs out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # pragma: no cover - a container's policy
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    log.info("open-file limit %d", resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def serve(
    data_dir: Path,
    *,
    listen: str = "0.0.0.0",
    port_offset: int = 0,
    worker: int = 0,
    workers: int = 1,
    ready: Callable[[Server], None] = lambda server: None,
) -> None:
    """Run the server until SIGINT/SIGTERM; as worker ``worker`` of
    ``workers`` processes binding the same ports when ``workers > 1``."""
    raise_file_limit()
    services = open_services(data_dir)
    server = Server(services, listen=listen, port_offset=port_offset, worker=worker,
                    workers=workers)
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
