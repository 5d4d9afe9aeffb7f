"""SMTP relay: deliver the messages of one SMTP queue to its target (smtp.md §2.1).

The delivery runner picks a queue (a mail domain, ``host:port`` or
``[ip]``) and hands :meth:`Relay.deliver` the messages waiting in it. This module
only *talks*: it resolves the queue name to addresses, opens one SMTP
session, sends every message over it and reports one :class:`Outcome` per
recipient. Queue state, retries and DSNs stay with the runner.

Decisions, and why:

* One connection for the whole call (``RSET`` between messages): a queue
  is one destination, and reconnecting per message multiplies handshakes.
* Connection-level trouble (no connection, refused greeting, broken
  session, ``421``) moves the unsettled recipients on to the next target;
  an explicit ``4xx``/``5xx`` to a command inside a live session is that
  recipient's answer and is final for this attempt (other MX hosts would
  normally say the same, and trying them all multiplies duplicates).
* When every target failed, every unsettled recipient is deferred with the
  last error seen, so the queue shows why.
* A permanent DNS answer (NXDOMAIN, null MX, the best MX being ourselves)
  fails every recipient at once with its RFC 3463 code; a temporary one
  defers them.
* STARTTLS is opportunistic and unverified, as everywhere in server-to-
  server SMTP; when the handshake breaks, the same host is retried once in
  plain text rather than the mail being stuck.
* The relay knows no SMTP syntax: it speaks through an
  :class:`~waypost.services.delivery.transport.SMTPTransport` given to
  :class:`Relay` (``server.py`` passes the client of ``protocols/smtp``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.resolver

from waypost.services.delivery.dns import (
    DNSError,
    PermanentDNSError,
    Resolver,
    Target,
)
from waypost.services.delivery.outbound import OutboundMessage, OutboundRecipient, Outcome
from waypost.services.delivery.transport import (
    ConnectFailed,
    MailParams,
    RcptParams,
    Reply,
    SessionBroken,
    SessionRefused,
    SMTPSession,
    SMTPTransport,
    TLSFailed,
    TransportError,
)
from waypost.services.message import one_line
from waypost.tls import client_context

if TYPE_CHECKING:
    from waypost.services.container import Services

log = logging.getLogger("waypost.relay")

DELIVERED, DEFERRED, FAILED = "delivered", "deferred", "failed"


@dataclass
class RelayContext:
    """Everything a delivery attempt needs that comes from configuration.

    Build it with :func:`make_relay_context` (in a thread: it reads the
    store and, for the system resolver, ``/etc/resolv.conf``) and rebuild it
    when settings change. ``self_names``/``self_ips`` are what the MX walk
    treats as "this server" (smtp.md §2.1: never send to ourselves).
    """

    resolver: Resolver
    helo_name: str
    default_port: int = 25
    self_names: frozenset[str] = frozenset()
    self_ips: frozenset[str] = frozenset()
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)
    starttls: bool = True
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    data_timeout: float = 600.0


def make_relay_context(services: Services) -> RelayContext:
    """The relay configuration of a running server (blocking: call in a thread)."""
    settings = services.settings()
    main = services.directory.main_domain()
    names = {main}
    for domain in services.directory.list_domains():
        names.add(domain.name)
        names.update(domain.aliases)
    ips = {str(ipaddress.ip_address(x)) for x in settings.items("ServerIPAddresses")}
    servers = settings.items("DNSServers")
    try:
        resolver = Resolver(servers)
    except dns.resolver.NoResolverConfiguration:
        log.warning("no DNS servers configured and none in /etc/resolv.conf; using 127.0.0.1")
        resolver = Resolver(["127.0.0.1"])
    return RelayContext(
        resolver=resolver,
        helo_name=main,
        default_port=settings.number("DefaultRemoteSMTPPort"),
        self_names=frozenset(n.lower() for n in names),
        self_ips=frozenset(ips),
        tls_context=client_context(verify=False),
    )


# --------------------------------------------------------------------------
# Entry points


class Relay:
    """The relay over one transport: what the delivery runner is given.

    Stateless apart from the transport, so one instance serves every queue
    and the ATRN turn-around at the same time."""

    __slots__ = ("transport",)

    def __init__(self, transport: SMTPTransport) -> None:
        self.transport = transport

    def make_relay_context(self, services: Services) -> RelayContext:
        """See :func:`make_relay_context` (blocking: call in a thread)."""
        return make_relay_context(services)

    async def deliver(
        self, queue: str, messages: Sequence[OutboundMessage], ctx: RelayContext
    ) -> list[Outcome]:
        """Deliver ``messages`` (all of SMTP queue ``queue``); one Outcome per
        recipient, in message then recipient order. Never raises for anything
        the network or DNS does."""
        return await _deliver(self.transport, queue, messages, ctx)

    async def deliver_over(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        messages: Sequence[OutboundMessage],
        helo: str,
        *,
        remote: str = "",
        timeout: float = 120.0,
        data_timeout: float = 600.0,
    ) -> list[Outcome]:
        """Deliver over a connection that is already open, the peer about to
        greet us: the ATRN turn-around (smtp.md §6.3, RFC 2645). Ends with
        QUIT; what could not be settled is deferred."""
        return await _deliver_over(
            self.transport, reader, writer, messages, helo, remote=remote, timeout=timeout,
            data_timeout=data_timeout,
        )


async def _deliver(
    transport: SMTPTransport, queue: str, messages: Sequence[OutboundMessage], ctx: RelayContext
) -> list[Outcome]:
    if not messages:
        return []
    try:
        targets = await ctx.resolver.resolve_targets(
            queue, ctx.default_port, ctx.self_names, ctx.self_ips
        )
    except PermanentDNSError as exc:
        log.info("queue %s: %s", queue, exc)
        return _everyone(messages, FAILED, 550, exc.enhanced, str(exc))
    except DNSError as exc:
        log.info("queue %s: %s", queue, exc)
        return _everyone(messages, DEFERRED, 451, exc.enhanced, str(exc))

    settled: dict[int, Outcome] = {}
    last = _Failure(451, "4.4.1", f"{queue}: no host to try", "")
    for target in targets:
        pending = _unsettled(messages, settled)
        if not pending:
            break
        opened = await _open(transport, target, ctx)
        if isinstance(opened, _Failure):
            log.info("queue %s: %s", queue, opened.text)
            last = opened
            continue
        try:
            failure = await _send_all(opened, pending, settled, _label(target),
                                      relay=_where(target))
        finally:
            await opened.quit()
        if failure is not None:
            log.info("queue %s: %s", queue, failure.text)
            last = failure
    for msg in messages:
        for rcpt in msg.recipients:
            if rcpt.key not in settled:
                settled[rcpt.key] = last.outcome(rcpt.key, DEFERRED)
    return [settled[r.key] for m in messages for r in m.recipients]


async def _deliver_over(
    transport: SMTPTransport,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    messages: Sequence[OutboundMessage],
    helo: str,
    *,
    remote: str,
    timeout: float,
    data_timeout: float,
) -> list[Outcome]:
    if not messages:
        return []
    settled: dict[int, Outcome] = {}
    failure: _Failure | None
    try:
        client = await transport.over_streams(
            reader, writer, helo, timeout, data_timeout=data_timeout
        )
    except TransportError as exc:
        failure = _failure_from(exc, remote)
    else:
        try:
            failure = await _send_all(client, list(messages), settled, remote, relay=remote)
        finally:
            await client.quit()
    last = failure or _Failure(451, "4.4.2", "session ended early", remote)
    return [
        settled.get(r.key) or last.outcome(r.key, DEFERRED) for m in messages for r in m.recipients
    ]


# --------------------------------------------------------------------------
# Internals


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why a target could not take the mail (becomes a deferral if it is the last)."""

    code: int
    enhanced: str
    text: str
    remote: str
    relay: str = ""

    def outcome(self, key: int, status: str) -> Outcome:
        return Outcome(key, status, self.code, self.enhanced, self.text, self.remote, self.relay)


def _label(target: Target) -> str:
    return target.host


def _where(target: Target) -> str:
    if target.host == target.ip:
        return f"[{target.ip}]:{target.port}"
    return f"{target.host}[{target.ip}]:{target.port}"


async def _open(
    transport: SMTPTransport, target: Target, ctx: RelayContext
) -> SMTPSession | _Failure:
    """An SMTP session with ``target``, or why there is none."""
    starttls = ctx.starttls
    for _attempt in range(2):
        try:
            return await transport.connect(
                target.ip,
                target.port,
                ctx.helo_name,
                ctx.connect_timeout,
                starttls=starttls,
                tls_context=ctx.tls_context,
                server_hostname=None if target.host == target.ip else target.host,
                data_timeout=ctx.data_timeout,
            )
        except TLSFailed as exc:
            if not starttls:
                return _Failure(451, "4.7.5", f"{_where(target)}: {exc}", target.host,
                                _where(target))
            log.info("%s: %s; retrying without STARTTLS", _where(target), exc)
            starttls = False
        except TransportError as exc:
            failure = _failure_from(exc, target.host)
            return _Failure(
                failure.code, failure.enhanced, f"{_where(target)}: {failure.text}", failure.remote,
                _where(target),
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _failure_from(exc: TransportError, remote: str) -> _Failure:
    if isinstance(exc, SessionRefused):
        reply = exc.reply
        return _Failure(
            reply.code,
            reply.enhanced or _default_enhanced(reply.code),
            f"refused to talk to us ({exc.stage}): {_reply_text(reply)}",
            remote,
        )
    if isinstance(exc, ConnectFailed):
        return _Failure(451, "4.4.1", str(exc), remote)
    return _Failure(451, "4.4.2", f"session broken: {exc}", remote)


def _unsettled(
    messages: Iterable[OutboundMessage], settled: dict[int, Outcome]
) -> list[OutboundMessage]:
    return [m for m in messages if any(r.key not in settled for r in m.recipients)]


async def _send_all(
    client: SMTPSession,
    messages: Sequence[OutboundMessage],
    settled: dict[int, Outcome],
    remote: str,
    *,
    relay: str = "",
) -> _Failure | None:
    """Send each message's unsettled recipients over ``client``, recording
    final answers in ``settled``. Returns the failure that ended the session
    early (the rest stays unsettled for the next target), else None.
    ``relay`` (``host[address]:port``) goes into each outcome for the log."""
    for msg in messages:
        rcpts = [r for r in msg.recipients if r.key not in settled]
        if not rcpts:
            continue
        if _bad(msg.mail_from):
            for r in rcpts:
                settled[r.key] = Outcome(r.key, FAILED, 553, "5.1.7", "bad sender address", remote)
            continue
        sendable = []
        for r in rcpts:
            if _bad(r.address) or not r.address:
                settled[r.key] = Outcome(
                    r.key, FAILED, 553, "5.1.3", "bad recipient address", remote
                )
            else:
                sendable.append(r)
        if not sendable:
            continue
        try:
            finals = await client.send(
                msg.mail_from,
                [r.address for r in sendable],
                msg.body,
                _mail_params(msg.params),
                [_rcpt_params(r) for r in sendable],
            )
        except SessionBroken as exc:
            return _Failure(451, "4.4.2", f"session with {remote} broken: {exc}", remote, relay)
        gone: Reply | None = None
        for r, reply in zip(sendable, finals, strict=True):
            if client.closed and reply.transient:
                gone = reply  # 421: the host is closing; try the next one
                continue
            settled[r.key] = _outcome(r.key, reply, remote, relay)
        if gone is not None or client.closed:
            reply = gone or Reply(451, "4.4.2", "connection closed")
            return _Failure(
                reply.code,
                reply.enhanced or "4.4.2",
                f"{remote} closed the session: {_reply_text(reply)}",
                remote,
                relay,
            )
    return None


def _outcome(key: int, reply: Reply, remote: str, relay: str = "") -> Outcome:
    status = DELIVERED if reply.positive else DEFERRED if reply.transient else FAILED
    if reply.intermediate:  # e.g. a 354 where a final answer belonged: not delivered
        status = DEFERRED
    return Outcome(
        key,
        status,
        reply.code,
        reply.enhanced or _default_enhanced(reply.code),
        " ".join(reply.lines).strip(),
        remote,
        relay,
    )


def _default_enhanced(code: int) -> str:
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")


def _reply_text(reply: Reply) -> str:
    return one_line(f"{reply.code} {reply.enhanced} {' '.join(reply.lines)}")


def _bad(address: str) -> bool:
    return any(c in address for c in "\r\n\0<>")


def _mail_params(params: dict[str, str]) -> MailParams:
    """The stored MAIL FROM parameters (SIZE/BODY/SMTPUTF8/RET/ENVID; any
    other key, such as our QueueID, is ours and not passed on)."""
    p = {k.upper(): v for k, v in params.items()}
    size = p.get("SIZE", "")
    return MailParams(
        size=int(size) if size.isdigit() else None,
        body=p.get("BODY", "").upper() or None,
        smtputf8=p.get("SMTPUTF8", "").upper() not in ("", "NO", "FALSE", "0"),
        ret=p.get("RET", "").upper() or None,
        envid=p.get("ENVID"),
    )


def _rcpt_params(rcpt: OutboundRecipient) -> RcptParams:
    orcpt: tuple[str, str] | None = None
    if rcpt.orcpt:
        kind, sep, addr = rcpt.orcpt.partition(";")
        if sep and kind.strip().lower() in ("rfc822", "utf-8"):
            orcpt = (kind.strip(), addr.strip())
        else:
            orcpt = ("rfc822", rcpt.orcpt)
    return RcptParams(notify=tuple(rcpt.notify) or None, orcpt=orcpt)


def _everyone(
    messages: Sequence[OutboundMessage], status: str, code: int, enhanced: str, text: str
) -> list[Outcome]:
    return [
        Outcome(r.key, status, code, enhanced, text, "") for m in messages for r in m.recipients
    ]
