"""The POP3 server side: one session per connection (RFC 1939 states).

AUTHORIZATION -> TRANSACTION -> UPDATE. Parsing is ``wire.py``; logins,
the maildrop and deletions go through :class:`PostOffice`. Every client
mistake is one ``-ERR`` line and the session goes on (up to
:data:`MAX_ERRORS`, so garbage cannot keep a connection busy forever).

Passwords (USER/PASS and AUTH PLAIN) are accepted only over TLS (STLS or
port 995), except from loopback, as SMTP AUTH; CAPA then does not offer
them. APOP (which never sends the password) is offered only when
``POP3APOP`` is YES: the greeting then carries the timestamp. It needs the
password itself on the server, so only accounts that keep a sealed copy
(PasswordEncryption ``argon2+cram-md5``) can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from waypost.protocols import hangup
from waypost.protocols.listen import endpoints, is_loopback
from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.office import PostOffice
from waypost.protocols.pop3.stuffing import END, DotStuffer, TopCutter, top_of_plain
from waypost.protocols.pop3.wire import Command, Pop3Error, Response, err, ok
from waypost.services import auth
from waypost.services.login_guard import Attempt
from waypost.services.mailaccess.maildrop import Entry, Maildrop, MaildropError, Stored
from waypost.services.storage_full import StorageFull

log = logging.getLogger("waypost.pop3")

READ_CHUNK = 65536
MAX_ERRORS = 50
"""``-ERR`` answers after which a session is closed."""
READ_AHEAD = 1024 * 1024
"""Octets of the following messages read together with the one asked for:
clients retrieve one message after the other, and one worker-thread round
trip per batch instead of per message is most of POP3's speed. Together
with :data:`STREAM_CHUNK` this bounds what a session holds in memory."""
READ_AHEAD_COUNT = 256
STREAM_CHUNK = 256 * 1024
"""A large message is read and sent in pieces of this size."""
TOP_FOLLOWS = ok("Top of message follows").to_bytes()


class State(Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


@dataclass
class ListenerConfig:
    """``implicit_tls``: port 995, TLS from the first byte; otherwise STLS is
    offered when ``tls`` is set."""

    tls: ssl.SSLContext | None
    implicit_tls: bool = False


Handler = Callable[["Session", Command], Awaitable[None]]
_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS


class Session:
    def __init__(
        self,
        office: PostOffice,
        config: ListenerConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.office = office
        self.config = config
        self.reader = reader
        self.writer = writer
        self.client_ip, self.server_ip = endpoints(writer)
        self.tls = config.implicit_tls
        self.state = State.AUTHORIZATION
        self.user: str | None = None  # after USER, before PASS
        self.maildrop: Maildrop | None = None
        self.ahead: dict[int, Stored] = {}  # messages read ahead, by UID
        self._reading_since: float | None = None  # loop time the wait for input began
        self._idle_out = False
        self._task: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.lines = wire.LineBuffer()
        self.errors = 0
        self.closing = False
        settings = office.settings
        self.idle = settings.number("POP3IdleTimeout")
        self.apop = settings.flag("POP3APOP")
        unique = f"{time.time_ns()}.{secrets.token_hex(4)}"
        self.timestamp = wire.apop_timestamp(os.getpid(), unique, office.hostname)

    # -- trust -----------------------------------------------------------

    @property
    def loopback(self) -> bool:
        return is_loopback(self.client_ip)

    @property
    def login_allowed(self) -> bool:
        """Passwords only over TLS, except from loopback (RFC 2595: no clear-text
        passwords on an unprotected connection)."""
        return self.tls or self.loopback

    # -- I/O ---------------------------------------------------------------

    def send(self, response: Response) -> None:
        if not response.ok:
            self.errors += 1
        hangup.write(self.writer, response.to_bytes())

    async def read_line(self, limit: int, what: str = "Command line") -> bytes | None:
        """The next line, None at end of input or idle timeout; an over-long
        line raises :class:`Pop3Error` (after it has been swallowed)."""
        while True:
            line = self.lines.next_line(limit)
            if line is wire.LineBuffer.TOO_LONG:
                raise Pop3Error(f"{what} too long ({limit} octets at most)")
            if isinstance(line, bytes):
                return line
            if self.writer.transport.get_write_buffer_size():  # else nothing to wait for
                await self.writer.drain()
            self._reading_since = self._loop.time()
            try:
                chunk = await self.reader.read(READ_CHUNK)
            except asyncio.CancelledError:
                if not self._idle_out or self._task is None:
                    raise
                self._task.uncancel()
                self.send(err("Idle for too long, closing connection (no messages deleted)"))
                return None
            finally:
                self._reading_since = None
            if not chunk:
                return None
            self.lines.feed(chunk)

    def _watch_idle(self) -> None:
        """The idle timeout (RFC 1939 §3: at least 10 minutes), checked by one
        timer per session that re-arms itself, instead of a timeout around
        every read (which cost about a fifth of a RETR's CPU): a session
        waiting for a command longer than ``POP3IdleTimeout`` is cancelled
        out of its read, and :meth:`read_line` answers and ends it."""
        since, now = self._reading_since, self._loop.time()
        if since is not None and now - since >= self.idle and self._task is not None:
            self._idle_out = True
            self._task.cancel()
            return
        due = (since if since is not None else now) + self.idle
        self._watchdog = self._loop.call_at(due, self._watch_idle)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._watchdog = self._loop.call_later(self.idle, self._watch_idle)
        try:
            greeting = f"Waypost POP3 server ready on {self.office.hostname}"
            if self.apop:
                greeting += f" {self.timestamp}"
            hangup.write(self.writer, ok(greeting).to_bytes())
            while not self.closing:
                try:
                    line = await self.read_line(wire.MAX_COMMAND)
                except Pop3Error as exc:
                    self.send(exc.response)
                    continue
                if line is None:
                    break
                await self.handle(line)
                if self.errors >= MAX_ERRORS:
                    self.send(err("Too many errors, closing connection"))
                    break
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("POP3 client %s went away: %s", self.client_ip, exc)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            # Without QUIT there is no UPDATE state: nothing is deleted.
            if self.maildrop is not None and self.state is not State.UPDATE:
                with contextlib.suppress(Exception):  # else the lease runs out
                    await self.office.unlock(self.maildrop.account)
            with contextlib.suppress(Exception):
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 5)

    async def handle(self, line: bytes) -> None:
        try:
            command = wire.parse_command(line)
            entry = COMMANDS.get(command.verb)
            if entry is None:
                raise Pop3Error(f"Unknown command {command.verb[:10]}")
            states, handler = entry
            if self.state not in states:
                when = "before login" if self.state is State.AUTHORIZATION else "after login"
                raise Pop3Error(f"{command.verb} is not valid {when}")
            await handler(self, command)
        except Pop3Error as exc:
            self.send(exc.response)
        except MaildropError as exc:  # no such message, deleted: the client's mistake
            self.send(err(str(exc)))
        except (ConnectionError, ssl.SSLError):
            raise
        except Exception:  # storage trouble: tell the client to come back later
            log.exception("POP3 command from %s failed", self.client_ip)
            self.send(err("Internal error, try again later", wire.SYS_TEMP))

    # -- AUTHORIZATION -------------------------------------------------------

    async def cmd_capa(self, command: Command) -> None:
        command.args(0, 0, "CAPA")
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.state is State.AUTHORIZATION:
            if self.config.tls is not None and not self.tls:
                caps.append("STLS")
            if self.login_allowed:
                caps += ["USER", "SASL PLAIN"]
        caps.append("IMPLEMENTATION Waypost")
        self.send(ok("Capability list follows"))
        hangup.write(self.writer, wire.multiline_lines(caps))

    async def cmd_stls(self, command: Command) -> None:
        command.args(0, 0, "STLS")
        if self.config.tls is None or self.tls:
            raise Pop3Error("TLS is already active" if self.tls else "TLS is not available")
        if len(self.lines):
            # Plaintext pipelined after STLS would be taken as sent inside the
            # TLS session (CVE-2011-0411 class): refuse it.
            self.lines.clear()
            raise Pop3Error("No commands may follow STLS in the same packet")
        hangup.write(self.writer, ok("Begin TLS negotiation").to_bytes())
        await self.writer.drain()
        await self.writer.start_tls(self.config.tls)
        self.tls = True
        self.user = None

    async def cmd_user(self, command: Command) -> None:
        self._require_tls()
        (name,) = command.args(1, 1, "USER name")
        self.user = name
        self.send(ok("Send PASS"))

    async def cmd_pass(self, command: Command) -> None:
        self._require_tls()
        if self.user is None:
            raise Pop3Error("Send USER first")
        if not command.arg:
            raise Pop3Error("Missing argument; syntax: PASS password")
        login, self.user = self.user, None
        await self._login(login, command.arg, "USER")

    async def cmd_auth(self, command: Command) -> None:
        if not command.arg:  # RFC 1734 style listing, used by some clients
            self.send(ok("SASL mechanisms follow"))
            hangup.write(self.writer, wire.multiline_lines(["PLAIN"] if self.login_allowed else []))
            return
        mechanism, *initial = command.args(1, 2, "AUTH mechanism [initial-response]")
        if mechanism.upper() != "PLAIN":
            raise Pop3Error(f"Unsupported SASL mechanism {mechanism[:20]}; use PLAIN")
        self._require_tls()
        response = initial[0] if initial else await self._continuation()
        authzid, login, password = wire.parse_plain(response)
        if authzid and authzid.lower() != login.lower():
            raise Pop3Error("Authorization identity must be empty or the login name", wire.AUTH)
        await self._login(login, password, "SASL PLAIN")

    async def _continuation(self) -> str:
        """The client's answer to an empty ``+`` challenge; ``*`` cancels."""
        hangup.write(self.writer, b"+ \r\n")
        line = await self.read_line(wire.MAX_SASL_LINE, "AUTH response")
        if line is None:
            raise ConnectionError("connection closed or idle during AUTH")
        text = wire.decode_line(line)
        if text == "*":
            raise Pop3Error("Authentication cancelled")
        return text

    async def cmd_apop(self, command: Command) -> None:
        if not self.apop:
            raise Pop3Error("APOP is not enabled; use USER/PASS or AUTH PLAIN")
        name, digest = command.args(2, 2, "APOP name digest")
        if not wire.is_md5_hex(digest):
            raise Pop3Error("Invalid APOP digest: expected 32 hexadecimal digits")
        name = await auth.qualified_login(self.office.services, name, self.server_ip)
        attempt = await self.office.login_apop(self.client_ip, name, self.timestamp, digest)
        await self._logged_in(attempt, "APOP")

    def _require_tls(self) -> None:
        if not self.login_allowed:
            raise Pop3Error("Log in only over TLS: use STLS first", wire.AUTH)

    async def _login(self, login: str, password: str, how: str) -> None:
        login = await auth.qualified_login(self.office.services, login, self.server_ip)
        await self._logged_in(await self.office.login(self.client_ip, login, password), how)

    async def _logged_in(self, attempt: Attempt, how: str) -> None:
        """After the credentials were checked: AccessModes, the lock, the snapshot."""
        account = attempt.account
        if account is None:
            # The same answer for a wrong password, an unknown name and a
            # lock-out: none of them may be told apart.
            raise Pop3Error("Authentication failed", wire.AUTH)
        if not await self.office.enabled(account):
            log.info(
                "POP3 login of %s from %s refused: POP not in AccessModes", account, self.client_ip
            )
            raise Pop3Error("POP3 access is not enabled for this account", wire.AUTH)
        if not await self.office.lock(account):
            raise Pop3Error("Maildrop is in use by another POP3 session", wire.IN_USE)
        try:
            self.maildrop = await self.office.open(account)
        except Exception:
            await self.office.unlock(account)
            log.exception("cannot open the maildrop of %s", account)
            raise Pop3Error("Cannot open the maildrop, try later", wire.SYS_TEMP) from None
        self.state = State.TRANSACTION
        count, size = self.maildrop.stat()
        log.info(
            "POP3 login %s from %s (%s%s), %d messages",
            account,
            self.client_ip,
            how,
            ", TLS" if self.tls else "",
            count,
        )
        self.send(ok(f"{account} has {count} messages ({size} octets)"))

    # -- TRANSACTION ---------------------------------------------------------

    @property
    def drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    async def cmd_stat(self, command: Command) -> None:
        command.args(0, 0, "STAT")
        count, size = self.drop.stat()
        self.send(ok(f"{count} {size}"))

    async def cmd_list(self, command: Command) -> None:
        await self._listing(command, "LIST", self.drop.listing)

    async def cmd_uidl(self, command: Command) -> None:
        await self._listing(command, "UIDL", self.drop.unique_ids)

    async def _listing(
        self, command: Command, verb: str, lines: Callable[[int | None], bytes]
    ) -> None:
        """One message's line, or all of them after a status line, in one write
        (the lines are digits and dots: nothing to dot-stuff)."""
        args = command.args(0, 1, f"{verb} [message-number]")
        if args:
            number = wire.parse_number(args[0])
            self.drop.get(number)  # a deleted or missing one is an error
            self.send(ok(lines(number).decode("ascii").rstrip()))
            return
        count, size = self.drop.stat()
        status = ok(f"{count} messages ({size} octets)").to_bytes()
        hangup.write(self.writer, b"".join((status, lines(None), wire.MULTILINE_END)))

    async def cmd_retr(self, command: Command) -> None:
        (arg,) = command.args(1, 1, "RETR message-number")
        number = wire.parse_number(arg)
        entry = self.drop.get(number)
        stored = await self._stored(number, entry)
        await self._send_message(b"+OK %d octets\r\n" % entry.size, stored, None)

    async def cmd_top(self, command: Command) -> None:
        number_arg, count = command.args(2, 2, "TOP message-number lines")
        number = wire.parse_number(number_arg)
        entry = self.drop.get(number)
        lines = wire.parse_count(count)
        stored = await self._stored(number, entry)
        await self._send_message(TOP_FOLLOWS, stored, TopCutter(lines))

    async def _stored(self, number: int, entry: Entry) -> Stored:
        """The message, from what was read ahead or, with the messages after
        it (up to :data:`READ_AHEAD` octets), in one worker-thread round trip.
        A message removed after it was read ahead is still sent: it was
        there when it was read (as if RETR had come a moment earlier)."""
        stored = self.ahead.pop(entry.uid, None)
        if stored is None:
            uids, budget = [entry.uid], READ_AHEAD - entry.size
            for following in self.drop.entries[number : number + READ_AHEAD_COUNT]:
                if following.deleted:
                    continue
                if following.size > budget:
                    break
                uids.append(following.uid)
                budget -= following.size
            self.ahead = await self.office.fetch(self.drop.account, uids)
            stored = self.ahead.pop(entry.uid, None)
            if stored is None:
                raise Pop3Error("Message was removed by another session")
        return stored

    async def _send_message(self, status: bytes, stored: Stored, cut: TopCutter | None) -> None:
        """The status line and the message (dot-stuffed, cut by TOP), in one
        write when it is small (drained before the next command is read); a
        large one in pieces read one after the other."""
        if stored.data is not None:
            if stored.plain:  # CRLF lines, none starting with ".": sent as it is
                # (TOP cuts after a line end, so its part is plain too)
                data = stored.data if cut is None else top_of_plain(stored.data, cut.lines)
                hangup.write(self.writer, b"".join((status, data, END)))
                return
            data = stored.data if cut is None else cut.feed(stored.data)
            stuffer = DotStuffer()
            hangup.write(self.writer, b"".join((status, stuffer.feed(data), stuffer.end())))
            return
        stuffer = DotStuffer()
        hangup.write(self.writer, status)
        pos = 0
        while pos < stored.size and not (cut and cut.done):
            try:
                piece = await self.office.read_range(stored, pos, STREAM_CHUNK)
            except Exception as exc:
                # +OK has gone out: an -ERR now would read as message text.
                # Closing without the final "." tells the client it is incomplete.
                log.error("POP3 %s: message UID %d broke off: %s", self.drop.account,
                          stored.uid, exc)  # fmt: skip
                raise ConnectionAbortedError("message broke off while being sent") from exc
            if not piece:
                break
            pos += len(piece)
            hangup.write(self.writer, stuffer.feed(piece if cut is None else cut.feed(piece)))
            await self.writer.drain()
        hangup.write(self.writer, stuffer.end())

    async def cmd_dele(self, command: Command) -> None:
        (arg,) = command.args(1, 1, "DELE message-number")
        number = wire.parse_number(arg)
        self.drop.delete(number)
        self.send(ok(f"Message {number} deleted"))

    async def cmd_rset(self, command: Command) -> None:
        command.args(0, 0, "RSET")
        self.drop.reset()
        count, size = self.drop.stat()
        self.send(ok(f"Maildrop has {count} messages ({size} octets)"))

    async def cmd_noop(self, command: Command) -> None:
        command.args(0, 0, "NOOP")
        self.send(ok())

    async def cmd_quit(self, command: Command) -> None:
        command.args(0, 0, "QUIT")
        self.closing = True
        if self.state is State.AUTHORIZATION:
            self.send(ok("Bye"))
            return
        self.state = State.UPDATE
        drop = self.drop
        uids = drop.deleted_uids()
        try:
            removed = await self.office.delete(drop.account, uids)
        except Exception as exc:
            if isinstance(exc, StorageFull):  # nothing removed; no traceback per client
                log.warning("POP3 UPDATE of %s: %s", drop.account, exc)
            else:
                log.exception("POP3 UPDATE of %s failed", drop.account)
            self.send(err("Some deleted messages were not removed", wire.SYS_TEMP))
            return
        finally:
            await self.office.unlock(drop.account)
        log.info("POP3 logout %s: %d messages removed", drop.account, removed)
        left = len(drop.entries) - len(uids)
        self.send(ok(f"Signing off ({left} messages left)"))


COMMANDS: dict[str, tuple[frozenset[State], Handler]] = {
    "CAPA": (_BOTH, Session.cmd_capa),
    "STLS": (_AUTH, Session.cmd_stls),
    "USER": (_AUTH, Session.cmd_user),
    "PASS": (_AUTH, Session.cmd_pass),
    "AUTH": (_AUTH, Session.cmd_auth),
    "APOP": (_AUTH, Session.cmd_apop),
    "QUIT": (_BOTH, Session.cmd_quit),
    "NOOP": (_TRANS, Session.cmd_noop),
    "STAT": (_TRANS, Session.cmd_stat),
    "LIST": (_TRANS, Session.cmd_list),
    "UIDL": (_TRANS, Session.cmd_uidl),
    "RETR": (_TRANS, Session.cmd_retr),
    "TOP": (_TRANS, Session.cmd_top),
    "DELE": (_TRANS, Session.cmd_dele),
    "RSET": (_TRANS, Session.cmd_rset),
}
"""Each command and the states it is valid in (RFC 1939 §§4-6, RFC 2449, 2595, 5034)."""
