"""A small SMTP sink for tests: records what it receives, misbehaves on request.

Runs its own event loop in a thread (like aiosmtpd's Controller), so sync
tests, ``asyncio.run`` tests and a real server in another process can all
deliver to it::

    with SMTPSink(rcpt_replies={"nobody@x.test": Reply(550, "5.1.1", "No such user")}) as sink:
        ...deliver to 127.0.0.1:sink.port...
        assert sink.messages[0].rcpts == ["bob@x.test"]

Options: ``tls_context`` (offer STARTTLS), ``extensions`` (the EHLO keywords,
without STARTTLS), ``esmtp=False`` (EHLO refused: HELO-only peer),
``greeting`` / ``mail_reply`` / ``data_reply`` and per-recipient
``rcpt_replies`` to answer 4xx/5xx, ``drop_on`` (verbs on which the sink
hangs up without answering) and ``reply_delay`` (seconds before answering,
per verb). ``commands`` records every command line with the number of the
socket read it arrived in, which shows whether a client pipelined.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

from waypost.protocols.smtp.wire import (
    CommandError,
    DataReader,
    LineBuffer,
    Reply,
    allowed_params,
    parse_command,
    parse_mail,
    parse_rcpt,
)

Send = Callable[[Reply, str], Awaitable[None]]

DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "SIZE 10240000",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
    "ENHANCEDSTATUSCODES",
)


@dataclass
class Envelope:
    """One message as received (body already un-dot-stuffed)."""

    helo: str
    mail_from: str
    mail_args: str
    rcpts: list[str]
    rcpt_args: list[str]
    data: bytes
    tls: bool
    session: int


@dataclass
class _Session:
    number: int
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    mail: tuple[str, str] | None = None
    smtputf8: bool = False
    rcpts: list[tuple[str, str]] = field(default_factory=list)


class SMTPSink:
    __test__ = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        hostname: str = "sink.test",
        tls_context: ssl.SSLContext | None = None,
        extensions: Collection[str] = DEFAULT_EXTENSIONS,
        esmtp: bool = True,
        greeting: Reply | None = None,
        mail_reply: Reply | None = None,
        rcpt_replies: Mapping[str, Reply] | None = None,
        data_reply: Reply | None = None,
        drop_on: Collection[str] = (),
        reply_delay: Mapping[str, float] | None = None,
    ) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.tls_context = tls_context
        self.extensions = list(extensions)
        self.esmtp = esmtp
        self.greeting = greeting or Reply(220, "", f"{hostname} ESMTP test sink")
        self.mail_reply = mail_reply
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
        self.data_reply = data_reply
        self.drop_on = {v.upper() for v in drop_on}
        self.reply_delay = {k.upper(): v for k, v in (reply_delay or {}).items()}
        self.messages: list[Envelope] = []
        self.commands: list[tuple[int, int, str]] = []  # (session, read number, line)
        self.sessions = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> SMTPSink:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("SMTP sink did not start")
        if error:
            raise error[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the session -------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.sessions += 1
        try:
            await self._session(_Session(self.sessions), reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _session(
        self, s: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def send(reply: Reply, verb: str = "") -> None:
            if verb in self.reply_delay:
                await asyncio.sleep(self.reply_delay[verb])
            writer.write(reply.to_bytes())
            await writer.drain()

        await send(self.greeting)
        if not self.greeting.positive:
            return
        lines = LineBuffer()
        reads = 0
        while True:
            line = None
            try:
                line = lines.next_line()
            except CommandError as exc:
                await send(exc.reply)
                continue
            if line is None:
                chunk = await asyncio.wait_for(reader.read(65536), 60)
                if not chunk:
                    return
                reads += 1
                lines.feed(chunk)
                continue
            self.commands.append((s.number, reads, line.decode("utf-8", "replace").rstrip()))
            try:
                cmd = parse_command(line)
            except CommandError as exc:
                await send(exc.reply)
                continue
            verb = cmd.verb
            if verb in self.drop_on:
                return
            if verb in ("EHLO", "HELO"):
                if verb == "EHLO" and not self.esmtp:
                    await send(Reply(500, "5.5.1", "Command unrecognized"), verb)
                    continue
                s.helo, s.esmtp, s.mail, s.rcpts = cmd.arg, verb == "EHLO", None, []
                if verb == "HELO":
                    await send(Reply(250, "", self.hostname), verb)
                    continue
                ext = list(self.extensions)
                if self.tls_context is not None and not s.tls:
                    ext.append("STARTTLS")
                await send(Reply(250, "", "\n".join([self.hostname, *ext])), verb)
            elif verb == "STARTTLS" and self.tls_context is not None and not s.tls:
                await send(Reply(220, "2.0.0", "Ready to start TLS"), verb)
                lines.take_rest()  # never act on plaintext sent before the handshake
                await writer.start_tls(self.tls_context, ssl_handshake_timeout=10)
                s.tls, s.helo, s.esmtp, s.mail, s.rcpts = True, "", False, None, []
            elif verb == "MAIL":
                await self._mail(s, cmd.arg, send)
            elif verb == "RCPT":
                await self._rcpt(s, cmd.arg, send)
            elif verb == "DATA":
                if not s.rcpts:
                    await send(Reply(554, "5.5.1", "No valid recipients"), verb)
                    continue
                await send(Reply(354, "", "End data with <CR><LF>.<CR><LF>"), verb)
                data = DataReader()
                pending = lines.take_rest()
                while not data.feed(pending):
                    pending = await asyncio.wait_for(reader.read(65536), 60)
                    if not pending:
                        return
                    reads += 1
                lines.feed(data.leftover)
                await self._deliver(s, data.body, send)
            elif verb == "RSET":
                s.mail, s.rcpts = None, []
                await send(Reply(250, "2.0.0", "Ok"), verb)
            elif verb == "NOOP":
                await send(Reply(250, "2.0.0", "Ok"), verb)
            elif verb == "QUIT":
                await send(Reply(221, "2.0.0", "Bye"), verb)
                return
            else:
                await send(Reply(500, "5.5.1", "Command unrecognized"), verb)

    async def _mail(self, s: _Session, arg: str, send: Send) -> None:
        if not s.helo:
            await send(Reply(503, "5.5.1", "Send HELO/EHLO first"), "MAIL")
            return
        if s.mail is not None:
            await send(Reply(503, "5.5.1", "Nested MAIL command"), "MAIL")
            return
        allowed = allowed_params(self.extensions)[0] if s.esmtp else frozenset()
        try:
            mail = parse_mail(arg, allowed=allowed)
        except CommandError as exc:
            await send(exc.reply, "MAIL")
            return
        if self.mail_reply is not None and not self.mail_reply.positive:
            await send(self.mail_reply, "MAIL")
            return
        s.mail = (mail.address, arg.partition(">")[2].strip())
        s.smtputf8 = mail.params.smtputf8
        await send(self.mail_reply or Reply(250, "2.1.0", "Ok"), "MAIL")

    async def _rcpt(self, s: _Session, arg: str, send: Send) -> None:
        if s.mail is None:
            await send(Reply(503, "5.5.1", "Need MAIL command"), "RCPT")
            return
        allowed = allowed_params(self.extensions)[1] if s.esmtp else frozenset()
        try:
            rcpt = parse_rcpt(arg, smtputf8=s.smtputf8, allowed=allowed)
        except CommandError as exc:
            await send(exc.reply, "RCPT")
            return
        reply = self.rcpt_replies.get(rcpt.address.lower())
        if reply is not None and not reply.positive:
            await send(reply, "RCPT")
            return
        s.rcpts.append((rcpt.address, arg.partition(">")[2].strip()))
        await send(reply or Reply(250, "2.1.5", "Ok"), "RCPT")

    async def _deliver(self, s: _Session, body: bytes, send: Send) -> None:
        assert s.mail is not None
        reply = self.data_reply or Reply(250, "2.0.0", f"Ok: queued as {len(self.messages) + 1}")
        if reply.positive:
            self.messages.append(
                Envelope(
                    helo=s.helo,
                    mail_from=s.mail[0],
                    mail_args=s.mail[1],
                    rcpts=[r for r, _ in s.rcpts],
                    rcpt_args=[a for _, a in s.rcpts],
                    data=body,
                    tls=s.tls,
                    session=s.number,
                )
            )
        s.mail, s.rcpts = None, []
        await send(reply, ".")
