"""SIP listeners: UDP and TCP on ``SIPPort`` (5060), TLS on ``SIPTLSPort``
(5061), all shifted by the port offset (RFC 3261 §18, §26.2).

Invariants: one :class:`~waypost.protocols.sip.transport.Transports`, one
:class:`~waypost.protocols.sip.transaction.TransactionLayer` and one
:class:`~waypost.protocols.sip.core.Core` serve all three listeners, so a
transaction started over TCP may be answered over UDP and a phone's
connection is found whatever listener it came in on. TCP and TLS
connections are admitted through the same per-address connection table as
the mail listeners (``listen.py``); SIP has no greeting, so a refused
connection is closed without a word. Closing the listeners closes the
transactions (their timers cancelled), the streams and the UDP socket.

With several worker processes (``serve --worker I/N``) each worker runs its
own stack on the shared ports (SO_REUSEPORT) and binds a private UDP client
port for the requests it sends (``transport.py``: responses come back to
the worker holding the client transaction); what the workers share is the
store: bindings (``registrar.py``: a change in one shows at once in the
others) and nothing else. Nonces are per worker (``nonces.py``: another
worker's nonce is answered with ``stale=true``); TCP/TLS connections belong
to the worker that has them (``transport.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl

from waypost.protocols.connlimits import ConnectionLimits, Refusal
from waypost.protocols.listen import ListenContext, Listener, listen, shares_ports
from waypost.protocols.sip.core import Core, ProxyFactory
from waypost.protocols.sip.transaction import Timers, TransactionLayer, TransactionLimits
from waypost.protocols.sip.transport import Transports
from waypost.protocols.sip.wire import SipLimits

log = logging.getLogger("waypost.sip")

_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


def via_host(configured: str, listen_address: str, main_domain: str) -> str:
    """The host this server names itself by in Via and Record-Route."""
    host = configured.strip()
    if host:
        if not _HOST.fullmatch(host):
            raise ValueError(f"SIPHost {host!r} is no host name or address")
        return host
    if listen_address in ("", "0.0.0.0", "::"):
        return main_domain
    return f"[{listen_address}]" if ":" in listen_address else listen_address


class SipServer:
    """The running SIP stack of one process (tests reach its layer and core)."""

    def __init__(self, transports: Transports, layer: TransactionLayer, core: Core) -> None:
        self.transports = transports
        self.layer = layer
        self.core = core

    async def close(self) -> None:
        await self.layer.close()
        await self.transports.close()


async def start_sip(server: ListenContext, proxy: ProxyFactory | None = None
                    ) -> list[Listener]:
    """Bind SIP on UDP, TCP and TLS; ``proxy`` builds what handles the
    requests the core does not answer (default: 501)."""
    return (await start_sip_stack(server, proxy))[1]


async def start_sip_stack(server: ListenContext, proxy: ProxyFactory | None = None
                          ) -> tuple[SipServer, list[Listener]]:
    """:func:`start_sip`, also giving the stack (in-process tests inspect it)."""
    services = server.services
    settings = await asyncio.to_thread(services.settings)
    main_domain = settings.text("MainDomain")
    host = via_host(settings.text("SIPHost"), server.listen, main_domain)
    port, tls_port = server.port("SIPPort"), server.port("SIPTLSPort")
    client_tls = ssl.create_default_context()
    if not settings.flag("SIPTLSVerify"):
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_NONE
    else:
        client_tls.check_hostname = False  # we connect to addresses (see transport.py)
    layer_box: list[TransactionLayer] = []
    transports = Transports(SipLimits.from_settings(settings),
                            lambda message, source: layer_box[0].receive(message, source),
                            idle_timeout=float(settings.number("SIPIdleTimeout")),
                            client_tls=client_tls)
    layer = TransactionLayer(transports, host=host,
                             ports={"udp": port, "tcp": port, "tls": tls_port},
                             timers=Timers.from_settings(settings),
                             limits=TransactionLimits.from_settings(settings))
    layer_box.append(layer)
    core = Core(services, layer, proxy, own_hosts=(server.listen, host, main_domain))
    layer.user = core
    stack = SipServer(transports, layer, core)
    await transports.start_udp(server.listen, port, reuse_port=shares_ports(server))
    if transports.client_port is not None:
        layer.use_client_port("udp", transports.client_port)
        log.info("SIP/UDP listening on %s:%d, worker %d sending requests from port %d",
                 server.listen, port, server.worker, transports.client_port)
    else:
        log.info("SIP/UDP listening on %s:%d", server.listen, port)
    limits = ConnectionLimits.from_settings(settings)

    def refuse(refusal: Refusal) -> bytes:
        return b""

    async def run_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await transports.serve_stream("tcp", reader, writer)

    async def run_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await transports.serve_stream("tls", reader, writer)

    tcp = await listen(server, "SIP/TCP", "SIPPort", run_tcp, limits=limits, refuse=refuse,
                       log=log)
    listeners = [tcp]
    if server.tls is not None:
        listeners.append(await listen(server, "SIP/TLS", "SIPTLSPort", run_tls, limits=limits,
                                      refuse=refuse, implicit_tls=True, log=log))

    async def close_udp() -> None:
        await stack.close()

    return stack, [Listener("SIP/UDP", server.listen, port, close_udp), *listeners]
