"""Outbound SMTP client on asyncio streams.

Our own rather than a library's because ATRN (smtp.md §6.3) turns an
inbound connection around: after ``250`` to ATRN we become the client on
the same socket, so the client must start from existing streams
(:meth:`SMTPClient.from_streams`) as well as from a new connection
(:meth:`SMTPClient.connect`).

Behaviour: read the greeting, EHLO (HELO when EHLO is refused), STARTTLS
whenever offered (opportunistic: the peer's certificate is not checked),
PIPELINING when offered, SIZE/8BITMIME/SMTPUTF8/DSN parameters only when
offered, RSET between messages so one connection carries many, QUIT. Every
read and write is bounded by a timeout.

Errors: :class:`SMTPConnectError` when no SMTP session could be opened (try
the next MX), :class:`SMTPReplyError` when the peer refused the session
(greeting or HELO), :class:`SMTPProtocolError` when the dialogue broke
(garbage, timeout, connection lost). Refusals inside a transaction are not
exceptions: :meth:`SMTPClient.send` returns a reply per recipient.

:class:`ClientTransport` is this client as the relay sees it: it implements
``waypost.services.delivery.transport.SMTPTransport`` (declared in services so
that services import nothing from protocols), translating its plain data and
exceptions at the boundary; ``server.py`` hands it to the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from waypost.protocols.smtp.wire import (
    DATA_END,
    MailParams,
    RcptParams,
    Reply,
    ReplySyntaxError,
    dot_stuff,
    ehlo_keywords,
    format_path,
    make_reply,
    parse_reply_line,
)
from waypost.services.delivery import transport
from waypost.tls import client_context

MAX_REPLY_LINES = 200
WRITE_CHUNK = 1 << 16


class SMTPClientError(Exception):
    """Base of the client's errors."""


class SMTPConnectError(SMTPClientError):
    """TCP connect failed or timed out, or the peer vanished before greeting."""


class SMTPProtocolError(SMTPClientError):
    """The session broke: malformed reply, timeout, or connection lost."""


class SMTPTimeoutError(SMTPProtocolError):
    """No reply (or no progress writing) within the timeout."""


class SMTPConnectionLost(SMTPProtocolError):
    """The peer closed or reset the connection mid-session."""


class SMTPTLSError(SMTPProtocolError):
    """STARTTLS was accepted but the handshake failed; the connection is dead.
    Opportunistic TLS: the caller may reconnect with ``starttls=False``."""


class SMTPReplyError(SMTPClientError):
    """The peer refused the session (greeting, EHLO and HELO)."""

    def __init__(self, reply: Reply, stage: str) -> None:
        super().__init__(f"{stage}: {reply}")
        self.reply = reply
        self.stage = stage


@dataclass(frozen=True, slots=True)
class SendResult:
    """Replies for one message. ``rcpts`` is aligned with the recipients.

    ``data`` is the reply to DATA when it was refused, else the reply after
    the body; None when DATA was not sent (MAIL refused, no recipient
    accepted, or the message was not attempted).
    """

    mail: Reply
    rcpts: tuple[Reply, ...]
    data: Reply | None

    def final(self, index: int) -> Reply:
        """The reply that decides recipient ``index``'s fate."""
        if not self.mail.positive:
            return self.mail
        rcpt = self.rcpts[index]
        if not rcpt.positive or self.data is None:
            return rcpt
        return self.data

    @property
    def finals(self) -> list[Reply]:
        return [self.final(i) for i in range(len(self.rcpts))]

    @property
    def delivered(self) -> bool:
        """True when the peer accepted the message for at least one recipient."""
        return self.data is not None and self.data.positive


@functools.cache
def _opportunistic_context() -> ssl.SSLContext:
    """One shared non-verifying context (building one per connection is wasted work)."""
    return client_context(verify=False)


def _local_failure(code: int, enhanced: str, text: str, count: int) -> SendResult:
    reply = Reply(code, enhanced, text)
    return SendResult(reply, (reply,) * count, None)


class SMTPClient:
    """One SMTP client session. Create with :meth:`connect` or :meth:`from_streams`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        helo_name: str,
        timeout: float = 60.0,
        data_timeout: float = 600.0,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.helo_name = helo_name
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.greeting: Reply | None = None
        self.ehlo_reply: Reply | None = None
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self.closed = False
        self._transactions = 0
        self._dirty = False  # a transaction was left open (needs RSET)
        self._last_421: Reply | None = None

    # -- opening -----------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        ip: str,
        port: int,
        helo_name: str,
        timeout: float = 30.0,
        *,
        starttls: bool = True,
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        data_timeout: float = 600.0,
    ) -> SMTPClient:
        """Connect, read the greeting, EHLO/HELO, STARTTLS when offered.

        ``timeout`` bounds the TCP connect and every later command;
        ``server_hostname`` is only sent as TLS SNI (nothing is verified
        unless ``tls_context`` says so).
        """
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(ip, port)
        except (OSError, TimeoutError) as exc:
            raise SMTPConnectError(f"cannot connect to {ip} port {port}: {exc!r}") from None
        client = cls(reader, writer, helo_name, timeout, data_timeout)
        try:
            await client._open(starttls, tls_context, server_hostname)
        except BaseException:
            client.abort()
            raise
        return client

    @classmethod
    async def from_streams(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        helo_name: str,
        timeout: float = 60.0,
        *,
        starttls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        data_timeout: float = 600.0,
    ) -> SMTPClient:
        """Start a client session on an existing connection (ATRN turn-around):
        read the peer's greeting, then EHLO/HELO.

        ``starttls`` stays off by default: on a connection accepted by
        ``asyncio.start_server``, ``StreamWriter.start_tls`` would take the
        TLS *server* side. A turned-around connection is normally already
        protected by the STARTTLS done before ATRN."""
        client = cls(reader, writer, helo_name, timeout, data_timeout)
        await client._open(starttls, tls_context, None)
        return client

    async def _open(
        self, starttls: bool, tls_context: ssl.SSLContext | None, server_hostname: str | None
    ) -> None:
        try:
            self.greeting = await self.read_reply()
        except (SMTPTimeoutError, SMTPConnectionLost) as exc:
            raise SMTPConnectError(f"no greeting: {exc}") from None
        if self.greeting.code != 220:
            raise SMTPReplyError(self.greeting, "greeting")
        await self._hello()
        if starttls and "STARTTLS" in self.extensions and not self.tls:
            await self._starttls(tls_context or _opportunistic_context(), server_hostname)

    async def _hello(self) -> None:
        reply = await self.command(f"EHLO {self.helo_name}")
        if reply.positive:
            self.esmtp, self.ehlo_reply = True, reply
            self.extensions = ehlo_keywords(reply)
            return
        if reply.transient:  # 421 and friends: HELO would not fare better
            raise SMTPReplyError(reply, "EHLO")
        reply = await self.command(f"HELO {self.helo_name}")
        if not reply.positive:
            raise SMTPReplyError(reply, "HELO")
        self.esmtp, self.ehlo_reply, self.extensions = False, reply, {}

    async def _starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return  # opportunistic: carry on in plain text
        try:
            await self.writer.start_tls(
                context, server_hostname=server_hostname, ssl_handshake_timeout=self.timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self.closed = True
            raise SMTPTLSError(f"TLS handshake failed: {exc!r}") from None
        self.extensions = {}
        await self._hello()  # RFC 3207: forget what was learnt before TLS

    # -- properties --------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @property
    def max_size(self) -> int | None:
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    # -- low level ---------------------------------------------------------

    async def _write(self, data: bytes, timeout: float | None = None) -> None:
        if self.closed:
            raise SMTPProtocolError("connection already closed")
        try:
            self.writer.write(data)
            async with asyncio.timeout(timeout or self.timeout):
                await self.writer.drain()
        except TimeoutError:
            self.closed = True
            raise SMTPTimeoutError("timeout writing to the peer") from None
        except (OSError, ConnectionError) as exc:
            self.closed = True
            raise SMTPConnectionLost(f"connection lost while writing: {exc!r}") from None

    async def read_reply(self, timeout: float | None = None) -> Reply:
        """Read one (possibly multi-line) reply."""
        texts: list[str] = []
        code = 0
        try:
            async with asyncio.timeout(timeout or self.timeout):
                while True:
                    line = await self.reader.readline()
                    if not line.endswith(b"\n"):
                        raise SMTPConnectionLost("connection closed by the peer")
                    c, last, text = parse_reply_line(line)
                    if texts and c != code:
                        raise SMTPProtocolError("reply code changed inside a multi-line reply")
                    code = c
                    texts.append(text)
                    if last:
                        break
                    if len(texts) > MAX_REPLY_LINES:
                        raise SMTPProtocolError("reply too long")
        except TimeoutError:
            self.closed = True
            raise SMTPTimeoutError("timeout waiting for a reply") from None
        except ReplySyntaxError as exc:
            self.closed = True
            raise SMTPProtocolError(str(exc)) from None
        except ValueError as exc:  # a line over the StreamReader limit
            self.closed = True
            raise SMTPProtocolError(f"reply line too long: {exc}") from None
        except (OSError, ConnectionError) as exc:
            self.closed = True
            raise SMTPConnectionLost(f"connection lost: {exc!r}") from None
        except SMTPProtocolError:
            self.closed = True
            raise
        reply = make_reply(code, texts)
        if reply.code == 421:  # the peer is closing: every later answer is this one
            self.closed = True
            self._last_421 = reply
        return reply

    async def command(self, line: str, timeout: float | None = None) -> Reply:
        """Send one command line (no CRLF) and read its reply."""
        await self._write(_encode(line), timeout)
        return await self.read_reply(timeout)

    # -- mail --------------------------------------------------------------

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        body: bytes,
        params: MailParams | None = None,
        rcpt_params: Sequence[RcptParams | None] | None = None,
    ) -> SendResult:
        """Send one message; addresses without angle brackets (``""`` = null sender).

        Returns the replies; raises :class:`SMTPProtocolError` if the
        session broke (the message's fate is then unknown: retry it).
        """
        if not rcpts:
            raise ValueError("no recipients")
        if rcpt_params is not None and len(rcpt_params) != len(rcpts):
            raise ValueError("rcpt_params must align with rcpts")
        params = params or MailParams()
        n = len(rcpts)
        needs_utf8 = (
            params.smtputf8 or not mail_from.isascii() or not all(r.isascii() for r in rcpts)
        )
        if needs_utf8:
            if "SMTPUTF8" not in self.extensions:
                return _local_failure(553, "5.6.7", "remote server does not support SMTPUTF8", n)
            params = dataclasses.replace(params, smtputf8=True)
        if params.body is None and not body.isascii() and "8BITMIME" in self.extensions:
            params = dataclasses.replace(params, body="8BITMIME")
        limit = self.max_size
        if limit is not None and len(body) > limit:
            return _local_failure(552, "5.3.4", f"message size exceeds remote limit {limit}", n)
        payload = dot_stuff(body) + DATA_END
        mail_args = params.to_args(self.extensions, size=len(body))
        mail_line = _join(f"MAIL FROM:{format_path(mail_from)}", mail_args)
        rcpt_lines = [
            _join(
                f"RCPT TO:{format_path(r)}",
                (rcpt_params[i] or RcptParams()).to_args(self.extensions) if rcpt_params else [],
            )
            for i, r in enumerate(rcpts)
        ]
        reset = self._dirty or (self._transactions > 0 and self.pipelining)
        self._transactions += 1
        self._dirty = True
        if self.pipelining:
            result = await self._send_pipelined(reset, mail_line, rcpt_lines, payload)
        else:
            result = await self._send_stepwise(reset, mail_line, rcpt_lines, payload)
        if result.data is not None and result.data.positive:
            self._dirty = False
        return result

    async def _send_pipelined(
        self, reset: bool, mail_line: str, rcpt_lines: list[str], payload: bytes
    ) -> SendResult:
        group = ([_encode("RSET")] if reset else []) + [_encode(mail_line)]
        group += [_encode(x) for x in rcpt_lines] + [b"DATA\r\n"]
        await self._write(b"".join(group))
        if reset:
            await self._reply_or_closed()
        mail = await self._reply_or_closed()
        rcpts = [await self._reply_or_closed() for _ in rcpt_lines]
        data_cmd = await self._reply_or_closed()
        accepted = mail.positive and any(r.positive for r in rcpts)
        if data_cmd.code != 354:
            return SendResult(mail, tuple(rcpts), data_cmd if accepted else None)
        if not accepted:  # RFC 2920 §3.1: DATA was accepted anyway; send an empty message
            await self._write(DATA_END)
            await self._reply_or_closed(self.data_timeout)
            return SendResult(mail, tuple(rcpts), None)
        return SendResult(mail, tuple(rcpts), await self._data(payload))

    async def _send_stepwise(
        self, reset: bool, mail_line: str, rcpt_lines: list[str], payload: bytes
    ) -> SendResult:
        if reset:
            await self.command("RSET")
        mail = await self._command_or_closed(mail_line)
        if not mail.positive:
            return SendResult(mail, (mail,) * len(rcpt_lines), None)
        rcpts = [await self._command_or_closed(x) for x in rcpt_lines]
        if not any(r.positive for r in rcpts):
            return SendResult(mail, tuple(rcpts), None)
        data_cmd = await self._command_or_closed("DATA")
        if data_cmd.code != 354:
            return SendResult(mail, tuple(rcpts), data_cmd)
        return SendResult(mail, tuple(rcpts), await self._data(payload))

    async def _data(self, payload: bytes) -> Reply:
        for start in range(0, len(payload), WRITE_CHUNK):
            await self._write(payload[start : start + WRITE_CHUNK], self.data_timeout)
        return await self.read_reply(self.data_timeout)

    async def _reply_or_closed(self, timeout: float | None = None) -> Reply:
        """The next reply; after a 421 the peer is gone, so it is that 421."""
        if self._last_421 is not None:
            return self._last_421
        return await self.read_reply(timeout)

    async def _command_or_closed(self, line: str) -> Reply:
        if self._last_421 is not None:
            return self._last_421
        return await self.command(line)

    # -- other commands and closing -----------------------------------------

    async def reset(self) -> Reply:
        reply = await self.command("RSET")
        if reply.positive:
            self._dirty = False
        return reply

    async def noop(self) -> Reply:
        return await self.command("NOOP")

    async def quit(self) -> None:
        """Say QUIT (briefly waiting for the answer) and close; never raises."""
        if not self.closed:
            with contextlib.suppress(SMTPClientError):
                await self.command("QUIT", timeout=min(self.timeout, 5.0))
        await self.close()

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once (no QUIT)."""
        self.closed = True
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            transport.abort()

    async def __aenter__(self) -> SMTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.quit()


# --------------------------------------------------------------------------
# The client as the relay's transport


def _translate(exc: SMTPClientError) -> transport.TransportError:
    """The transport's exception for one of ours (TLS failure before broken
    session: it is both, and the relay treats it apart)."""
    if isinstance(exc, SMTPTLSError):
        return transport.TLSFailed(str(exc))
    if isinstance(exc, SMTPReplyError):
        return transport.SessionRefused(exc.reply, exc.stage)
    if isinstance(exc, SMTPConnectError):
        return transport.ConnectFailed(str(exc))
    return transport.SessionBroken(str(exc))


class ClientSession:
    """An open :class:`SMTPClient` as a ``transport.SMTPSession``."""

    __slots__ = ("client",)

    def __init__(self, client: SMTPClient) -> None:
        self.client = client

    @property
    def closed(self) -> bool:
        return self.client.closed

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        body: bytes,
        params: transport.MailParams,
        rcpt_params: Sequence[transport.RcptParams],
    ) -> list[transport.Reply]:
        wire_params = MailParams(
            size=params.size, body=params.body, smtputf8=params.smtputf8, ret=params.ret,
            envid=params.envid,
        )
        wire_rcpt = [RcptParams(p.notify, p.orcpt) for p in rcpt_params]
        try:
            result = await self.client.send(mail_from, rcpts, body, wire_params, wire_rcpt)
        except SMTPClientError as exc:
            raise _translate(exc) from None
        return list(result.finals)

    async def quit(self) -> None:
        await self.client.quit()


class ClientTransport:
    """Opens :class:`SMTPClient` sessions for the relay (``transport.SMTPTransport``)."""

    async def connect(
        self,
        ip: str,
        port: int,
        helo_name: str,
        timeout: float,
        *,
        starttls: bool,
        tls_context: ssl.SSLContext | None,
        server_hostname: str | None,
        data_timeout: float,
    ) -> ClientSession:
        try:
            client = await SMTPClient.connect(
                ip, port, helo_name, timeout, starttls=starttls, tls_context=tls_context,
                server_hostname=server_hostname, data_timeout=data_timeout,
            )
        except SMTPClientError as exc:
            raise _translate(exc) from None
        return ClientSession(client)

    async def over_streams(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        helo_name: str,
        timeout: float,
        *,
        data_timeout: float,
    ) -> ClientSession:
        try:
            client = await SMTPClient.from_streams(
                reader, writer, helo_name, timeout, data_timeout=data_timeout
            )
        except SMTPClientError as exc:
            raise _translate(exc) from None
        return ClientSession(client)


def _join(head: str, args: Sequence[str]) -> str:
    return " ".join([head, *args])


def _encode(line: str) -> bytes:
    """A command line; CR/LF inside would let an address inject commands."""
    if "\r" in line or "\n" in line or "\0" in line:
        raise ValueError(f"line break in SMTP command: {line[:60]!r}")
    return line.encode("utf-8") + b"\r\n"
