"""What the relay needs from an outbound SMTP client, declared where the relay lives.

The relay (``relay.py``) decides; the SMTP client (``protocols/smtp/client.py``)
speaks the wire. Services import nothing from protocols, so the relay sees the
client only through :class:`SMTPTransport` and the plain data below, and
``server.py`` hands it the client that implements them.

Invariants:

* Everything here is plain data or a typing Protocol: no I/O, no wire syntax
  (formatting parameters for the peer's EHLO keywords is the client's job).
* A session's :meth:`SMTPSession.send` answers with one final :class:`Reply`
  per recipient, in order: a refusal inside a transaction is an answer, never
  an exception (RFC 5321 §3.3).
* Exceptions are the four of :class:`TransportError`: a session that could not
  be opened (try the next MX), one the peer refused, one that broke, and a
  STARTTLS handshake that failed (the relay retries that host without TLS).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reply:
    """A peer's SMTP reply: code, RFC 3463 enhanced status (or ``""``) and text."""

    code: int
    enhanced: str = ""
    text: str = ""

    @property
    def lines(self) -> list[str]:
        return self.text.replace("\r", "").split("\n")

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True, slots=True)
class MailParams:
    """``MAIL FROM`` parameters to pass on (RFC 1870 SIZE, RFC 6152 BODY,
    RFC 6531 SMTPUTF8, RFC 3461 RET/ENVID); the client sends only what the
    peer offers."""

    size: int | None = None
    body: str | None = None  # "7BIT" | "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    """``RCPT TO`` parameters (RFC 3461 NOTIFY and ORCPT)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or some of SUCCESS, FAILURE, DELAY
    orcpt: tuple[str, str] | None = None  # (addr-type, address), not xtext-encoded


class TransportError(Exception):
    """Base of what a transport raises."""


class ConnectFailed(TransportError):
    """No SMTP session: no connection, a timeout, or no greeting."""


class SessionRefused(TransportError):
    """The peer refused the session (greeting, EHLO and HELO)."""

    def __init__(self, reply: Reply, stage: str) -> None:
        super().__init__(f"{stage}: {reply.code} {reply.enhanced} {' / '.join(reply.lines)}")
        self.reply = reply
        self.stage = stage


class SessionBroken(TransportError):
    """The dialogue broke: garbage, timeout, connection lost."""


class TLSFailed(SessionBroken):
    """STARTTLS was accepted but the handshake failed; the connection is dead."""


class SMTPSession(Protocol):
    """One open client session, greeted, EHLO (and STARTTLS) done."""

    @property
    def closed(self) -> bool:
        """True once the peer is gone (e.g. after a ``421``)."""
        ...

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        body: bytes,
        params: MailParams,
        rcpt_params: Sequence[RcptParams],
    ) -> list[Reply]:
        """MAIL, RCPT, DATA for one message (``RSET`` first when needed): the
        final reply per recipient. Raises :class:`SessionBroken` when the fate
        of the message is unknown."""
        ...

    async def quit(self) -> None:
        """QUIT and close; never raises."""
        ...


class SMTPTransport(Protocol):
    """Opens :class:`SMTPSession` s: to ``ip:port``, or on a connection the
    peer turned around (ATRN, RFC 2645)."""

    async def connect(
        self, ip: str, port: int, helo_name: str, timeout: float, *, starttls: bool,
        tls_context: ssl.SSLContext | None, server_hostname: str | None, data_timeout: float,
    ) -> SMTPSession:
        """Connect, read the greeting, EHLO/HELO, STARTTLS when offered and
        ``starttls``; ``server_hostname`` is only TLS SNI."""
        ...

    async def over_streams(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, helo_name: str,
        timeout: float, *, data_timeout: float,
    ) -> SMTPSession:
        """Read the peer's greeting on an open connection, then EHLO/HELO."""
        ...
