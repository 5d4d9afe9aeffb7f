"""The SMTP server side: one session per connection (RFC 5321 state machine).

The session parses with ``wire.py`` and asks :class:`Reception` every
question that needs a decision (trust, routes, logins, the queue). A
message is answered 250 only after ``Reception.submit`` returned, i.e. after
the queue made it durable.

Line ends (SMTP smuggling, 2023): DATA ends only at CRLF.CRLF (``wire``).
A message holding a bare CR or LF is refused after its end with ``554 5.5.2``
and not queued, unless the client is in ClientIPAddresses (as Postfix's
``smtpd_forbid_bare_newline_exclusions = $mynetworks``) or the setting
SMTPForbidBareNewline is NO; then the old behaviour holds (accepted, stored
with CRLF). Postfix 3.9's default ``normal`` only normalises; its stricter
``reject`` mode refuses (with 550): we refuse, with 554 (transaction failed).
An authenticated client is not exempt (Postfix exempts none either): the
rule is about what reaches the queue, not who sent it. A NUL octet is
refused from everyone (``554 5.6.0``): RFC 5321 §2.3.8 and RFC 5322 text
hold none, and this server offers neither BINARYMIME nor CHUNKING (no BDAT,
so DATA is the only way in). Command lines ending in a bare LF are accepted
as if they ended in CRLF, as Postfix's ``normal`` mode does: a command line
cannot end DATA, so this opens no smuggling; a bare CR inside a command is
a syntax error (``wire.parse_command``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import ssl
import time
from dataclasses import dataclass, field

from waypost.protocols import hangup
from waypost.protocols.listen import endpoints, is_loopback
from waypost.protocols.smtp import wire
from waypost.protocols.smtp.wire import CommandError, Reply
from waypost.services import auth
from waypost.services.message import Recipient, Submission, new_message_id, one_line
from waypost.services.reception import Reception
from waypost.services.rules.enqueue import RuleRejected
from waypost.services.storage_full import SMTP_REPLY, StorageFull
from waypost.services.submission import RecipientRefused, received_header, routed

log = logging.getLogger("waypost.smtp")

READ_CHUNK = 65536


@dataclass
class ListenerConfig:
    """``mode`` is ``mx`` (port 25), ``submission`` (587: AUTH before MAIL) or
    ``smtps`` (465: TLS from the first byte)."""

    mode: str
    tls: ssl.SSLContext | None
    hostname: str


@dataclass
class Transaction:
    mail_from: wire.MailFrom | None = None
    recipients: list[Recipient] = field(default_factory=list)
    rcpt_count: int = 0

    def reset(self) -> None:
        self.mail_from = None
        self.recipients = []
        self.rcpt_count = 0


class Session:
    def __init__(
        self,
        reception: Reception,
        config: ListenerConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.reception = reception
        self.config = config
        self.reader = reader
        self.writer = writer
        self.client_ip, self.server_ip = endpoints(writer)
        self.helo: str | None = None
        self.esmtp = False
        self.tls = config.mode == "smtps"
        self.auth_user: str | None = None
        self.auth_failures = 0
        self.tx = Transaction()
        settings = reception.settings
        self.max_size = settings.size("MaxMessageSize")
        self.max_rcpts = settings.number("MaxRecipients")
        self.idle = settings.number("SMTPIdleTimeout")
        self.lines = wire.LineBuffer(settings.number("MaxLineLength"))
        self.closing = False
        self._out: list[bytes] = []  # replies not yet written (see send)

    # -- trust -----------------------------------------------------------

    @property
    def trusted(self) -> bool:
        return self.auth_user is not None or self.reception.is_trusted_ip(self.client_ip)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.client_ip)

    @property
    def auth_offered(self) -> bool:
        """AUTH only over TLS, except from loopback (smtp.md §3)."""
        return self.tls or self.loopback

    # -- I/O ---------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        """Queue a reply; :meth:`flush` writes every queued one in one go.

        Replies to pipelined commands (RFC 2920 §3.2: MAIL, RCPT, DATA and
        the next transaction's commands arrive in one packet) leave in one
        write, when no further command is waiting, before any read, and
        before anything that must follow the client's having seen them
        (STARTTLS, AUTH challenges, DATA's 354, ATRN's turn), as Postfix
        flushes its reply buffer only when its input buffer is empty. One
        send per reply was the largest single cost of a busy server."""
        self._out.append(reply.to_bytes())

    async def flush(self) -> None:
        """Write the queued replies (one write) and wait for the buffer to drain."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            hangup.write(self.writer, data)
        await self.writer.drain()

    async def read_chunk(self) -> bytes:
        if self._out:  # never wait for the client with replies it has not seen
            await self.flush()
        try:
            return await asyncio.wait_for(self.reader.read(READ_CHUNK), self.idle)
        except TimeoutError:
            pass
        self.send(Reply(421, "4.4.2", f"{self.config.hostname} idle timeout, closing"))
        self.closing = True
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.flush()
        return b""

    async def run(self) -> None:
        try:
            self.send(Reply(220, "", f"{self.config.hostname} ESMTP Waypost ready"))
            await self.flush()
            while not self.closing:
                line = self._next_line()
                if line is None:
                    await self.flush()
                    chunk = await self.read_chunk()
                    if not chunk:
                        break
                    self.lines.feed(chunk)
                    continue
                if isinstance(line, Reply):
                    self.send(line)
                    continue
                await self.handle(line)
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.flush()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("client %s went away: %s", self.client_ip, exc)
        finally:
            with contextlib.suppress(Exception):
                if self._out:  # what an unexpected error left unsent
                    hangup.write(self.writer, b"".join(self._out))
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 5)

    def _next_line(self) -> bytes | Reply | None:
        try:
            return self.lines.next_line()
        except CommandError as exc:
            return exc.reply

    # -- commands ------------------------------------------------------------

    async def handle(self, line: bytes) -> None:
        try:
            command = wire.parse_command(line, self.lines.limit)
        except CommandError as exc:
            self.send(exc.reply)
            return
        handler = getattr(self, f"cmd_{command.verb.lower()}", None)
        if handler is None:
            self.send(Reply(500, "5.5.1", f"Command {command.verb} unrecognized"))
            return
        try:
            await handler(command.arg)
        except CommandError as exc:
            self.send(exc.reply)

    async def cmd_helo(self, arg: str) -> None:
        await self._greet(arg, esmtp=False)

    async def cmd_ehlo(self, arg: str) -> None:
        await self._greet(arg, esmtp=True)

    async def _greet(self, arg: str, *, esmtp: bool) -> None:
        name = arg.strip()
        if not name or " " in name:
            raise CommandError(Reply(501, "5.5.4", "Syntax: EHLO hostname"))
        self.helo = name
        self.esmtp = esmtp
        self.tx.reset()
        if not esmtp:
            self.send(Reply(250, "", f"{self.config.hostname} Hello {name}"))
            return
        lines = [f"{self.config.hostname} Hello {name} [{self.client_ip}]", "PIPELINING"]
        lines.append(f"SIZE {self.max_size}" if self.max_size else "SIZE")
        lines += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "ETRN", "ATRN"]
        if self.config.tls is not None and not self.tls:
            lines.append("STARTTLS")
        if self.auth_offered and self.auth_user is None:
            # CRAM-MD5 is accepted but not advertised: only accounts that keep a
            # sealed password (ODMR customers, whose clients send it unasked)
            # can use it, and clients that prefer it would fail first elsewhere.
            lines.append("AUTH PLAIN LOGIN")
        lines.append("HELP")
        self.send(Reply(250, "", "\n".join(lines)))

    async def cmd_starttls(self, arg: str) -> None:
        if arg:
            raise CommandError(Reply(501, "5.5.4", "Syntax: STARTTLS"))
        if self.config.tls is None or self.tls:
            raise CommandError(Reply(503, "5.5.1", "TLS already active or not available"))
        if len(self.lines):
            # Pipelined plaintext after STARTTLS would be injected into the TLS
            # session (CVE-2011-0411 class): refuse it.
            self.lines.take_rest()
            raise CommandError(Reply(503, "5.5.1", "No commands may follow STARTTLS"))
        self.send(Reply(220, "2.0.0", "Ready to start TLS"))
        await self.flush()
        await self.writer.start_tls(self.config.tls)
        self.tls = True
        self.helo = None
        self.esmtp = False
        self.tx.reset()

    async def cmd_auth(self, arg: str) -> None:
        if not self.auth_offered:
            raise CommandError(Reply(538, "5.7.11", "Encryption required for AUTH"))
        if self.auth_user is not None:
            raise CommandError(Reply(503, "5.5.1", "Already authenticated"))
        if self.tx.mail_from is not None:
            raise CommandError(Reply(503, "5.5.1", "AUTH not allowed during a transaction"))
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            blob = initial.strip() or await self._challenge("")
            login, password = _decode_plain(blob)
        elif mechanism == "LOGIN":
            user_b64 = initial.strip() or await self._challenge("VXNlcm5hbWU6")
            login = _b64(user_b64)
            password = _b64(await self._challenge("UGFzc3dvcmQ6"))
        elif mechanism == "CRAM-MD5" and not initial.strip():
            challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.config.hostname}>"
            answer = _b64(await self._challenge(
                base64.b64encode(challenge.encode()).decode()))
            login, _, digest = answer.rpartition(" ")
            if not login:
                raise CommandError(Reply(501, "5.5.2", "Invalid CRAM-MD5 response"))
        else:
            raise CommandError(Reply(504, "5.5.4", "Unrecognized authentication mechanism"))
        # The login guard slows every failure down and locks out guessers.
        login = await auth.qualified_login(self.reception.services, login, self.server_ip)
        if mechanism == "CRAM-MD5":
            account = await self.reception.authenticate_cram_md5(
                self.client_ip, login, challenge, digest)
        else:
            account = await self.reception.authenticate(self.client_ip, login, password)
        if account is None:
            self.auth_failures += 1
            if self.auth_failures >= 10:
                self.send(Reply(421, "4.7.0", "Too many authentication failures"))
                self.closing = True
                return
            raise CommandError(Reply(535, "5.7.8", "Authentication credentials invalid"))
        self.auth_user = account
        log.info("AUTH %s as %s from %s", mechanism, account, self.client_ip)
        self.send(Reply(235, "2.7.0", "Authentication successful"))

    async def _challenge(self, text: str) -> str:
        self.send(Reply(334, "", text))
        await self.flush()
        while True:
            line = self._next_line()
            if isinstance(line, Reply):
                raise CommandError(Reply(501, "5.5.2", "Authentication line too long"))
            if line is not None:
                break
            chunk = await self.read_chunk()
            if not chunk:
                raise ConnectionError("client closed during AUTH")
            self.lines.feed(chunk)
        answer = line.rstrip(b"\r\n").decode("ascii", "replace")
        if answer == "*":
            raise CommandError(Reply(501, "5.7.0", "Authentication cancelled"))
        return answer

    async def cmd_mail(self, arg: str) -> None:
        if self.helo is None:
            raise CommandError(Reply(503, "5.5.1", "Send EHLO or HELO first"))
        if self.tx.mail_from is not None:
            raise CommandError(Reply(503, "5.5.1", "Nested MAIL command"))
        if self.config.mode == "submission" and self.auth_user is None:
            raise CommandError(Reply(530, "5.7.0", "Authentication required"))
        mail = wire.parse_mail(arg) if self.esmtp else wire.parse_mail(arg, allowed=())
        size = mail.params.size
        if size is not None and self.max_size is not None and size > self.max_size:
            raise CommandError(Reply(552, "5.3.4", "Message size exceeds fixed maximum"))
        self.tx.reset()
        self.tx.mail_from = mail
        self.send(Reply(250, "2.1.0", "Sender OK"))

    async def cmd_rcpt(self, arg: str) -> None:
        if self.tx.mail_from is None:
            raise CommandError(Reply(503, "5.5.1", "Need MAIL before RCPT"))
        rcpt = (
            wire.parse_rcpt(arg, smtputf8=self.tx.mail_from.params.smtputf8)
            if self.esmtp
            else wire.parse_rcpt(arg, allowed=())
        )
        if self.tx.rcpt_count >= self.max_rcpts:
            raise CommandError(Reply(452, "4.5.3", "Too many recipients"))
        if not await self.reception.has_room(self.tx.mail_from.params.size):
            raise CommandError(Reply(*SMTP_REPLY))  # no room: try later (storage_full.py)
        result = await self.reception.route_recipient(rcpt.address, self.trusted)
        orcpt = rcpt.params.orcpt[1] if rcpt.params.orcpt else None
        try:
            self.tx.recipients += routed(rcpt.address, result, rcpt.params.notify or (), orcpt)
        except RecipientRefused as exc:
            code, enhanced = exc.smtp
            log.info("RCPT %s from %s refused: %s", rcpt.address, self.client_ip, exc.text)
            raise CommandError(Reply(code, enhanced, str(exc))) from None
        self.tx.rcpt_count += 1
        self.send(Reply(250, "2.1.5", "Recipient OK"))

    async def cmd_data(self, arg: str) -> None:
        if arg:
            raise CommandError(Reply(501, "5.5.4", "Syntax: DATA"))
        if self.tx.mail_from is None:
            raise CommandError(Reply(503, "5.5.1", "Need MAIL command"))
        if not self.tx.rcpt_count:
            raise CommandError(Reply(503, "5.5.1", "Need RCPT command (no valid recipients)"))
        self.send(Reply(354, "", "Start mail input; end with <CRLF>.<CRLF>"))
        await self.flush()
        reader = wire.DataReader(max_size=self.max_size, normalize=True)
        done = reader.feed(self.lines.take_rest())
        while not done:
            chunk = await self.read_chunk()
            if not chunk:
                self.tx.reset()
                self.closing = True
                return
            done = reader.feed(chunk)
        self.lines.feed(reader.leftover)
        mail_from = self.tx.mail_from
        recipients = self.tx.recipients
        self.tx.reset()
        if reader.oversized:
            raise CommandError(Reply(552, "5.3.4", "Message size exceeds fixed maximum"))
        refusal = self._content_refusal(reader)
        if refusal is not None:
            log.info("message from <%s> (client %s) refused: %s", mail_from.address,
                     self.client_ip, refusal.text)
            raise CommandError(refusal)
        queue_id = new_message_id()
        submission = Submission(
            mail_from=mail_from.address,
            recipients=recipients,
            body=self._received(queue_id, recipients) + reader.body,
            params=_mail_params(mail_from.params),
            client_ip=self.client_ip,
            helo=self.helo or "",
            auth_user=self.auth_user,
            trusted=self.trusted,
            protocol=self._protocol(),
        )
        submission.params["QueueID"] = queue_id
        try:
            stored_id = await self.reception.submit(submission)
        except RuleRejected as exc:  # server-wide rules: refused, nothing queued
            log.info("message from <%s> (client %s) rejected by rule %r: %s",
                     mail_from.address, self.client_ip, exc.rule, exc.text)
            text = one_line(exc.text, 400) or "Message rejected"
            raise CommandError(Reply(554, "5.7.1", text)) from None
        except StorageFull:  # nothing was stored; the queue logged it
            raise CommandError(Reply(*SMTP_REPLY)) from None
        except Exception:
            log.exception("could not queue a message from %s", self.client_ip)
            raise CommandError(
                Reply(451, "4.3.0", "Local error in processing; try again")
            ) from None
        log.info(
            "queued %s from <%s> for %d recipient(s), %d octets, client %s",
            stored_id,
            mail_from.address,
            len(recipients),
            reader.size,
            self.client_ip,
        )
        self.send(Reply(250, "2.0.0", f"OK queued as {stored_id}"))

    def _content_refusal(self, reader: wire.DataReader) -> Reply | None:
        """Why a complete DATA body may not be queued (see the module docstring)."""
        if reader.nul:
            return Reply(554, "5.6.0", "Error: NUL character received in message content")
        if not reader.has_bare_newlines:
            return None
        if not self.reception.settings.flag("SMTPForbidBareNewline"):  # as of RCPT's refresh
            return None
        if self.reception.is_trusted_ip(self.client_ip):
            return None
        kinds = " and ".join(k for k, n in (("<CR>", reader.bare_cr), ("<LF>", reader.bare_lf))
                             if n)
        return Reply(554, "5.5.2", f"Error: bare {kinds} received")

    def _protocol(self) -> str:
        name = "ESMTP" if self.esmtp else "SMTP"
        if self.tls:
            name += "S"
        if self.auth_user:
            name += "A"
        return name

    def _received(self, queue_id: str, recipients: list[Recipient]) -> bytes:
        """Our trace header (RFC 5321 §4.4); the message below it is untouched."""
        return received_header(helo=self.helo or "", client_ip=self.client_ip,
                               hostname=self.config.hostname, protocol=self._protocol(),
                               queue_id=queue_id, addresses=(r.address for r in recipients))

    async def cmd_etrn(self, arg: str) -> None:
        """RFC 1985: start delivery of a held queue over a new connection."""
        if self.helo is None:
            raise CommandError(Reply(503, "5.5.1", "Send EHLO or HELO first"))
        if self.tx.mail_from is not None:
            raise CommandError(Reply(503, "5.5.1", "ETRN not allowed during a transaction"))
        try:
            verdict = await self.reception.backup.etrn(arg)
        except Exception:
            log.exception("ETRN %s failed", arg)
            raise CommandError(
                Reply(458, "4.3.0", f"Unable to queue messages for node {arg}")
            ) from None
        log.info("ETRN %s from %s: %d %s", arg, self.client_ip, verdict.code, verdict.text)
        self.send(Reply(verdict.code, verdict.enhanced, verdict.text))

    async def cmd_atrn(self, arg: str) -> None:
        """RFC 2645: after AUTH, turn the connection around and deliver the
        customer's held mail over it (smtp.md §6.3)."""
        domains = [d.strip() for d in arg.split(",") if d.strip()] if arg.strip() else []
        await self._turn(domains, "ATRN")

    async def cmd_turn(self, arg: str) -> None:
        """RFC 821 TURN, accepted only after AUTH (as ATRN without arguments);
        an unauthenticated TURN never reverses roles."""
        if arg:
            raise CommandError(Reply(501, "5.5.4", "Syntax: TURN"))
        await self._turn([], "TURN")

    async def _turn(self, domains: list[str], verb: str) -> None:
        if self.auth_user is None:
            raise CommandError(Reply(530, "5.7.0", "Authentication required"))
        if self.tx.mail_from is not None:
            raise CommandError(Reply(503, "5.5.1", f"{verb} not allowed during a transaction"))
        turner = self.reception.turner
        try:
            allowed = await self.reception.backup.atrn_domains(self.auth_user, domains)
            if not allowed:
                log.info("%s %s by %s refused", verb, ",".join(domains) or "(all)",
                         self.auth_user)
                raise CommandError(Reply(450, "4.7.1", "ATRN request refused"))
            queues = await self.reception.backup.atrn_queues(allowed)
        except CommandError:
            raise
        except Exception:
            log.exception("%s failed", verb)
            raise CommandError(
                Reply(451, "4.3.0", "Unable to process ATRN request now")
            ) from None
        if not queues:
            raise CommandError(Reply(453, "4.7.0", "You have no mail"))
        if turner is None:
            raise CommandError(Reply(451, "4.3.0", "Unable to process ATRN request now"))
        self.send(Reply(250, "2.0.0", "OK, now reversing the connection"))
        await self.flush()
        self.closing = True
        log.info("%s by %s: delivering %s over the connection from %s", verb,
                 self.auth_user, ", ".join(queues), self.client_ip)
        delivered, attempted = await turner.turn(
            queues, self.reader, self.writer, self.config.hostname, remote=self.client_ip)
        log.info("%s by %s: %d of %d recipients delivered", verb, self.auth_user,
                 delivered, attempted)

    async def cmd_rset(self, arg: str) -> None:
        self.tx.reset()
        self.send(Reply(250, "2.0.0", "Reset OK"))

    async def cmd_noop(self, arg: str) -> None:
        self.send(Reply(250, "2.0.0", "OK"))

    async def cmd_quit(self, arg: str) -> None:
        self.send(Reply(221, "2.0.0", f"{self.config.hostname} closing connection"))
        self.closing = True

    async def cmd_vrfy(self, arg: str) -> None:
        self.send(Reply(252, "2.5.0", "Cannot VRFY user; try RCPT to attempt delivery"))

    async def cmd_expn(self, arg: str) -> None:
        self.send(Reply(502, "5.5.1", "EXPN not available"))

    async def cmd_help(self, arg: str) -> None:
        self.send(Reply(214, "2.0.0", "See RFC 5321; Waypost supports the EHLO keywords"))



def _b64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CommandError(Reply(501, "5.5.2", "Invalid base64 data")) from None


def _decode_plain(blob: str) -> tuple[str, str]:
    parts = _b64(blob).split("\0")
    if len(parts) != 3 or not parts[1]:
        raise CommandError(Reply(501, "5.5.2", "Invalid PLAIN credentials"))
    authzid, login, password = parts
    if authzid and authzid.lower() != login.lower():
        raise CommandError(Reply(535, "5.7.8", "Authorization identity not allowed"))
    return login, password


def _mail_params(params: wire.MailParams) -> dict[str, str]:
    out: dict[str, str] = {}
    if params.size is not None:
        out["SIZE"] = str(params.size)
    if params.body:
        out["BODY"] = params.body
    if params.smtputf8:
        out["SMTPUTF8"] = "YES"
    if params.ret:
        out["RET"] = params.ret
    if params.envid is not None:
        out["ENVID"] = params.envid
    return out
