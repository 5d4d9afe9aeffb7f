"""The IMAP server side (RFC 3501, and RFC 9051 per session after ``ENABLE
IMAP4rev2``): one :class:`Session` per connection.

States: not authenticated -> authenticated -> selected -> logout. Framing and
parsing are ``wire.py`` (a :class:`~waypost.protocols.imap.wire.CommandReader`
bounds lines and literals, so bad input is one ``BAD``/``NO`` and the
connection goes on); FETCH items are formatted by ``fetch.py``. Everything
about mailboxes (which mailbox a name means, the rights, the index, message
data, SEARCH evaluation, flags, copy/move, append, expunge, status, list,
ACL, quota) is asked of the mail-access service
(:class:`~waypost.services.mailaccess.MailAccess`); this module only turns
its data into responses and its errors (with their RFC 5530 codes) into
``NO``/``BAD``. It never reaches the store.

Extensions (each advertised only when complete), and where they live:

* LITERAL+, SASL-IR, ID, ENABLE, IDLE, NAMESPACE, UIDPLUS, MOVE, SPECIAL-USE,
  UNSELECT, ACL (RFC 4314, ``RIGHTS=texk``): here.
* CHILDREN, LIST-EXTENDED (complete: RECURSIVEMATCH, REMOTE, CHILDINFO),
  LIST-STATUS, STATUS=SIZE and the DELETED / DELETED-STORAGE items: the
  service's ``listing.py``; QUOTA (RFC 9208, the account's MaxAccountSize):
  ``quota.py`` here and in the service.
* MULTIAPPEND, CATENATE, APPENDLIMIT, APPEND of literal8 and UTF8 data:
  ``appending.py``; BINARY: ``fetch.py``.
* ESEARCH, SEARCHRES, WITHIN, SORT (and SORT=DISPLAY),
  THREAD=ORDEREDSUBJECT/REFERENCES: ``searching.py`` and the service's
  ``search``/``sort``/``thread`` (flag keys from per-flag bitmaps).
* CONDSTORE and QRESYNC (RFC 7162, VANISHED, [CLOSED]): ``condstore.py``.
* UTF8=ACCEPT (RFC 6855) and IMAP4rev2 (RFC 9051): ``rev2.py``; IMAP4rev2 is
  advertised because every extension it folds in is (``rev2.REV2_REQUIRES``),
  and a session that does not ENABLE it gets the IMAP4rev1 answers.

**The session's view** of the selected mailbox is its UIDs in an ``array``
(message number n is ``uids[n - 1]``), the MODSEQ it has seen and the
UIDNEXT it knows: nothing per message besides 4 bytes, so a thousand
sessions cost little. After every command (and every second in IDLE, or at
once when another session or local delivery in this process changed the
mailbox: ``services/mail_events.py``) it asks the service what changed since
that MODSEQ and reports it: ``* n EXISTS``, ``* n FETCH (FLAGS ...)`` and
``* n EXPUNGE``. EXPUNGE is held back while FETCH, STORE or SEARCH (also
their UID forms) answer (RFC 3501 §7.4.1): the message keeps its number
until a command that may renumber. The session's own flag changes are not
echoed twice: their MODSEQs are remembered until the next poll.

**Cost.** The service keeps one process-wide copy of each recently used
mailbox's message index (UIDs, flags, sizes, dates in compact arrays), so
SELECT is the rights check, the counters and an array copy, and ``FETCH 1:*
(UID FLAGS RFC822.SIZE)`` is formatted here in one loop straight from that
copy (:func:`fetch_metadata`, under the index lock) without touching the
store or a message, and written in 64 KB chunks; ENVELOPE and BODYSTRUCTURE
come from the cached MIME parse; message bytes are read only for sections,
in batches of at most a few MB; SEARCH reads only message heads unless a
BODY or TEXT key needs more. Every call into the service (and so the store,
the blob files, the MIME parser) and the password hash runs in one shared
thread pool (:class:`ImapContext`), never on the event loop and never in a
thread of its own per session.

**Rights** (spec/mailboxes.md §2-§3, RFC 4314): SELECT and EXAMINE need
``r``; SELECT answers ``[READ-ONLY]`` when the user holds none of ``s w
d``; PERMANENTFLAGS lists only what the rights allow; FETCH sets ``\\Seen``
only with ``s`` and never in EXAMINE; STORE needs ``s`` for ``\\Seen``, ``d``
(wire ``t``) for ``\\Deleted``, ``w`` for the others (``NO [NOPERM]``);
EXPUNGE and CLOSE's expunge need ``d``; COPY, MOVE and APPEND need ``i`` on
the target (MOVE also ``d`` on the source) and drop the flags the user may
not set there. A mailbox the user may not look up (no ``l``) is reported
exactly like a missing one. The service decides all of these; the session
only adds what is its own state (EXAMINE is read-only).

Logins (LOGIN, AUTHENTICATE PLAIN with or without SASL-IR) go through the
Router like every login name (aliases, ``user%domain``), under the login
guard shared with POP3 and SMTP, and need ``IMAP`` in the account's
AccessModes. Passwords are accepted only over TLS (STARTTLS or port 993),
except from loopback; CAPABILITY then says LOGINDISABLED.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import ssl
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import waypost
import waypost.protocols.imap.searching as searching
from waypost.protocols import hangup
from waypost.protocols.imap import appending, condstore, quota, rev2, wire
from waypost.protocols.imap import fetch as fetching
from waypost.protocols.imap.wire import (
    Command,
    Continue,
    ParseError,
    RawCommand,
    Rejected,
    SequenceSet,
)
from waypost.protocols.listen import endpoints, is_loopback
from waypost.services import auth
from waypost.services.container import Services
from waypost.services.login_guard import LoginGuard
from waypost.services.mailaccess.condstore import reported
from waypost.services.mailaccess.errors import (
    InvalidRights,
    MailboxError,
    NoSuchMailbox,
    NotFound,
    StoreError,
)
from waypost.services.mailaccess.index import MailboxKey
from waypost.services.mailaccess.rights import Opened
from waypost.services.mailaccess.service import Changes, FetchNeeds, MailAccess, mailbox_key
from waypost.settings import ServerSettings

log = logging.getLogger("waypost.imap")

T = TypeVar("T")

SERVICE = "IMAP"
"""The AccessModes name of the service (domains-accounts.md §4.2)."""

CAPABILITIES = " ".join((
    "IMAP4rev1",
    "LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE SPECIAL-USE UNSELECT",
    "ACL RIGHTS=texk",
    "ESEARCH SEARCHRES WITHIN SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES",
    "CHILDREN LIST-EXTENDED",
    "LIST-STATUS STATUS=SIZE",
    quota.CAPABILITY,
    "UTF8=ACCEPT",
    "MULTIAPPEND CATENATE BINARY",
    "CONDSTORE QRESYNC",
))
"""Advertised after login too; one line per group of extensions."""
CAPABILITIES = rev2.advertise(CAPABILITIES)  # IMAP4rev2 once all it needs is above

ENABLABLE: dict[str, tuple[str, ...]] = {
    "UTF8=ACCEPT": (),
    "CONDSTORE": (),
    "QRESYNC": ("CONDSTORE",),
}
"""What ENABLE (RFC 5161) turns on: each name and what it implies besides
itself (QRESYNC implies CONDSTORE, RFC 7162 §3.2.3). Only what is complete
and advertised is listed; ENABLE ignores anything else."""
if "IMAP4rev2" in CAPABILITIES.split():
    ENABLABLE["IMAP4REV2"] = ()
NAMESPACE = b'* NAMESPACE (("" "/")) (("~" "/")) NIL\r\n'
SYSTEM_FLAGS = condstore.SYSTEM_FLAGS
RECENT = "\\Recent"

READ_CHUNK = 65536
WRITE_CHUNK = 65536
"""Responses are collected and written in chunks of about this size."""
FETCH_BATCH_MESSAGES = 200
"""A FETCH that reads messages asks the service for at most this many at a time."""
IDLE_POLL = 1.0
"""Seconds between looks for changes made outside this process during IDLE."""
PREAUTH_TIMEOUT = 120
PREAUTH_LITERAL = 64 * 1024
"""Largest literal before login (a user name or password does not need more)."""
MAX_BAD = 30
"""Consecutive BAD answers after which the connection is closed."""
WORKERS = 8


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class ImapError(Exception):
    """A command the session refuses: ``tag status [code] text``."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


def bad(text: str) -> ImapError:
    return ImapError(text, status="BAD")


@dataclass(frozen=True, slots=True)
class Reply:
    """The tagged OK of a command."""

    text: str
    code: str | None = None


# -- the process-wide part ---------------------------------------------------------


class ImapContext:
    """What every IMAP session of the process shares: the services, the
    login guard, the mail-access service, the thread pool and the mail events."""

    def __init__(
        self,
        services: Services,
        guard: LoginGuard,
        *,
        tls: ssl.SSLContext | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.services = services
        self.guard = guard
        self.tls = tls
        self.mail = MailAccess(services)  # the mailboxes, and the process's index cache
        self.executor = executor or ThreadPoolExecutor(WORKERS, thread_name_prefix="imap")
        self.hub = services.events  # shared with local delivery
        self.settings: ServerSettings = services.settings()
        self._version = -1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the shared thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def refresh(self) -> None:
        """Pick up changed settings (a cheap version check)."""
        self._version = await self.run(self._refresh)

    def _refresh(self) -> int:
        version = self.mail.version()
        if version != self._version:
            self.settings = self.services.settings()
        return version

    # limits, from the settings
    @property
    def max_line(self) -> int:
        return self.settings.size("IMAPMaxLine") or 1024 * 1024

    @property
    def max_literal(self) -> int:
        return self.settings.size("IMAPMaxLiteral") or wire.MAX_NUMBER

    @property
    def max_command(self) -> int:
        """All literals of one command (a MULTIAPPEND) together; never less
        than one largest literal and its lines (``IMAPMaxCommand``)."""
        least = self.max_literal + 4 * self.max_line
        return max(self.settings.size("IMAPMaxCommand") or wire.MAX_NUMBER, least)

    @property
    def idle_timeout(self) -> int:
        return self.settings.number("IMAPIdleTimeout")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# -- the selected mailbox ----------------------------------------------------------


class Selected:
    """The session's view of its selected mailbox (see the module doc)."""

    __slots__ = (
        "examine",
        "key",
        "keywords",
        "modseq",
        "opened",
        "own",
        "pending",
        "recent",
        "saved",
        "uidnext",
        "uids",
        "uidvalidity",
    )

    def __init__(
        self,
        opened: Opened,
        examine: bool,
        uidvalidity: int,
        uidnext: int,
        modseq: int,
        uids: array[int],
        keywords: set[str],
        recent_first: int,
    ) -> None:
        self.opened = opened
        self.examine = examine
        self.key = mailbox_key(opened)
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.modseq = modseq
        self.uids = uids
        self.keywords = keywords
        # \Recent: UID ranges [low, high) this session claimed
        self.recent: list[tuple[int, int]] = []
        if recent_first < uidnext:
            self.recent.append((recent_first, uidnext))
        self.pending: set[int] = set()  # expunged elsewhere, not reported yet
        self.own: set[int] = set()  # MODSEQs of this session's own flag changes
        self.saved: frozenset[int] = frozenset()  # UIDs of $ (RFC 5182), empty on SELECT

    @property
    def read_only(self) -> bool:
        return self.examine or self.opened.read_only

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def add_recent(self, low: int, high: int) -> None:
        """Claim UIDs [low, high) as \\Recent. A range that touches the last
        one extends it, and ranges holding no message any more are dropped
        (UIDs only grow, so none can come back): a session that appends all
        day keeps one range, not one per message, and each command's
        \\Recent count and test stay O(1) for it."""
        uids = self.uids
        kept = [(lo, hi) for lo, hi in self.recent if bisect_left(uids, hi) > bisect_left(uids, lo)]
        if kept and kept[-1][1] >= low:
            kept[-1] = (kept[-1][0], max(kept[-1][1], high))
        else:
            kept.append((low, high))
        self.recent = kept

    def recent_count(self) -> int:
        uids = self.uids
        return sum(bisect_left(uids, high) - bisect_left(uids, low) for low, high in self.recent)

    def recent_test(self) -> Callable[[int], bool]:
        """Whether a UID is \\Recent in this session: asked once per message
        of a FETCH, so the usual one range is a single comparison."""
        ranges = tuple(self.recent)
        if not ranges:
            return lambda uid: False
        if len(ranges) == 1:
            ((low, high),) = ranges
            return lambda uid: low <= uid < high
        return lambda uid: any(low <= uid < high for low, high in ranges)

    def permanent_flags(self) -> list[str]:
        return [] if self.examine else self.opened.permanent_flags(self.keywords)


# -- FETCH formatting (runs in the thread pool) -------------------------------------


@dataclass(slots=True)
class FetchBatch:
    chunks: list[bytes]
    done: int  # pairs handled (the rest needs another call)
    missing: int  # messages no longer there
    own: int | None  # MODSEQ of the \Seen this FETCH set
    keywords: set[str]  # the keywords the lines show (announced first: RFC 3501 §7.2.6)


def fetch_batch(
    ctx: ImapContext,
    opened: Opened,
    pairs: Sequence[tuple[int, int]],
    atts: Sequence[wire.FetchAtt],
    plan: fetching.FetchPlan,
    uid_command: bool,
    can_set_seen: bool,
    recent: Callable[[int], bool],
    leaf_only: bool = False,
    with_modseq: bool = False,
) -> FetchBatch:
    """``* n FETCH`` lines for (message number, UID) ``pairs`` from the data
    the service reads (about :data:`~waypost.services.mailaccess.FETCH_BATCH_BYTES`
    at a time), and the implicit ``\\Seen``, stored before the lines are
    written so that they carry its MODSEQ (RFC 7162 §3.1)."""
    needs = FetchNeeds(plan.raw, plan.header_only, plan.parsed)
    batch = ctx.mail.fetch(opened, pairs, needs)
    own, after = None, {}
    if can_set_seen and plan.seen:
        unseen = [m for m in batch.messages if not any(f.lower() == "\\seen" for f in m.flags)]
        before = {m.uid: m.modseq for m in unseen}
        updates = ctx.mail.set_seen(opened, unseen)
        after = {uid: modseq for uid, modseq, _ in updates}
        own = max((m for uid, m, _ in updates if m != before.get(uid)), default=None)
    chunks: list[bytes] = []
    keywords: set[str] = set()
    for m in batch.messages:
        flags = (*m.flags, RECENT) if recent(m.uid) else m.flags
        keywords.update(f for f in flags if f[:1] != "\\")
        result = fetching.fetch(
            atts,
            fetching.FetchMessage(
                m.seq, m.uid, flags, m.internal_date, m.size, m.raw, m.parsed,
                after.get(m.uid, m.modseq),
            ),
            uid_command=uid_command,
            can_set_seen=can_set_seen and m.uid in after,
            leaf_only=leaf_only,
            condstore=with_modseq,
        )  # fmt: skip
        chunks.append(result.response)
    return FetchBatch(chunks, batch.done, batch.missing, own, keywords)


_METADATA = {
    "FLAGS": b"FLAGS %s",
    "RFC822.SIZE": b"RFC822.SIZE %d",
    "INTERNALDATE": b"INTERNALDATE %s",
    "MODSEQ": b"MODSEQ (%d)",
}


def metadata_only(atts: Sequence[wire.FetchAtt]) -> bool:
    """Only UID, FLAGS, RFC822.SIZE, INTERNALDATE and MODSEQ: the index answers."""
    return all(a.section is None and (a.name == "UID" or a.name in _METADATA) for a in atts)


def fetch_metadata(
    ctx: ImapContext,
    opened: Opened,
    pairs: Sequence[tuple[int, int]],
    atts: Sequence[wire.FetchAtt],
    uid_command: bool,
    recent: Callable[[int], bool] | None,
) -> tuple[list[bytes], int, set[str]]:
    """``* n FETCH`` lines formatted in one loop straight from the process's
    copy of the index (the 10,000-message ``FETCH 1:* (UID FLAGS
    RFC822.SIZE)``); how many of the messages no longer exist; the keywords shown."""
    with_uid = uid_command or any(a.name == "UID" for a in atts)
    names = [a.name for a in atts if a.name != "UID"]
    kinds = [("FLAGS", "RFC822.SIZE", "INTERNALDATE", "MODSEQ").index(n) for n in names]
    pieces = ([b"UID %d"] if with_uid else []) + [_METADATA[n] for n in names]
    form = b"* %d FETCH (" + b" ".join(pieces) + b")\r\n"
    shown: dict[tuple[str, ...], bytes] = {}
    lines: list[bytes] = []
    missing = 0
    with ctx.mail.index(opened) as index:
        uids, flags, sizes, dates = index.uids, index.flags, index.sizes, index.dates
        modseqs = index.modseqs
        count = len(uids)
        for seq, uid in pairs:
            i = seq - 1
            if i >= count or uids[i] != uid:
                found = index.position(uid)
                if found is None:
                    missing += 1
                    continue
                i = found
            values: list[Any] = [seq, uid] if with_uid else [seq]
            for kind in kinds:
                if kind == 0:
                    these = flags[i]
                    if recent is not None and recent(uid):
                        these = (*these, RECENT)
                    text = shown.get(these)
                    if text is None:
                        text = shown[these] = wire.flag_list(these)
                    values.append(text)
                elif kind == 1:
                    values.append(sizes[i])
                elif kind == 2:
                    values.append(wire.internal_date(dates[i]))
                else:
                    values.append(modseqs[i])
            lines.append(form % tuple(values))
    keywords = {f for shown_flags in shown for f in shown_flags if f[:1] != "\\"}
    return lines, missing, keywords


# -- the session -------------------------------------------------------------------

Handler = Callable[["Session", Command], Awaitable["Reply | str | None"]]


class Session:
    def __init__(
        self,
        ctx: ImapContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        implicit_tls: bool = False,
    ) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.client_ip, self.server_ip = endpoints(writer)
        self.tls = implicit_tls
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.selected: Selected | None = None
        self.commands = wire.CommandReader(
            max_line=ctx.max_line, max_literal=min(PREAUTH_LITERAL, ctx.max_literal)
        )
        self.events: deque[RawCommand | Rejected] = deque()
        self.out: list[bytes] = []
        self.out_size = 0
        self.bad = 0
        self._wake: asyncio.Event | None = None
        self._polled: tuple[Selected, Any] | None = None  # see _run_polled
        self.enabled: set[str] = set()
        """Extensions turned on by ENABLE (upper case), e.g. ``IMAP4REV2``."""

    # -- trust -------------------------------------------------------------------

    @property
    def loopback(self) -> bool:
        return is_loopback(self.client_ip)

    @property
    def login_allowed(self) -> bool:
        """Passwords only over TLS, except from loopback (RFC 3501 §6.2.3, RFC 2595)."""
        return self.tls or self.loopback

    def capabilities(self) -> str:
        caps = CAPABILITIES
        if self.state is State.NOT_AUTHENTICATED:
            if self.ctx.tls is not None and not self.tls:
                caps += " STARTTLS"
            caps += " AUTH=PLAIN" if self.login_allowed else " LOGINDISABLED"
        return f"{caps} APPENDLIMIT={self.ctx.max_literal}"  # RFC 7889 §3.1

    # -- output --------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size >= WRITE_CHUNK:
            self._write()

    def _write(self) -> None:
        if self.out:
            out = self.out
            self.out = []
            self.out_size = 0
            hangup.write(self.writer, b"".join(out) if len(out) > 1 else out[0])

    def send_all(self, lines: list[bytes]) -> None:
        """Many responses, written in chunks of about :data:`WRITE_CHUNK`."""
        self._write()
        for start in range(0, len(lines), 512):
            hangup.write(self.writer, b"".join(lines[start : start + 512]))

    async def flush(self) -> None:
        self._write()
        await self.writer.drain()

    def poke(self) -> None:
        """Another session changed the selected mailbox."""
        if self._wake is not None:
            self._wake.set()

    # -- input ---------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        idle = self.ctx.idle_timeout
        return min(idle, PREAUTH_TIMEOUT) if self.state is State.NOT_AUTHENTICATED else idle

    def _feed(self, data: bytes) -> None:
        for event in self.commands.feed(data):
            if isinstance(event, Continue):
                self.send(wire.continuation())
            else:
                self.events.append(event)

    async def next_event(self) -> RawCommand | Rejected | None:
        """The next framed command (or rejection); None at end of input or
        after the idle timeout (a BYE is sent then)."""
        while not self.events:
            await self.flush()
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), self.timeout)
            except TimeoutError:
                self.send(wire.untagged("BYE Autologout; idle for too long"))
                return None
            if not data:
                return None
            self._feed(data)
        return self.events.popleft()

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.send(
                wire.untagged(
                    f"OK [CAPABILITY {self.capabilities()}] Waypost IMAP4rev1 server ready"
                )
            )
            while self.state is not State.LOGOUT:
                event = await self.next_event()
                if event is None:
                    break
                if isinstance(event, Rejected):
                    self.send(event.response())
                    if event.fatal:
                        self.send(wire.untagged("BYE Literal too large; closing the connection"))
                        break
                    if self._count_bad():
                        break
                    continue
                await self.execute(event)
                if self.bad >= MAX_BAD:
                    break
            with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
                await self.flush()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("IMAP client %s went away: %s", self.client_ip, exc)
        except asyncio.CancelledError:
            # the server is stopping: say so, and end this connection's task quietly
            with contextlib.suppress(Exception):
                self.out.clear()
                self.writer.write(wire.untagged("BYE Server shutting down"))
        finally:
            self._deselect()
            with contextlib.suppress(Exception):
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 2)

    def _count_bad(self) -> bool:
        self.bad += 1
        if self.bad >= MAX_BAD:
            self.send(wire.untagged("BYE Too many invalid commands"))
            return True
        return False

    async def execute(self, raw: RawCommand) -> None:
        try:
            utf8_accept = "UTF8=ACCEPT" in self.enabled
            command = wire.parse_command(raw, utf8=self.utf8_names, utf8_accept=utf8_accept)
        except ParseError as exc:
            self.send(exc.response())
            if exc.status == "BAD":
                self._count_bad()
            elif isinstance(exc, wire.SaveFailed) and self.selected is not None:
                self.selected.saved = frozenset()  # RFC 5182 §2.1
            return
        tag = command.tag
        entry = COMMANDS.get(command.name)
        if entry is None:  # parse_command knows no other names
            self.send(wire.tagged(tag, "BAD", f"Unknown command {command.name}"))
            self._count_bad()
            return
        states, handler = entry
        if self.state not in states:
            self.send(wire.tagged(tag, "BAD", self._wrong_state(command.name)))
            self._count_bad()
            return
        status, text, code = "OK", "", None
        self._polled = None
        try:
            refused = rev2.refusal(command, self.rev2)  # a name naming nothing: NO, not BAD
            if refused is not None:
                raise ImapError(refused.text, refused.code, refused.status)
            reply = await handler(self, command)
            if reply is None:
                return  # the handler answered (STARTTLS)
            if isinstance(reply, Reply):
                text, code = reply.text, reply.code
            else:
                text = reply
        except ImapError as exc:
            status, text, code = exc.status, exc.text, exc.code
        except ParseError as exc:
            status, text, code = exc.status, exc.text, exc.code
        except InvalidRights as exc:
            status, text = "BAD", str(exc)
        except MailboxError as exc:
            status, text, code = "NO", str(exc), rev2.response_code(exc.code, self.rev2)
        except (ConnectionError, ssl.SSLError):
            raise
        except StoreError as exc:
            log.warning("IMAP %s of %s failed: %s", command.name, self.user, exc)
            status, text, code = "NO", str(exc), "UNAVAILABLE"
        except Exception:
            log.exception("IMAP %s from %s failed", command.name, self.client_ip)
            status, text, code = "NO", "Internal error; try again later", "SERVERBUG"
        if status == "BAD":
            self._count_bad()
        else:
            self.bad = 0
        if self.state is State.SELECTED and command.name not in _NO_SYNC:
            await self.sync(allow_expunge=command.name not in _HOLD_EXPUNGE)
        if self.state is State.LOGOUT and command.name != "LOGOUT":
            return  # the mailbox went away: BYE was sent
        self.send(wire.tagged(tag, status, text, code))

    def _wrong_state(self, name: str) -> str:
        if self.state is State.NOT_AUTHENTICATED:
            return f"{name} is not valid before login; log in first"
        if name in ("LOGIN", "AUTHENTICATE", "STARTTLS"):
            return f"{name} is not valid after login: already authenticated"
        if name == "ENABLE":
            return "ENABLE is only valid before a mailbox is selected"
        return f"{name} needs a selected mailbox; SELECT one first"

    # -- change reporting ------------------------------------------------------------

    async def sync(self, *, allow_expunge: bool) -> None:
        """Report what other sessions (and deliveries) changed in the selected
        mailbox: EXPUNGE (when allowed), EXISTS, RECENT, FETCH FLAGS."""
        sel = self.selected
        if sel is None:
            return
        polled, self._polled = self._polled, None
        try:
            if polled is not None and polled[0] is sel:
                if isinstance(polled[1], Exception):
                    raise polled[1]
                changes, first = polled[1]
            else:
                changes, first = await self.ctx.run(self._poll_of(sel))
        except NotFound:
            self._gone("Selected mailbox was deleted; closing the connection")
            return
        except StoreError as exc:  # try again after the next command
            where = "/".join(sel.opened.target.ref)
            log.warning("IMAP: cannot poll %s for changes: %s", where, exc)
            return
        if sel is not self.selected:
            return
        if changes.uidvalidity != sel.uidvalidity:
            self._gone(
                "Selected mailbox was replaced (UIDVALIDITY changed); closing the connection"
            )
            return
        uids = sel.uids
        for uid in changes.expunged:
            i = bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                sel.pending.add(uid)
        if allow_expunge and sel.pending:
            self.report_expunged(sel.pending)
        new = [m for m in changes.new if m.uid >= sel.uidnext]
        # keywords first: none may appear in FETCH FLAGS before * FLAGS (RFC 3501 §7.2.6)
        condstore.announce_keywords(self, (f for m in (*new, *changes.changed) for f in m.flags))
        if new:
            for meta in new:
                sel.uids.append(meta.uid)
            if first is not None:
                sel.add_recent(max(first, new[0].uid), changes.uidnext)
            self.send(b"* %d EXISTS\r\n" % len(sel.uids))
            if not self.rev2:
                self.send(b"* %d RECENT\r\n" % sel.recent_count())
        sel.uidnext = max(sel.uidnext, changes.uidnext)
        recent = sel.recent_test()
        for meta in changes.changed:
            if meta.modseq in sel.own or meta.uid in sel.pending or meta.modseq <= sel.modseq:
                continue  # the last: seen already (a poll made before _own_change)
            seq = sel.seq_of(meta.uid)
            if seq is None:
                continue
            flags = (*meta.flags, RECENT) if recent(meta.uid) else meta.flags
            modseq = meta.modseq if self.condstore else None
            self.send(condstore.flags_line(seq, meta.uid, flags, modseq))
        sel.modseq = max(sel.modseq, changes.highestmodseq)
        sel.own.clear()

    def _poll_of(self, sel: Selected) -> Callable[[], tuple[Changes, int | None]]:
        """The service's poll for what changed since the view (claiming
        \\Recent unless examined; rev2 has no \\Recent, RFC 9051 Appendix E)."""
        claim = not sel.examine and not self.rev2
        return functools.partial(self.ctx.mail.poll, sel.opened, sel.modseq, sel.uidnext, claim)

    async def _run_polled(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the thread pool followed, in the same job,
        by the poll that :meth:`sync` makes after the command: one handoff
        to the pool and back instead of two (each is a wake-up of a worker
        and of the event loop, the cost that dominated short commands under
        ten busy sessions). The poll starts from the view as it was before
        the command; :meth:`sync` skips what the command itself already
        reported (MODSEQs up to the view's, UIDs it holds)."""
        sel = self.selected
        if sel is None:
            return await self.ctx.run(fn, *args, **kwargs)
        poll = self._poll_of(sel)

        def job() -> tuple[T, Any]:
            result = fn(*args, **kwargs)
            try:
                return result, poll()
            except (NotFound, StoreError) as exc:  # sync() reports these as its own poll would
                return result, exc

        result, polled = await self.ctx.run(job)
        self._polled = (sel, polled)
        return result

    def _gone(self, text: str) -> None:
        self.send(wire.untagged(f"BYE {text}"))
        self._deselect()
        self.state = State.LOGOUT

    def report_expunged(self, gone: Iterable[int]) -> None:
        """``* n EXPUNGE`` for the view's messages among ``gone``; renumber."""
        sel = self.selected
        assert sel is not None
        uids = sel.uids
        positions = []
        for uid in set(gone):
            i = bisect_left(uids, uid)
            if i < len(uids) and uids[i] == uid:
                positions.append(i)
        positions.sort()
        if positions:
            self.send(condstore.expunged_lines(uids, positions, self.qresync))
            drop = {uids[i] for i in positions}
            sel.uids = array("I", (u for u in uids if u not in drop))
            sel.pending -= drop

    def _deselect(self) -> None:
        sel = self.selected
        if sel is not None:
            self.ctx.hub.unsubscribe(sel.key, self)
            self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def _own_change(self, modseq: int | None) -> None:
        """This session changed flags with ``modseq``: not to be reported back.
        When nothing else happened in between, the view simply moves on."""
        sel = self.selected
        if sel is None or modseq is None:
            return
        if modseq == sel.modseq + 1:
            sel.modseq = modseq
        else:
            sel.own.add(modseq)

    def _publish(self, key: MailboxKey) -> None:
        self.ctx.hub.publish(key, self)

    # -- helpers -----------------------------------------------------------------------

    @property
    def sel(self) -> Selected:
        assert self.selected is not None
        return self.selected

    @property
    def account(self) -> str:
        assert self.user is not None
        return self.user

    def pairs(self, seqset: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(message number, UID) of the set, in order; message numbers must exist."""
        if seqset.saved:
            return searching.saved_pairs(self.sel.uids, self.sel.saved)
        uids = self.sel.uids
        if uid:
            found: list[tuple[int, int]] = []
            for low, high in seqset.resolve(uids[-1] if uids else 0):
                end = bisect_right(uids, high)
                found.extend((i + 1, uids[i]) for i in range(bisect_left(uids, low), end))
            return found
        count = len(uids)
        if count == 0:
            if all(None in r for r in seqset.ranges):
                return []
            raise bad("Invalid message sequence number: the mailbox is empty")
        highest = seqset.highest()
        if highest > count:
            raise bad(
                f"Invalid message sequence number {highest}: the mailbox has {count} "
                f"message{'s' if count != 1 else ''}"
            )
        out: list[tuple[int, int]] = []
        for low, high in seqset.resolve(count):
            first = max(low, 1)
            out.extend(zip(range(first, high + 1), uids[first - 1 : high], strict=True))
        return out

    def _writable(self, what: str) -> None:
        if self.sel.examine:
            raise ImapError(
                f"{what} is not allowed: the mailbox was opened with EXAMINE (read-only)"
            )

    # -- any state -----------------------------------------------------------------------

    async def cmd_capability(self, command: Command) -> str:
        self.send(wire.untagged(f"CAPABILITY {self.capabilities()}"))
        return "CAPABILITY completed"

    async def cmd_noop(self, command: Command) -> str:
        return "NOOP completed"

    async def cmd_logout(self, command: Command) -> str:
        self.send(wire.untagged("BYE Waypost IMAP server signing off"))
        self._deselect()
        self.state = State.LOGOUT
        return "LOGOUT completed"

    async def cmd_id(self, command: Command) -> str:
        if command.args.params:
            log.debug("IMAP client %s ID %s", self.client_ip, command.args.params)
        fields = (("name", "Waypost"), ("version", waypost.__version__), ("vendor", "Waypost"))
        body = b" ".join(wire.string(k) + b" " + wire.string(v) for k, v in fields)
        self.send(b"* ID (" + body + b")\r\n")
        return "ID completed"

    # -- not authenticated -------------------------------------------------------------

    async def cmd_starttls(self, command: Command) -> None:
        if self.ctx.tls is None:
            raise bad("STARTTLS is not available")
        if self.tls:
            raise bad("TLS is already active")
        if self.events or self.commands.pending:
            # Plaintext pipelined after STARTTLS would be read as sent inside
            # TLS (CVE-2011-0411 class): refuse it.
            self.events.clear()
            self.commands = wire.CommandReader(
                max_line=self.ctx.max_line, max_literal=PREAUTH_LITERAL
            )
            raise bad("No command may follow STARTTLS before the TLS handshake")
        self.send(wire.tagged(command.tag, "OK", "Begin TLS negotiation now"))
        await self.flush()
        await self.writer.start_tls(self.ctx.tls)
        self.tls = True
        return None  # answered already

    async def cmd_login(self, command: Command) -> Reply:
        args: wire.Login = command.args
        self._require_privacy()
        return await self._login(args.user, args.password, "LOGIN")

    async def cmd_authenticate(self, command: Command) -> Reply:
        args: wire.Authenticate = command.args
        if args.mechanism != "PLAIN":
            raise ImapError(
                f"Unsupported authentication mechanism {args.mechanism}; use PLAIN", "CANNOT"
            )
        self._require_privacy()
        if args.initial is not None:
            response = "" if args.initial == "=" else args.initial
        else:
            self.send(b"+ \r\n")
            event = await self.next_event()
            if event is None:
                raise ConnectionResetError("connection closed during AUTHENTICATE")
            if isinstance(event, Rejected):
                raise bad("Authentication response too long")
            if event.literals or len(event.lines) != 1:
                raise bad("Invalid authentication response")
            response = event.lines[0].strip().decode("ascii", "replace")
            if response == "*":
                raise bad("Authentication cancelled")
        try:
            decoded = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            raise bad("Invalid base64 in the authentication response") from None
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            raise bad("Invalid PLAIN response (expected authzid NUL authcid NUL password)")
        authzid, login, password = (p.decode("utf-8", "surrogateescape") for p in parts)
        if authzid and authzid.lower() != login.lower():
            raise ImapError(
                "Authorization identity must be empty or the login name", "AUTHORIZATIONFAILED"
            )
        return await self._login(login, password, "AUTHENTICATE PLAIN")

    def _require_privacy(self) -> None:
        if not self.login_allowed:
            raise ImapError(
                "Log in only over TLS: use STARTTLS first (or port 993)", "PRIVACYREQUIRED"
            )

    async def _login(self, login: str, password: str, how: str) -> Reply:
        ctx = self.ctx
        login = await auth.qualified_login(ctx.services, login, self.server_ip)
        attempt = await auth.guarded_login(
            ctx.services, ctx.guard, ctx.settings, self.client_ip, login,
            lambda: ctx.run(_check_password, ctx.services, login, password), service=SERVICE,
        )  # fmt: skip
        account = attempt.account
        if account is None:
            raise ImapError("Authentication failed", "AUTHENTICATIONFAILED")
        enabled = await ctx.run(ctx.services.directory.service_enabled, account, SERVICE)
        if not enabled:
            log.info(
                "IMAP login of %s from %s refused: IMAP not in AccessModes", account, self.client_ip
            )
            raise ImapError("IMAP access is not enabled for this account", "CONTACTADMIN")
        await ctx.run(ctx.mail.ensure_inbox, account)
        self.user = account
        self.state = State.AUTHENTICATED
        self.commands.max_literal = ctx.max_literal
        self.commands.max_command = ctx.max_command
        log.info(
            "IMAP login %s from %s (%s%s)",
            account,
            self.client_ip,
            how,
            ", TLS" if self.tls else "",
        )
        return Reply(f"{account} logged in", f"CAPABILITY {self.capabilities()}")

    # -- authenticated -------------------------------------------------------------------

    @property
    def rev2(self) -> bool:
        """IMAP4rev2 (RFC 9051) is on for this session: ENABLE IMAP4rev2."""
        return "IMAP4REV2" in self.enabled

    @property
    def utf8_names(self) -> bool:
        """Mailbox names are UTF-8 on the wire (RFC 6855 §3, RFC 9051 §5.1)."""
        return self.rev2 or "UTF8=ACCEPT" in self.enabled

    @property
    def condstore(self) -> bool:
        """CONDSTORE (RFC 7162 §3.1) is on: FETCH responses carry MODSEQ."""
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        """QRESYNC (RFC 7162 §3.2) is on: expunges are reported as VANISHED."""
        return "QRESYNC" in self.enabled

    async def cmd_enable(self, command: Command) -> str:
        """RFC 5161: ``* ENABLED`` lists what this command newly turned on."""
        args: wire.Enable = command.args
        newly: list[str] = []
        for name in args.capabilities:
            for cap in (name, *ENABLABLE.get(name, ())) if name in ENABLABLE else ():
                if cap not in self.enabled:
                    self.enabled.add(cap)
                    newly.append(cap)
        self.send(b"* ENABLED" + b"".join(b" " + c.encode() for c in newly) + b"\r\n")
        return "ENABLE completed"

    async def cmd_namespace(self, command: Command) -> str:
        self.send(NAMESPACE)
        return "NAMESPACE completed"

    async def cmd_select(self, command: Command) -> Reply:
        args: wire.Select = command.args
        examine = command.name == "EXAMINE"
        if self.selected is not None and (self.qresync or self.rev2):
            self.send(wire.untagged("OK [CLOSED] Previous mailbox closed"))  # RFC 7162 §3.2.11
        self._deselect()  # even when this SELECT fails (RFC 3501 §6.3.1)
        rev2.check_name(args.mailbox)
        if args.qresync is not None and not self.qresync:
            raise bad("The QRESYNC parameter needs ENABLE QRESYNC first (RFC 7162 §3.2.5)")
        if args.params:
            self.enabled.add("CONDSTORE")  # both parameters enable CONDSTORE (RFC 7162 §3.1)
        result = await self.ctx.run(self.ctx.mail.select, self.account, args.mailbox, examine)
        sel = Selected(
            result.opened,
            examine,
            result.uidvalidity,
            result.uidnext,
            result.modseq,
            result.uids,
            result.keywords,
            result.uidnext if self.rev2 else result.recent_first,
        )
        flags = [*SYSTEM_FLAGS, *sorted(sel.keywords)]
        self.send(b"* FLAGS " + wire.flag_list(flags) + b"\r\n")
        self.send(
            b"* OK [PERMANENTFLAGS "
            + wire.flag_list(sel.permanent_flags())
            + b"] Flags the user may change\r\n"
        )
        self.send(b"* %d EXISTS\r\n" % len(sel.uids))
        if self.rev2:
            await self._list_one(args.mailbox)
        else:
            self.send(b"* %d RECENT\r\n" % sel.recent_count())
        if result.first_unseen and not self.rev2:
            self.send(b"* OK [UNSEEN %d] First unseen message\r\n" % result.first_unseen)
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % sel.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % sel.uidnext)
        if self.condstore:
            self.send(condstore.highestmodseq_line(sel.modseq))
        self.selected = sel
        self.state = State.SELECTED
        self.ctx.hub.subscribe(sel.key, self)
        if args.qresync is not None:
            await condstore.resync(self, args.qresync)
        if sel.read_only:
            return Reply(f"{command.name} completed", "READ-ONLY")
        return Reply(f"{command.name} completed", "READ-WRITE")

    async def _list_one(self, name: str) -> None:
        """``* LIST`` for one mailbox, its attributes as LIST gives them and
        OLDNAME when the name came in another normalisation form: what rev2
        SELECT sends (RFC 9051 §6.3.2) and CREATE of such a name (§6.3.4)."""
        ctx = self.ctx
        entries = await ctx.run(ctx.mail.list_mailboxes, self.account, "", (name,))
        listed, attributes = (entries[0].name, entries[0].attributes) if entries else (name, ())
        sent = name.sent if isinstance(name, wire.Denormalized) else None
        extra = wire.oldname(sent) if sent is not None else b""
        self.send(wire.list_line(listed, attributes, utf8=True, extra=extra))

    async def cmd_create(self, command: Command) -> str:
        args: wire.Create = command.args
        if len(args.special_use) > 1:
            raise ImapError("A mailbox can have one special use", "USEATTR")
        name = args.mailbox
        use = args.special_use[0] if args.special_use else None
        await self.ctx.run(self.ctx.mail.create, self.account, name, special_use=use)
        if isinstance(name, wire.Denormalized):
            await self._list_one(name)  # the name it got (RFC 9051 §6.3.4)
        return "CREATE completed"

    async def cmd_delete(self, command: Command) -> str:
        name = command.args.mailbox
        ctx = self.ctx
        key = await ctx.run(ctx.mail.delete, self.account, name)
        if self.selected is not None and self.selected.key == key:
            self._deselect()
            self.send(wire.untagged("OK [CLOSED] The selected mailbox was deleted"))
        ctx.hub.publish(key, self)
        return "DELETE completed"

    async def cmd_rename(self, command: Command) -> str:
        args: wire.Rename = command.args
        ctx = self.ctx
        key = await ctx.run(ctx.mail.rename, self.account, args.old, args.new)
        if self.selected is not None and self.selected.key == key:
            self._deselect()
            self.send(wire.untagged("OK [CLOSED] The selected mailbox was renamed"))
        ctx.hub.publish(key, self)
        return "RENAME completed"

    async def cmd_subscribe(self, command: Command) -> str:
        await self.ctx.run(self.ctx.mail.subscribe, self.account, command.args.mailbox)
        return "SUBSCRIBE completed"

    async def cmd_unsubscribe(self, command: Command) -> str:
        await self.ctx.run(self.ctx.mail.unsubscribe, self.account, command.args.mailbox)
        return "UNSUBSCRIBE completed"

    async def cmd_list(self, command: Command) -> str:
        lsub = command.name == "LSUB"
        args: wire.ListArgs = command.args
        entries = await self.ctx.run(
            self.ctx.mail.list_mailboxes, self.account, args.reference, args.patterns, lsub=lsub,
            select=args.select, returns=args.returns, status=args.status,
            extended=args.extended, rev2=self.rev2,
        )  # fmt: skip
        utf8 = self.utf8_names
        for entry in entries:
            extra = wire.childinfo(entry.childinfo) if entry.childinfo else b""
            self.send(wire.list_line(entry.name, entry.attributes, command=command.name,
                                     extra=extra, utf8=utf8))  # fmt: skip
            if entry.status is not None:
                self.send(wire.status_line(entry.name, entry.status, utf8=utf8))
        return f"{command.name} completed"

    async def cmd_status(self, command: Command) -> str:
        args: wire.Status = command.args
        if "HIGHESTMODSEQ" in args.items:
            condstore.turn_on(self)  # RFC 7162 §3.1
        values = await self.ctx.run(self.ctx.mail.status, self.account, args.mailbox, args.items)
        self.send(wire.status_line(args.mailbox, values, utf8=self.utf8_names))
        return "STATUS completed"

    async def cmd_append(self, command: Command) -> Reply:
        """APPEND, MULTIAPPEND, CATENATE, literal8 and UTF8 (``appending.py``)."""
        ctx = self.ctx
        limits = appending.Limits(
            ctx.max_literal, ctx.max_command, "UTF8=ACCEPT" in self.enabled, self.server_ip
        )
        args = command.args
        done = await self._run_polled(appending.append, ctx.mail, self.account, args, limits)
        self._publish(done.target)
        return Reply("APPEND completed", appending.appenduid(done))

    async def cmd_idle(self, command: Command) -> Reply | str:
        self.send(b"+ idling\r\n")
        if self.selected is not None:
            await self.sync(allow_expunge=True)
        await self.flush()
        wake = self._wake = asyncio.Event()
        deadline = time.monotonic() + self.ctx.idle_timeout
        read: asyncio.Future[bytes] | None = None
        try:
            while True:
                while self.events:
                    event = self.events.popleft()
                    if isinstance(event, Rejected) or not wire.idle_done(event):
                        raise bad("Expected DONE to end IDLE")
                    return "IDLE terminated"
                left = deadline - time.monotonic()
                if left <= 0:
                    self._gone("Autologout; idle for too long")
                    return "IDLE ended"
                if read is None:
                    read = asyncio.ensure_future(self.reader.read(READ_CHUNK))
                waiter = asyncio.ensure_future(wake.wait())
                pending: set[asyncio.Future[Any]] = {read, waiter}
                try:
                    await asyncio.wait(
                        pending,
                        timeout=min(IDLE_POLL, left),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
                if read.done():
                    data = read.result()
                    read = None
                    if not data:
                        raise ConnectionResetError("connection closed in IDLE")
                    self._feed(data)
                    continue
                wake.clear()
                if self.selected is not None:
                    await self.sync(allow_expunge=True)
                    if self.state is State.LOGOUT:
                        return "IDLE ended"
                await self.flush()
        finally:
            self._wake = None
            if read is not None:
                read.cancel()
                with contextlib.suppress(BaseException):
                    await read

    # -- ACL (RFC 4314) ------------------------------------------------------------------

    async def cmd_getacl(self, command: Command) -> str:
        name = command.args.mailbox
        acl = await self.ctx.run(self.ctx.mail.get_acl, self.account, name)
        items = [wire.mailbox(name, utf8=self.utf8_names)]
        for identifier, rights in acl:
            items += [wire.astring(identifier), wire.astring(rights)]
        self.send(b"* ACL " + b" ".join(items) + b"\r\n")
        return "GETACL completed"

    async def cmd_setacl(self, command: Command) -> str:
        args: wire.SetAcl = command.args
        prefix = {"set": "", "add": "+", "remove": "-"}[args.mode]
        await self.ctx.run(
            self.ctx.mail.set_acl,
            self.account,
            args.mailbox,
            args.identifier,
            prefix + args.rights,
        )
        return "SETACL completed"

    async def cmd_deleteacl(self, command: Command) -> str:
        args: wire.AclIdentifier = command.args
        await self.ctx.run(self.ctx.mail.delete_acl, self.account, args.mailbox, args.identifier)
        return "DELETEACL completed"

    async def cmd_listrights(self, command: Command) -> str:
        args: wire.AclIdentifier = command.args
        required, optional = await self.ctx.run(
            self.ctx.mail.list_rights, self.account, args.mailbox, args.identifier
        )
        items = [
            wire.mailbox(args.mailbox, utf8=self.utf8_names),
            wire.astring(args.identifier),
            wire.string(required),
        ]
        items += [wire.astring(group) for group in optional]
        self.send(b"* LISTRIGHTS " + b" ".join(items) + b"\r\n")
        return "LISTRIGHTS completed"

    async def cmd_myrights(self, command: Command) -> str:
        name = command.args.mailbox
        rights = await self.ctx.run(self.ctx.mail.my_rights, self.account, name)
        self.send(
            b"* MYRIGHTS "
            + wire.mailbox(name, utf8=self.utf8_names)
            + b" "
            + wire.astring(rights)
            + b"\r\n"
        )
        return "MYRIGHTS completed"

    # -- selected --------------------------------------------------------------------------

    async def cmd_check(self, command: Command) -> str:
        return "CHECK completed"

    async def cmd_close(self, command: Command) -> Reply | str:
        sel = self.sel
        gone: list[int] = []
        if not sel.examine and sel.uids:
            gone = await self.ctx.run(
                self.ctx.mail.expunge, sel.opened, list(sel.uids), quiet=True
            )
            if gone:
                self._publish(sel.key)
        self._deselect()
        if self.condstore:
            modseq = await condstore.closing_modseq(self, sel, bool(gone))
            return Reply("CLOSE completed", f"HIGHESTMODSEQ {modseq}")
        return "CLOSE completed"

    async def cmd_unselect(self, command: Command) -> str:
        self._deselect()
        return "UNSELECT completed"

    async def cmd_expunge(self, command: Command) -> Reply | str:
        sel = self.sel
        self._writable("EXPUNGE")
        args: wire.Expunge = command.args
        if args.seqset is not None:
            uids = [u for _, u in self.pairs(args.seqset, True)]
        else:
            uids = list(sel.uids)
        gone = await self._run_polled(self.ctx.mail.expunge, sel.opened, uids)
        if gone:
            self.report_expunged(gone)
            self._publish(sel.key)
        what = f"{'UID ' if command.uid else ''}EXPUNGE completed"
        if self.condstore:  # the client's new HIGHESTMODSEQ, after everything reported
            await self.sync(allow_expunge=True)
            if self.selected is sel:
                return Reply(what, f"HIGHESTMODSEQ {reported(sel.modseq)}")
        return what

    async def cmd_fetch(self, command: Command) -> Reply | str:
        sel = self.sel
        args: wire.Fetch = command.args
        pairs = self.pairs(args.seqset, command.uid)
        atts = args.atts
        if args.vanished and not self.qresync:
            raise bad("VANISHED needs ENABLE QRESYNC first (RFC 7162 §3.2.6)")
        if args.changedsince is not None or any(a.name == "MODSEQ" for a in atts):
            condstore.turn_on(self)  # RFC 7162 §3.1
        if args.changedsince is not None:  # §3.1.4.1: only what changed, with MODSEQ
            if not any(a.name == "MODSEQ" for a in atts):
                atts = (*atts, wire.FetchAtt("MODSEQ"))
            if args.vanished:
                gone = await self.ctx.run(
                    self.ctx.mail.vanished_since, sel.opened, args.changedsince, args.seqset,
                    max(sel.uidnext - 1, 1),
                )  # fmt: skip
                self.send(wire.vanished_line(gone, earlier=True))
            pairs = await self.ctx.run(
                self.ctx.mail.changed_pairs, sel.opened, pairs, args.changedsince
            )
        plan = fetching.plan(atts)
        can_seen = plan.seen and not sel.examine and sel.opened.can("s")
        recent = sel.recent_test()
        missing = 0
        start = 0
        if metadata_only(atts):
            lines, missing, keywords = await self._run_polled(
                fetch_metadata, self.ctx, sel.opened, pairs, atts, command.uid,
                recent if sel.recent else None,
            )  # fmt: skip
            condstore.announce_keywords(self, keywords)
            self.send_all(lines)
            start = len(pairs)
        while start < len(pairs):
            batch = pairs[start : start + FETCH_BATCH_MESSAGES]
            run = self._run_polled if start + len(batch) == len(pairs) else self.ctx.run
            try:
                result = await run(
                    fetch_batch,
                    self.ctx,
                    sel.opened,
                    batch,
                    atts,
                    plan,
                    command.uid,
                    can_seen,
                    recent,
                    leaf_only=self.rev2,  # RFC 9051 §6.4.5: BINARY of leaf parts only
                    with_modseq=self.condstore,
                )
            except fetching.FetchError as exc:
                raise ImapError(exc.text, exc.code) from None
            except NoSuchMailbox:
                raise ImapError("The selected mailbox was deleted", "NONEXISTENT") from None
            self._own_change(result.own)
            if result.own is not None:
                self._publish(sel.key)
            missing += result.missing
            condstore.announce_keywords(self, result.keywords)
            for chunk in result.chunks:
                self.send(chunk)
            await self.flush()
            start += result.done
        what = f"{'UID ' if command.uid else ''}FETCH"
        if missing and not command.uid:
            raise ImapError(
                f"Some of the requested messages no longer exist ({missing})", "EXPUNGEISSUED"
            )
        return f"{what} completed"

    async def cmd_store(self, command: Command) -> Reply | str:
        sel = self.sel
        args: wire.Store = command.args
        self._writable("STORE")
        if args.unchangedsince is not None:
            condstore.turn_on(self)  # RFC 7162 §3.1
        pairs = self.pairs(args.seqset, command.uid)
        flags = self.ctx.mail.check_flags(sel.opened, args.flags, args.mode)
        what = f"{'UID ' if command.uid else ''}STORE completed"
        if not pairs:
            return what
        updates, own = await self._run_polled(
            self.ctx.mail.store_flags, sel.opened, [u for _, u in pairs], flags, args.mode,
            args.unchangedsince,
        )  # fmt: skip
        self._own_change(own)
        condstore.announce_keywords(self, (*flags, *(f for _, _, now in updates for f in now)))
        recent = sel.recent_test()
        seqs = {uid: seq for seq, uid in pairs}
        with_modseq = self.condstore
        lines = []
        for uid, modseq, now in updates:
            seq = seqs.get(uid)
            if seq is None or (args.silent and (not with_modseq or modseq != own)):
                continue  # .SILENT: under CONDSTORE still UID and MODSEQ (§3.1.3)
            shown = (*now, RECENT) if recent(uid) else now
            if with_modseq:
                lines.append(condstore.flags_line(seq, uid, shown, modseq, silent=args.silent))
            elif command.uid:
                line = b"* %d FETCH (FLAGS %s UID %d)\r\n" % (seq, wire.flag_list(shown), uid)
                lines.append(line)
            else:
                lines.append(b"* %d FETCH (FLAGS %s)\r\n" % (seq, wire.flag_list(shown)))
        self.send_all(lines)
        if own is not None:
            self._publish(sel.key)
        if updates.modified:  # RFC 7162 §3.1.3: what failed UNCHANGEDSINCE
            numbers = updates.modified if command.uid else [seqs[u] for u in updates.modified]
            return Reply(what, f"MODIFIED {wire.compact_set(numbers)}")
        return what

    async def cmd_copy(self, command: Command) -> Reply | str:
        sel = self.sel
        args: wire.Copy = command.args
        move = command.name == "MOVE"
        if move:
            self._writable("MOVE")
        pairs = self.pairs(args.seqset, command.uid)
        uids = [u for _, u in pairs]
        result = await self.ctx.run(
            self.ctx.mail.copy, self.account, sel.opened, uids, args.mailbox, move=move
        )
        prefix = "UID " if command.uid else ""
        if not result.pairs:
            if uids and not command.uid:
                raise ImapError("The messages no longer exist", "EXPUNGEISSUED")
            return f"{prefix}{command.name} completed (no messages)"
        sources = wire.compact_set(s for s, _ in result.pairs)
        code = (
            f"COPYUID {result.uidvalidity} {sources} {wire.compact_set(d for _, d in result.pairs)}"
        )
        self._publish(result.target)
        if not move:
            return Reply(f"{prefix}COPY completed", code)
        self.send(wire.untagged(f"OK [{code}] Moved"))
        self.report_expunged([s for s, _ in result.pairs])
        self._publish(sel.key)
        return f"{prefix}MOVE completed"

    async def cmd_search(self, command: Command) -> str:
        """SEARCH, with RETURN (ESEARCH, RFC 4731; SAVE, RFC 5182) and as
        IMAP4rev2 answers it (RFC 9051 §6.4.4): see ``searching.py``."""
        sel = self.sel
        args: wire.Search = command.args
        returns = args.returns
        if returns is None and self.rev2:
            returns = ("ALL",)  # RFC 9051 §6.4.4: no RETURN means ALL, as ESEARCH
        save = returns is not None and "SAVE" in returns
        searching.check_key(args.key, self.rev2)
        with_modseq = condstore.uses_modseq(args.key)
        if with_modseq:
            condstore.turn_on(self)  # RFC 7162 §3.1
        try:
            found = await self.ctx.run(
                self.ctx.mail.search, sel.opened, sel.uids, args.key, tuple(sel.recent),
                command.uid, saved=sel.saved, now=time.time(),
            )  # fmt: skip
        except Exception:
            if save:
                sel.saved = frozenset()  # RFC 5182 §2.1: a SEARCH that fails (NO) empties $
            raise
        highest = None
        if with_modseq and found:  # (MODSEQ n): the highest of what is returned (§3.1.5)
            returned = found
            if returns is not None and not {"ALL", "COUNT"} & set(returns):
                returned = sorted({found[0], found[-1]})  # MIN and/or MAX only
            uids = returned if command.uid else [sel.uids[n - 1] for n in returned]
            highest = await self.ctx.run(self.ctx.mail.highest_modseq, sel.opened, uids)
        if returns is None:
            line = wire.search_line(found)
            if highest is not None:
                line = line[:-2] + b" (MODSEQ %d)\r\n" % highest
            self.send(line)
        else:
            if save:
                uids = found if command.uid else [sel.uids[n - 1] for n in found]
                sel.saved = searching.saved_result(uids, returns)
            if set(returns) != {"SAVE"}:  # SAVE alone: no ESEARCH (RFC 5182 §2.1)
                items = searching.esearch_items(found, returns)
                if highest is not None:
                    items.append(("MODSEQ", highest))  # RFC 7162 §3.1.5
                self.send(wire.esearch_line(command.tag, command.uid, items))
        return f"{'UID ' if command.uid else ''}SEARCH completed"

    async def cmd_sort(self, command: Command) -> str:
        """SORT and THREAD (RFC 5256): the service orders, ``wire`` writes."""
        sel = self.sel
        args: wire.Sort | wire.Thread = command.args
        searching.check_key(args.key, self.rev2)
        view = (sel.opened, sel.uids, args.key)
        extra = {"saved": sel.saved, "now": time.time()}
        recent = tuple(sel.recent)
        if isinstance(args, wire.Sort):
            order = await self.ctx.run(
                self.ctx.mail.sort, *view, args.criteria, recent, command.uid, **extra
            )
            self.send(wire.sort_line(order))
        else:
            forest = await self.ctx.run(
                self.ctx.mail.thread, *view, args.algorithm, recent, command.uid, **extra
            )
            self.send(wire.thread_line(forest))
        return f"{'UID ' if command.uid else ''}{command.name} completed"


def _check_password(services: Services, login: str, password: str) -> str | None:
    try:
        return auth.check_password(services, login, password)
    except UnicodeError:  # a password that is not text cannot match
        return None


_HOLD_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})
"""No EXPUNGE after these (RFC 3501 §7.4.1; SORT and THREAD answer message numbers too)."""
_NO_SYNC = frozenset({"LOGOUT", "IDLE", "SELECT", "EXAMINE"})
"""Commands after which the session does not look for changes (IDLE reports
them as they come; SELECT has just read everything)."""
_ANY = frozenset(State) - {State.LOGOUT}
_NOAUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_AUTH_ONLY = frozenset({State.AUTHENTICATED})
_SELECTED = frozenset({State.SELECTED})

COMMANDS: dict[str, tuple[frozenset[State], Handler]] = {
    "CAPABILITY": (_ANY, Session.cmd_capability),
    "NOOP": (_ANY, Session.cmd_noop),
    "LOGOUT": (_ANY, Session.cmd_logout),
    "ID": (_ANY, Session.cmd_id),
    "STARTTLS": (_NOAUTH, Session.cmd_starttls),
    "LOGIN": (_NOAUTH, Session.cmd_login),
    "AUTHENTICATE": (_NOAUTH, Session.cmd_authenticate),
    "ENABLE": (_AUTH_ONLY, Session.cmd_enable),
    "NAMESPACE": (_AUTH, Session.cmd_namespace),
    "SELECT": (_AUTH, Session.cmd_select),
    "EXAMINE": (_AUTH, Session.cmd_select),
    "CREATE": (_AUTH, Session.cmd_create),
    "DELETE": (_AUTH, Session.cmd_delete),
    "RENAME": (_AUTH, Session.cmd_rename),
    "SUBSCRIBE": (_AUTH, Session.cmd_subscribe),
    "UNSUBSCRIBE": (_AUTH, Session.cmd_unsubscribe),
    "LIST": (_AUTH, Session.cmd_list),
    "LSUB": (_AUTH, Session.cmd_list),
    "STATUS": (_AUTH, Session.cmd_status),
    "APPEND": (_AUTH, Session.cmd_append),
    "IDLE": (_AUTH, Session.cmd_idle),
    "GETACL": (_AUTH, Session.cmd_getacl),
    "SETACL": (_AUTH, Session.cmd_setacl),
    "DELETEACL": (_AUTH, Session.cmd_deleteacl),
    "LISTRIGHTS": (_AUTH, Session.cmd_listrights),
    "MYRIGHTS": (_AUTH, Session.cmd_myrights),
    "GETQUOTAROOT": (_AUTH, quota.cmd_getquotaroot),
    "GETQUOTA": (_AUTH, quota.cmd_getquota),
    "SETQUOTA": (_AUTH, quota.cmd_setquota),
    "CHECK": (_SELECTED, Session.cmd_check),
    "CLOSE": (_SELECTED, Session.cmd_close),
    "UNSELECT": (_SELECTED, Session.cmd_unselect),
    "EXPUNGE": (_SELECTED, Session.cmd_expunge),
    "FETCH": (_SELECTED, Session.cmd_fetch),
    "STORE": (_SELECTED, Session.cmd_store),
    "COPY": (_SELECTED, Session.cmd_copy),
    "MOVE": (_SELECTED, Session.cmd_copy),
    "SEARCH": (_SELECTED, Session.cmd_search),
    "SORT": (_SELECTED, Session.cmd_sort),
    "THREAD": (_SELECTED, Session.cmd_sort),
}
"""Each command and the states it is valid in (RFC 3501 §6 and the extensions)."""
