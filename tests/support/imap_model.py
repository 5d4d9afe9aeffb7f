"""A model-based checker of IMAP sessions under concurrency, and its client.

:class:`Client` is a small asyncio IMAP client that hands *every* response
(untagged ones included, literals inlined) to a :class:`SessionModel`, which
keeps the session's view of its selected mailbox (message slots with UID and
flags, the keywords the server announced, the pending command) and checks the
order rules of RFC 3501 §7 / RFC 9051 §7 after each response. A
:class:`World` shared by all sessions knows what is certain across sessions:
the bytes of each message (by UIDVALIDITY and UID), which UIDs are expunged,
which mailbox incarnation (UIDVALIDITY) or none each look at a name found,
the RENAMEs to each name, and the highest UID known to exist. An
incarnation seen at a name and later found gone from it can come back only
through a RENAME to that name: unless one could have run in between, a
command sent after that must not be served from it (§2.3.1.1). A UID a
COPY/MOVE/APPEND hands out must be above every UID of its UIDVALIDITY known
(or known expunged) *before the command was sent*: another session may meet
the new message, and expunge it, before this one reads the tagged OK.

A violation carries the session's last exchanges; one about a new UID also
names the session and command that made the older UID known (or saw it
expunged) and shows those sessions' exchanges interleaved from then on, and
the mailbox-level events (:attr:`World.log`, :attr:`World.history`).

Time is a counter of events in this process (a command sent, a response
received); every cross-session rule compares a command's *send* event with
the *receipt* of another command's completion, so only causally certain
orderings are judged and a rule never depends on timing. Where the RFC
allows several behaviours (a FETCH of a message expunged elsewhere may
answer its data or ``NO``; a replaced mailbox may be reported with ``BYE`` or
a ``NO``) every one of them is accepted.

UIDVALIDITY values are treated as naming one mailbox incarnation
server-wide (Waypost hands them out from one increasing counter, see
``storage/sqlite/mail_store.py``), so a mailbox renamed keeps its identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXPUNGE_FORBIDDEN = frozenset({"FETCH", "STORE", "SEARCH"})
"""RFC 3501 §7.4.1 (RFC 9051 §7.5.1): no EXPUNGE while these (or their UID forms) answer."""
REPLACED_OK = frozenset({"SELECT", "EXAMINE", "UNSELECT", "CLOSE", "LOGOUT", "DELETE", "RENAME"})
"""Commands that may complete OK in a session whose mailbox was replaced:
they leave the mailbox (or do not use it)."""
NAME_OPS = frozenset({"CREATE", "DELETE", "RENAME"})
UNTAGGED = frozenset({
    "EXISTS", "EXPUNGE", "FETCH", "RECENT", "FLAGS", "SEARCH", "LIST", "LSUB", "STATUS",
    "CAPABILITY", "ENABLED", "ID", "NAMESPACE", "ACL", "MYRIGHTS", "LISTRIGHTS", "ESEARCH",
    "VANISHED", "SORT", "THREAD", "QUOTA", "QUOTAROOT",
})  # fmt: skip
"""The untagged responses a client may meet (RFC 3501 §7 and the extensions)."""
ABSENT = frozenset({"NONEXISTENT", "TRYCREATE"})
"""Codes that say the command's mailbox is not there (RFC 5530)."""
LOOKS = frozenset({"SELECT", "EXAMINE", "STATUS", "APPEND", "DELETE", "RENAME"})
"""Commands whose NO with an :data:`ABSENT` code is about their first mailbox argument."""
INF = float("inf")


class Violation(AssertionError):
    """A response the protocol does not allow."""


# -- parsing responses ----------------------------------------------------------------


@dataclass
class Response:
    """One server response: ``kind`` is ``tagged``, ``untagged`` or ``cont``."""

    kind: str
    line: str
    tag: str = ""
    status: str = ""  # OK NO BAD BYE PREAUTH (tagged or untagged)
    code: str = ""  # the response code's name, e.g. UIDVALIDITY
    code_args: list[Any] = field(default_factory=list)
    text: str = ""
    number: int | None = None  # * n EXISTS / EXPUNGE / FETCH / RECENT
    name: str = ""  # EXISTS, FETCH, FLAGS, SEARCH, LIST, STATUS ...
    data: list[Any] = field(default_factory=list)


class Literal(bytes):
    """A literal string of a response (kept apart from atoms)."""


_ATOM_END = set(" ()")


def tokens(text: str, literals: list[bytes]) -> list[Any]:
    """Parenthesised lists as Python lists, quoted strings and literals as
    :class:`Literal`, everything else as ``str`` atoms (``BODY[...]`` whole)."""
    stack: list[list[Any]] = [[]]
    i = 0
    while i < len(text):
        c = text[i]
        if c == " ":
            i += 1
        elif c == "(":
            stack.append([])
            i += 1
        elif c == ")":
            if len(stack) == 1:
                raise Violation(f"unbalanced ')' in {text!r}")
            done = stack.pop()
            stack[-1].append(done)
            i += 1
        elif c == '"':
            out = []
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                out.append(text[i])
                i += 1
            i += 1
            stack[-1].append(Literal("".join(out).encode("latin-1")))
        elif c == "\x00":
            end = text.index("\x00", i + 1)
            stack[-1].append(Literal(literals[int(text[i + 1 : end])]))
            i = end + 1
        else:
            start = i
            depth = 0
            while i < len(text) and (depth or text[i] not in _ATOM_END):
                if text[i] == "[":
                    depth += 1
                elif text[i] == "]":
                    depth -= 1
                i += 1
            stack[-1].append(text[start:i])
    if len(stack) != 1:
        raise Violation(f"unbalanced '(' in {text!r}")
    return stack[0]


_CODE = re.compile(r"^\[([^\]]*(?:\[[^\]]*\][^\]]*)*)\]\s?(.*)$", re.S)


def _status_text(resp: Response, rest: str, literals: list[bytes]) -> None:
    m = _CODE.match(rest)
    if m:
        parts = tokens(m.group(1), literals)
        resp.code = str(parts[0]).upper() if parts else ""
        resp.code_args = parts[1:]
        resp.text = m.group(2)
    else:
        resp.text = rest


def parse_response(text: str, literals: list[bytes] | None = None) -> Response:
    """One response line (literals replaced by ``\\x00n\\x00`` markers)."""
    literals = literals or []
    if text.startswith("+"):
        return Response("cont", text, text=text[2:])
    tag, _, rest = text.partition(" ")
    if tag != "*":
        status, _, rest = rest.partition(" ")
        resp = Response("tagged", text, tag=tag, status=status.upper())
        _status_text(resp, rest, literals)
        return resp
    first, _, rest = rest.partition(" ")
    resp = Response("untagged", text)
    if first.isdigit():
        resp.number = int(first)
        name, _, rest = rest.partition(" ")
        resp.name = name.upper()
        resp.data = tokens(rest, literals)
        return resp
    word = first.upper()
    if word in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        resp.status = word
        _status_text(resp, rest, literals)
        return resp
    resp.name = word
    resp.data = tokens(rest, literals)
    return resp


def uid_set(text: str) -> list[int]:
    """The numbers of a sequence set without ``*`` (APPENDUID, COPYUID)."""
    out: list[int] = []
    for part in str(text).split(","):
        low, _, high = part.partition(":")
        a, b = int(low), int(high or low)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


def fetch_items(data: list[Any]) -> dict[str, Any]:
    """``* n FETCH (NAME value ...)`` as a dict (names upper case; BODY[] kept)."""
    items = data[0] if data and isinstance(data[0], list) else []
    return {str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the shared, certain knowledge ------------------------------------------------------


MailboxKey = tuple[str, str]
"""(owner, mailbox name), INBOX upper case: the same mailbox whoever names it."""


@dataclass
class Observation:
    """What a command saw of a mailbox name: incarnation ``v`` (None: no
    mailbox there), at some instant between ``sent`` and ``done``."""

    sent: int
    done: int
    v: int | None


@dataclass
class RenameInto:
    """A RENAME to a name (the only way an incarnation can come back to it)."""

    sent: int
    done: float = INF


class World:
    """What every session's checks rely on (see the module doc)."""

    def __init__(self) -> None:
        self.clock = 0
        self.bodies: dict[tuple[int, int], str] = {}
        self.sizes: dict[tuple[int, int], int] = {}
        self.expunged: dict[tuple[int, int], int] = {}  # -> when it was known gone
        self.highest: dict[int, tuple[list[int], list[int]]] = {}  # V -> (whens, max UIDs)
        self.known_by: dict[tuple[int, int], str] = {}
        self.gone_by: dict[tuple[int, int], str] = {}
        """Who first made a UID known to exist, or expunged: for reports."""
        self.log: deque[tuple[int, str, str]] = deque(maxlen=50_000)
        """Every session's exchanges, interleaved: (event, session, line), for reports."""
        self.first_seen: dict[tuple[MailboxKey, int], int] = {}  # -> done of the first look
        self.last_seen: dict[MailboxKey, dict[int | None, Observation]] = {}
        self.renames_into: dict[MailboxKey, list[RenameInto]] = {}
        self.violations: list[str] = []
        self.history: list[str] = []
        """Mailbox-level events (name operations, incarnations seen), for reports."""
        self.stats: Counter[str] = Counter()
        """How often each checked situation arose (a run that never met one proved nothing)."""

    def note(self, text: str) -> None:
        self.history.append(f"{self.clock}: {text}")

    def excerpt(self, since: int, labels: set[str], limit: int = 120) -> str:
        """The exchanges of the sessions ``labels`` from event ``since`` on,
        interleaved as this process saw them (the last ``limit``)."""
        found = [
            f"{t} [{who}] {line}" for t, who, line in self.log if t >= since and who in labels
        ][-limit:]
        return "\n      ".join(found)

    def story(self, needle: str, limit: int = 40) -> str:
        """The mailbox-level events mentioning ``needle``, the last ``limit``."""
        found = [h for h in self.history if needle in h][-limit:]
        return "\n      ".join(found)

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    # -- messages -------------------------------------------------------------------

    def body(self, v: int, uid: int, h: str, where: str) -> str | None:
        old = self.bodies.setdefault((v, uid), h)
        if old != h:
            return f"{where}: the bytes of UIDVALIDITY {v} UID {uid} changed"
        return None

    def size(self, v: int, uid: int, size: int, where: str) -> str | None:
        old = self.sizes.setdefault((v, uid), size)
        if old != size:
            return f"{where}: UIDVALIDITY {v} UID {uid} was {old} bytes, now {size}"
        return None

    def new_uid(self, v: int, uid: int, sent: int) -> str | None:
        """A UID handed out by a command sent at ``sent`` is above every UID
        known before (RFC 3501 §2.3.1.1: strictly ascending, never reused).

        Only what was known *before the send* counts: another session may
        meet the new message (EXISTS, FETCH) and even expunge it between the
        commit and this session's reading of the tagged OK that names it."""
        floor = self.floor(v, sent)
        expunged = self.expunged.get((v, uid))
        if uid > floor and (expunged is None or expunged > sent):
            return None
        text = (
            f"new UID {uid} of UIDVALIDITY {v} is not above UID {floor} known before "
            f"(the command sent at event {sent})"
        )
        if floor:
            text += f"; UID {floor} {self.known_by.get((v, floor), '?')}"
        if expunged is not None:
            text += f"; UID {uid} {self.gone_by.get((v, uid), '?')}"
        return text

    def gone(self, v: int, uid: int, when: int, who: str = "") -> None:
        if (v, uid) not in self.expunged:
            self.expunged[(v, uid)] = when
            self.gone_by[(v, uid)] = f"known expunged at event {when} by {who or '?'}"

    def exists(self, v: int, uid: int, when: int, who: str = "") -> None:
        whens, highs = self.highest.setdefault(v, ([], []))
        if not highs or uid > highs[-1]:
            whens.append(when)
            highs.append(uid)
            self.known_by.setdefault((v, uid), f"known at event {when} by {who or '?'}")

    def floor(self, v: int, before: int) -> int:
        """The highest UID of ``v`` known to exist before event ``before``."""
        whens, highs = self.highest.get(v, ([], []))
        i = bisect_left(whens, before)
        return highs[i - 1] if i else 0

    # -- mailbox incarnations -------------------------------------------------------------

    def observe(self, key: MailboxKey, v: int | None, sent: int, done: int) -> None:
        if v is not None:
            self.first_seen.setdefault((key, v), done)
        latest = self.last_seen.setdefault(key, {})
        if v not in latest or latest[v].sent < sent:
            latest[v] = Observation(sent, done, v)
        what = "no mailbox" if v is None else f"UIDVALIDITY {v}"
        self.note(f"{key[0]}/{key[1]} is {what} (command sent at {sent})")

    def rename_into(self, key: MailboxKey, sent: int) -> RenameInto:
        op = RenameInto(sent)
        self.renames_into.setdefault(key, []).append(op)
        return op

    def evidence(self, key: MailboxKey, v: int, before: int) -> Observation | None:
        """The latest look, completed before event ``before``, that found
        another incarnation (or none) at ``key`` after ``v`` had been seen
        there: from then on ``v`` is not at ``key`` unless renamed back."""
        first = self.first_seen.get((key, v))
        if first is None:
            return None
        found = [
            o
            for o in self.last_seen.get(key, {}).values()
            if o.v != v and first < o.sent and o.done < before
        ]
        return max(found, key=lambda o: o.sent) if found else None

    def replaced(self, key: MailboxKey, seen: Observation | None, now: int) -> bool:
        """``seen`` (from :meth:`evidence`) still holds at event ``now``: no
        RENAME to ``key`` could have run between that look and now."""
        if seen is None:
            return False
        return not any(
            op.done > seen.sent and op.sent < now for op in self.renames_into.get(key, ())
        )


# -- one session ---------------------------------------------------------------------------


@dataclass
class Slot:
    """A message of the view: its UID and flags once known; ``origin`` is the
    event before which the server chose to show it (a SELECT's or the
    announcing command's send)."""

    origin: int
    uid: int | None = None
    flags: frozenset[str] | None = None


@dataclass
class View:
    """The selected mailbox as the session was told."""

    key: MailboxKey
    examine: bool
    since: int
    v: int | None = None
    uidnext: int = 0
    slots: list[Slot] = field(default_factory=list)
    keywords: set[str] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)

    def uids(self) -> list[int | None]:
        return [s.uid for s in self.slots]


@dataclass
class Command:
    tag: str
    name: str  # without UID
    uid: bool
    sent: int
    text: str
    key: MailboxKey | None = None  # the mailbox argument
    key2: MailboxKey | None = None  # RENAME's new name
    body: bytes | None = None  # APPEND's message
    into: RenameInto | None = None
    evidence: Observation | None = None  # that the selected mailbox was replaced
    store: tuple[str, frozenset[str]] | None = None  # STORE's mode and flags (not .SILENT)
    targets: list[tuple[int, float]] = field(default_factory=list)  # its set, * unbounded
    answered: set[int] = field(default_factory=set)  # messages its FETCH reported


_STORE = re.compile(r"STORE (\S+) ([+-]?)FLAGS \((.*)\)$", re.I)


def ranges(text: str) -> list[tuple[int, float]]:
    """A sequence set as ranges; ``*`` is unbounded (RFC 3501 §9 seq-range)."""
    out: list[tuple[int, float]] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        a = INF if low == "*" else int(low)
        b = a if not high else INF if high == "*" else int(high)
        lo, hi = min(a, b), max(a, b)
        out.append((int(lo) if lo != INF else 2**32, hi))
    return out


class SessionModel:
    """One session's view, updated from its responses and checked on each."""

    def __init__(self, world: World, label: str, resolve: Callable[[str], MailboxKey]) -> None:
        self.world = world
        self.label = label
        self.resolve = resolve
        self.view: View | None = None
        self.command: Command | None = None
        self.transcript: deque[str] = deque(maxlen=30)
        self.closed = False
        self.rev2 = False
        """ENABLE IMAP4rev2 answered: RFC 9051's rules (no RECENT; ESEARCH for SEARCH)."""

    # -- reporting -----------------------------------------------------------------

    def fail(self, text: str, since: int | None = None) -> None:
        """Record a violation with this session's last exchanges; with
        ``since``, also every session's exchanges named in ``text`` (``[label]``)
        from that event on, interleaved, and the mailbox-level events."""
        tail = "\n      ".join(self.transcript)
        report = f"[{self.label}] {text}\n    last exchanges:\n      {tail}"
        if since is not None:
            labels = {self.label, *re.findall(r"\[([^\]\s]+)\]", text)}
            first = min([since, *(int(t) for t in re.findall(r"at event (\d+)", text))])
            report += (
                f"\n    sessions {sorted(labels)} from event {first}:\n      "
                + self.world.excerpt(first, labels)
                + "\n    mailbox events:\n      "
                + self.world.story("/")
            )
        self.world.violations.append(report)

    def _who(self, what: str, cmd: Command | None = None) -> str:
        """This session and its command, for the world's reports."""
        cmd = cmd or self.command
        doing = f"{cmd.tag} {cmd.text} (sent at {cmd.sent})" if cmd else "no command"
        return f"[{self.label}] {doing}: {what[:80]}"

    # -- commands --------------------------------------------------------------------

    def begin(self, tag: str, text: str, body: bytes | None = None) -> Command:
        """The session sends command ``text`` (without the tag)."""
        world = self.world
        words = text.split(" ")
        uid = words[0].upper() == "UID"
        name = words[1 if uid else 0].upper()
        cmd = Command(tag, name, uid, world.tick(), text, body=body)
        if name in ("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "STATUS", "APPEND"):
            cmd.key = self.resolve(_unquote(words[1]))
        if name in ("COPY", "MOVE"):
            cmd.key = self.resolve(_unquote(words[-1]))
        if name == "RENAME":
            cmd.key2 = self.resolve(_unquote(words[2]))
            cmd.into = world.rename_into(cmd.key2, cmd.sent)
        store = _STORE.search(text) if name == "STORE" else None
        if store:
            cmd.store = (store.group(2), frozenset(store.group(3).lower().split()))
            cmd.targets = ranges(store.group(1))
        view = self.view
        if name in ("SELECT", "EXAMINE"):
            assert cmd.key is not None
            self.view = View(cmd.key, name == "EXAMINE", cmd.sent)
        elif view is not None and view.v is not None:
            cmd.evidence = world.evidence(view.key, view.v, cmd.sent)
        self.command = cmd
        self.transcript.append(f"C: {tag} {text}")
        world.log.append((cmd.sent, self.label, f"C: {tag} {text}"))
        return cmd

    def receive(self, resp: Response) -> None:
        now = self.world.tick()
        self.transcript.append(f"S: {resp.line[:300]}")
        self.world.log.append((now, self.label, f"S: {resp.line[:300]}"))
        if resp.kind == "tagged":
            self._tagged(resp)
        elif resp.kind == "untagged":
            self.world.stats[f"* {resp.name or resp.status}"] += 1
            self._untagged(resp)

    @property
    def logging_out(self) -> bool:
        return self.command is not None and self.command.name == "LOGOUT"

    def ended(self) -> None:
        """The connection is gone: whatever command was running has run or never will."""
        self.closed = True
        cmd, self.command = self.command, None
        if cmd is not None and cmd.into is not None:
            cmd.into.done = self.world.clock
        if cmd is not None and self._stale_for(cmd) is not None:
            self.world.stats["command on a replaced mailbox"] += 1

    # -- untagged ------------------------------------------------------------------

    def _untagged(self, resp: Response) -> None:
        cmd, view = self.command, self.view
        if resp.status == "BYE":
            self._bye(resp)
            return
        if resp.status in ("NO", "BAD"):
            self.fail(f"unexpected untagged {resp.status}: {resp.line}")
            return
        if resp.status == "OK":
            self._untagged_ok(resp)
            return
        if resp.name not in UNTAGGED:
            self.fail(f"not an IMAP response: {resp.line}")
            return
        if resp.name in ("EXISTS", "EXPUNGE", "FETCH", "RECENT", "FLAGS", "SEARCH", "ESEARCH"):
            if view is None:
                self.fail(f"{resp.name} without a selected mailbox: {resp.line}")
                return
            stale = self._stale_for(cmd)
            empty = resp.name == "SEARCH" and not resp.data and not view.slots  # tells nothing
            if stale is not None and resp.name != "FLAGS" and not empty:
                self.fail(
                    f"served a replaced mailbox (UIDVALIDITY {view.v} of {view.key} replaced "
                    f"at event {stale}, command sent at {cmd.sent if cmd else '?'}): {resp.line}"
                )
        handler = getattr(self, f"_on_{resp.name.lower()}", None)
        if handler is not None:
            handler(resp)

    def _bye(self, resp: Response) -> None:
        self.closed = True
        cmd = self.command
        if cmd is not None and cmd.name == "LOGOUT":
            return
        text = resp.text.lower()
        if self.view is not None and ("deleted" in text or "replaced" in text):
            self.world.stats["BYE for a replaced mailbox"] += 1
            return  # RFC 3501 §2.3.1.1: a session on a replaced mailbox is ended
        self.fail(f"unexpected BYE: {resp.line}")

    def _untagged_ok(self, resp: Response) -> None:
        view, cmd = self.view, self.command
        code = resp.code
        if code == "CLOSED":
            if cmd is None or cmd.name not in ("DELETE", "RENAME", "SELECT", "EXAMINE"):
                self.fail(f"[CLOSED] outside DELETE/RENAME/SELECT: {resp.line}")
            if cmd is not None and cmd.name in ("DELETE", "RENAME"):
                self.view = None
            return
        if code == "COPYUID" and cmd is not None and cmd.name == "MOVE":
            self._copyuid(resp.code_args, cmd)
            return
        if view is None or cmd is None:
            return
        if code == "UIDVALIDITY" and cmd.name in ("SELECT", "EXAMINE"):
            view.v = int(resp.code_args[0])
            seen = self.world.evidence(view.key, view.v, cmd.sent)
            if self.world.replaced(view.key, seen, self.world.clock):
                assert seen is not None
                self.fail(
                    f"{cmd.name} of {view.key} answered UIDVALIDITY {view.v}, an incarnation "
                    f"gone from that name at event {seen.done} (before the command, at "
                    f"{cmd.sent}): UIDVALIDITY reused or an old index served"
                )
        elif code == "UIDNEXT" and cmd.name in ("SELECT", "EXAMINE"):
            view.uidnext = int(resp.code_args[0])
            if view.v is not None:
                floor = self.world.floor(view.v, cmd.sent)
                if view.uidnext <= floor:
                    self.fail(
                        f"UIDNEXT {view.uidnext} went back: UID {floor} of UIDVALIDITY "
                        f"{view.v} was known to exist before {cmd.name}"
                    )
                self.world.exists(  # never lower
                    view.v, view.uidnext - 1, self.world.clock, self._who(f"UIDNEXT {view.uidnext}")
                )

    def _on_flags(self, resp: Response) -> None:
        assert self.view is not None
        flags = resp.data[0] if resp.data and isinstance(resp.data[0], list) else []
        self.view.keywords |= {str(f) for f in flags if not str(f).startswith("\\")}

    def _on_enabled(self, resp: Response) -> None:
        if any(str(x).upper() == "IMAP4REV2" for x in resp.data):
            self.rev2 = True

    def _on_recent(self, resp: Response) -> None:
        assert self.view is not None
        if self.rev2:
            self.fail(f"RECENT after ENABLE IMAP4rev2 (RFC 9051 has none): {resp.line}")
        if resp.number is not None and resp.number > len(self.view.slots):
            self.fail(f"RECENT {resp.number} is more than EXISTS {len(self.view.slots)}")

    def _on_exists(self, resp: Response) -> None:
        view, cmd = self.view, self.command
        assert view is not None and resp.number is not None
        n = resp.number
        if n < len(view.slots):
            self.fail(f"EXISTS went down from {len(view.slots)} to {n} without EXPUNGE")
            return
        origin = cmd.sent if cmd is not None else self.world.clock
        view.slots.extend(Slot(origin) for _ in range(n - len(view.slots)))

    def _on_expunge(self, resp: Response) -> None:
        view, cmd = self.view, self.command
        assert view is not None and resp.number is not None
        if cmd is None:
            self.fail(f"EXPUNGE with no command in progress (RFC 3501 §7.4.1): {resp.line}")
        elif cmd.name in EXPUNGE_FORBIDDEN:
            self.fail(
                f"EXPUNGE during {'UID ' if cmd.uid else ''}{cmd.name} (RFC 3501 §7.4.1): "
                f"{resp.line}"
            )
        n = resp.number
        if not 1 <= n <= len(view.slots):
            self.fail(f"EXPUNGE {n} outside the view of {len(view.slots)} messages")
            return
        slot = view.slots.pop(n - 1)
        if slot.uid is not None and view.v is not None:
            view.gone.add(slot.uid)
            self.world.gone(view.v, slot.uid, self.world.clock, self._who(resp.line))

    def _on_search(self, resp: Response) -> None:
        view, cmd = self.view, self.command
        assert view is not None
        numbers = [int(x) for x in resp.data if str(x).isdigit()]
        if cmd is None or cmd.name != "SEARCH":
            self.fail(f"SEARCH response outside SEARCH: {resp.line}")
            return
        if not cmd.uid:
            bad = [n for n in numbers if not 1 <= n <= len(view.slots)]
            if bad:
                self.fail(f"SEARCH returned message numbers {bad} outside 1:{len(view.slots)}")
            return
        back = [u for u in numbers if u in view.gone]
        if back:
            self.fail(f"UID SEARCH returned UIDs {back} this session was told are expunged")
        known = view.uids()
        if None not in known:
            extra = [u for u in numbers if u not in known]
            if extra:
                self.fail(f"UID SEARCH returned UIDs {extra} not in the view {known}")

    def _on_fetch(self, resp: Response) -> None:
        view, cmd = self.view, self.command
        assert view is not None and resp.number is not None
        n = resp.number
        if not 1 <= n <= len(view.slots):
            self.fail(f"FETCH {n} outside the view of {len(view.slots)} messages")
            return
        slot = view.slots[n - 1]
        items = fetch_items(resp.data)
        if "UID" in items:
            self._slot_uid(n, int(items["UID"]))
        if "FLAGS" in items:
            flags = frozenset(str(f) for f in items["FLAGS"]) - {"\\Recent"}
            if cmd is not None and cmd.store is not None and n not in cmd.answered:
                key = slot.uid if cmd.uid else n
                if key is not None and any(lo <= key <= hi for lo, hi in cmd.targets):
                    cmd.answered.add(n)
                    self._stored(cmd.store, flags, resp)
            unknown = sorted(f for f in flags if not f.startswith("\\") and f not in view.keywords)
            if unknown:
                text = (
                    f"FETCH FLAGS lists keywords {unknown} no FLAGS response announced "
                    f"(RFC 3501 §7.2.6): {resp.line}"
                )
                self.fail(text)  # RFC 3501 §7.2.6, RFC 9051 §7.3.5
            slot.flags = flags
        elif cmd is not None and cmd.name == "FETCH" and "BODY[]" in items:
            slot.flags = None  # BODY[] may have set \Seen without saying so yet
        for name in ("BODY[]", "RFC822.SIZE"):
            value = items.get(name)
            if value is None or value == "NIL":
                continue
            if slot.uid is None or view.v is None:
                self.fail(f"{name} of a message whose UID is unknown: {resp.line}")
                continue
            if name == "BODY[]":
                data = bytes(value)
                errors = [self.world.body(view.v, slot.uid, digest(data), resp.line[:80])]
                errors.append(self.world.size(view.v, slot.uid, len(data), "BODY[]"))
            else:
                errors = [self.world.size(view.v, slot.uid, int(value), "RFC822.SIZE")]
            for error in errors:
                if error:
                    self.fail(error)

    def _stored(
        self, store: tuple[str, frozenset[str]], flags: frozenset[str], resp: Response
    ) -> None:
        """The first FETCH of a message in a STORE's answer shows the result of
        that STORE (RFC 3501 §6.4.6; the sessions here hold every right)."""
        mode, wanted = store
        now = {f.lower() for f in flags}
        if mode == "+" and not wanted <= now:
            self.fail(f"STORE +FLAGS {sorted(wanted)} answered without them: {resp.line}")
        elif mode == "-" and wanted & now:
            self.fail(f"STORE -FLAGS {sorted(wanted)} answered with some: {resp.line}")
        elif mode == "" and wanted != now:
            self.fail(f"STORE FLAGS {sorted(wanted)} answered otherwise: {resp.line}")

    def _slot_uid(self, n: int, uid: int) -> None:
        view = self.view
        assert view is not None
        slot = view.slots[n - 1]
        if slot.uid is not None:
            if slot.uid != uid:
                self.fail(f"message {n} was UID {slot.uid}, now UID {uid}")
            return
        slots = view.slots
        before = next((s.uid for s in reversed(slots[: n - 1]) if s.uid is not None), 0)
        after = next((s.uid for s in slots[n:] if s.uid is not None), None)
        if uid <= before or (after is not None and uid >= after):
            self.fail(
                f"UIDs not strictly increasing: message {n} has UID {uid} between "
                f"{before} and {after}"
            )
        if uid in view.gone:
            self.fail(f"UID {uid} came back after this session was told it was expunged")
        if view.v is not None:
            when = self.world.expunged.get((view.v, uid))
            if when is not None and when < slot.origin:
                self.fail(
                    f"UID {uid} of UIDVALIDITY {view.v} resurrected: expunged at event "
                    f"{when}, shown as a message from event {slot.origin} on"
                )
            if view.uidnext and slot.origin == view.since and uid >= view.uidnext:
                self.fail(f"UID {uid} at SELECT is not below its UIDNEXT {view.uidnext}")
            self.world.exists(view.v, uid, self.world.clock, self._who(f"message {n}"))
        slot.uid = uid

    # -- tagged ----------------------------------------------------------------------

    def _tagged(self, resp: Response) -> None:
        cmd = self.command
        world = self.world
        if cmd is None or resp.tag != cmd.tag:
            self.fail(f"tagged response {resp.line!r} for no command in progress")
            return
        self.command = None
        if cmd.into is not None:
            cmd.into.done = world.clock
        if cmd.name in NAME_OPS:
            world.note(f"[{self.label}] {cmd.text} (sent at {cmd.sent}): {resp.line}")
        if cmd.key is not None and cmd.name in LOOKS and resp.code in ABSENT:
            world.observe(cmd.key, None, cmd.sent, world.clock)
        world.stats[f"{'UID ' if cmd.uid else ''}{cmd.name} {resp.status}"] += 1
        if resp.status == "BAD":
            self.fail(f"BAD for a well-formed command {cmd.text!r}: {resp.line}")
        if resp.status == "NO" and resp.code in ("SERVERBUG", "UNAVAILABLE"):
            self.fail(f"server failure: {resp.line}")
        if cmd.name == "APPEND" and resp.status == "NO" and resp.code == "NONEXISTENT":
            self.fail(f"APPEND to a missing mailbox without [TRYCREATE] (§6.3.11): {resp.line}")
        stale = self._stale_for(cmd)
        if stale is not None:
            world.stats["command on a replaced mailbox"] += 1
        if resp.status == "OK" and stale is not None and cmd.name not in REPLACED_OK:
            self.fail(
                f"{cmd.name} completed OK on a mailbox replaced at event {stale} "
                f"(command sent at {cmd.sent}): {resp.line}"
            )
        if resp.status != "OK":
            if cmd.name in ("SELECT", "EXAMINE"):
                self.view = None
            return
        handler = getattr(self, f"_done_{cmd.name.lower()}", None)
        if handler is not None:
            handler(cmd, resp)

    def _stale_for(self, cmd: Command | None) -> int | None:
        """When the view's mailbox was replaced, if ``cmd`` was sent after
        that (it must then not be served from the old mailbox)."""
        view = self.view
        if view is None or cmd is None or cmd.evidence is None:
            return None
        if not self.world.replaced(view.key, cmd.evidence, self.world.clock):
            return None
        return cmd.evidence.done

    def _done_select(self, cmd: Command, resp: Response) -> None:
        view = self.view
        if view is None or view.v is None:
            self.fail(f"{cmd.name} completed without UIDVALIDITY")
            return
        self.world.observe(view.key, view.v, cmd.sent, self.world.clock)

    _done_examine = _done_select

    def _done_append(self, cmd: Command, resp: Response) -> None:
        if resp.code != "APPENDUID" or cmd.key is None or cmd.body is None:
            return
        v, uids = int(resp.code_args[0]), uid_set(resp.code_args[1])
        if self.world.replaced(
            cmd.key, self.world.evidence(cmd.key, v, cmd.sent), self.world.clock
        ):
            self.fail(f"APPEND into {cmd.key} answered UIDVALIDITY {v}, gone from that name")
        self.world.observe(cmd.key, v, cmd.sent, self.world.clock)
        for uid in uids:
            errors = [
                self.world.new_uid(v, uid, cmd.sent),
                self.world.body(v, uid, digest(cmd.body), "APPEND"),
                self.world.size(v, uid, len(cmd.body), "APPEND"),
            ]
            self.world.exists(v, uid, self.world.clock, self._who(resp.line, cmd))
            for error in errors:
                if error:
                    self.fail(f"APPEND: {error} (into {cmd.key})", cmd.sent)

    def _done_copy(self, cmd: Command, resp: Response) -> None:
        if resp.code == "COPYUID":
            self._copyuid(resp.code_args, cmd)

    def _copyuid(self, args: list[Any], cmd: Command) -> None:
        view = self.view
        v = int(args[0])
        sources, targets = uid_set(args[1]), uid_set(args[2])
        if len(sources) != len(targets):
            self.fail(f"COPYUID with {len(sources)} source and {len(targets)} target UIDs")
            return
        if cmd.key is not None:
            seen = self.world.evidence(cmd.key, v, cmd.sent)
            if self.world.replaced(cmd.key, seen, self.world.clock):
                self.fail(
                    f"{cmd.name} into {cmd.key} answered UIDVALIDITY {v}, gone from that name"
                )
            self.world.observe(cmd.key, v, cmd.sent, self.world.clock)
        for src, dst in zip(sources, targets, strict=True):
            error = self.world.new_uid(v, dst, cmd.sent)
            if error:
                self.fail(f"{cmd.name}: {error} (into {cmd.key})", cmd.sent)
            self.world.exists(v, dst, self.world.clock, self._who(f"COPYUID {v} {src} {dst}", cmd))
            if view is not None and view.v is not None:
                h = self.world.bodies.get((view.v, src))
                if h is not None:
                    error = self.world.body(v, dst, h, f"{cmd.name} of UID {src}")
                    if error:
                        self.fail(error + " (a UID handed out twice)")

    def _done_delete(self, cmd: Command, resp: Response) -> None:
        assert cmd.key is not None
        if cmd.key[1] != "INBOX":  # RENAME INBOX leaves an empty INBOX behind
            self.world.observe(cmd.key, None, cmd.sent, self.world.clock)

    _done_rename = _done_delete

    def _on_status(self, resp: Response) -> None:
        cmd = self.command
        if cmd is None or cmd.key is None or len(resp.data) < 2:
            return
        values = resp.data[1]
        got = {str(values[i]).upper(): int(values[i + 1]) for i in range(0, len(values) - 1, 2)}
        v = got.get("UIDVALIDITY")
        if v is None:
            return
        if self.world.replaced(
            cmd.key, self.world.evidence(cmd.key, v, cmd.sent), self.world.clock
        ):
            self.fail(f"STATUS of {cmd.key} answered UIDVALIDITY {v}, gone from that name")
        uidnext = got.get("UIDNEXT")
        floor = self.world.floor(v, cmd.sent)
        if uidnext is not None and uidnext <= floor:
            self.fail(f"STATUS UIDNEXT {uidnext} went back: UID {floor} of {v} existed")
        if uidnext is not None:
            self.world.exists(  # never lower from now on
                v, uidnext - 1, self.world.clock, self._who(f"STATUS UIDNEXT {uidnext}")
            )
        self.world.observe(cmd.key, v, cmd.sent, self.world.clock)

    # -- the end ---------------------------------------------------------------------

    def compare(self, v: int, flags_by_uid: dict[int, frozenset[str]]) -> None:
        """After quiescing: the view must equal a fresh SELECT's UIDs and flags."""
        view = self.view
        assert view is not None
        if v != view.v:
            self.fail(f"view of {view.key} has UIDVALIDITY {view.v}, the mailbox {v}, no BYE")
            return
        uids = view.uids()
        fresh = sorted(flags_by_uid)
        if uids != fresh:
            self.fail(f"view of {view.key} has UIDs {uids}, a fresh SELECT {fresh}")
            return
        for slot in view.slots:
            assert slot.uid is not None
            want = flags_by_uid[slot.uid] - {"\\Recent"}
            if slot.flags is not None and slot.flags != want:
                self.fail(
                    f"view of {view.key}: UID {slot.uid} has flags {sorted(slot.flags)}, "
                    f"a fresh SELECT {sorted(want)}"
                )


def transcript(model: SessionModel, lines: list[str | tuple[str, str]]) -> list[str]:
    """Feed ``("C", "tag command")`` and server lines to a model, as unit
    tests of the checker do; the world's complaints."""
    for line in lines:
        if isinstance(line, tuple):
            tag, _, text = line[1].partition(" ")
            model.begin(tag, text)
        else:
            model.receive(parse_response(line))
    return model.world.violations


def _unquote(word: str) -> str:
    return word[1:-1] if len(word) >= 2 and word[0] == word[-1] == '"' else word


# -- the client --------------------------------------------------------------------------


class ConnectionEnded(Exception):
    """The server closed the connection."""


class Client:
    """An IMAP client on asyncio streams that reads every response and gives
    it to its :class:`SessionModel` (``timeout`` bounds every read)."""

    def __init__(self, model: SessionModel, timeout: float = 60) -> None:
        self.model = model
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tags = 0

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), self.timeout
        )
        greeting = await self.read()
        if greeting.status != "OK":
            raise Violation(f"greeting {greeting.line!r}")

    async def read(self, timeout: float | None = None) -> Response:
        """One response, literals inlined (:class:`ConnectionEnded` at EOF)."""
        assert self.reader is not None
        limit = self.timeout if timeout is None else timeout
        parts: list[str] = []
        literals: list[bytes] = []
        while True:
            try:
                line = await asyncio.wait_for(
                    self.reader.readuntil(b"\r\n"), self.timeout if parts else limit
                )
            except asyncio.IncompleteReadError as exc:
                self.model.ended()
                raise ConnectionEnded(exc.partial.decode("latin-1")) from None
            except ConnectionError as exc:
                self.model.ended()
                raise ConnectionEnded(str(exc)) from None
            text = line[:-2].decode("latin-1")
            m = re.search(r"\{(\d+)\}$", text)
            if not m:
                parts.append(text)
                break
            data = await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), self.timeout)
            parts.append(text[: m.start()] + f"\x00{len(literals)}\x00")
            literals.append(data)
        return parse_response("".join(parts), literals)

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    def next_tag(self) -> str:
        self.tags += 1
        return f"m{self.tags}"

    async def command(self, text: str, body: bytes | None = None) -> Response:
        """Send ``text`` (with ``body`` as a LITERAL+ literal after it) and read
        to the tagged response, each response checked by the model."""
        tag = self.next_tag()
        self.model.begin(tag, text, body)
        data = f"{tag} {text}".encode()
        if body is not None:
            data += b" {%d+}\r\n" % len(body) + body
        await self.send(data + b"\r\n")
        return await self.until(tag)

    async def until(self, tag: str) -> Response:
        while True:
            resp = await self.read()
            self.model.receive(resp)
            if resp.kind == "tagged" and resp.tag == tag:
                return resp
            if resp.status == "BYE" and resp.kind == "untagged":
                if self.model.logging_out:
                    continue  # LOGOUT: BYE, then the tagged OK
                await self._drain_after_bye(tag)
                self.model.ended()
                raise ConnectionEnded(resp.line)

    async def _drain_after_bye(self, tag: str) -> None:
        """After BYE the server may still send the tagged answer; then EOF."""
        try:
            for _ in range(10):
                resp = await self.read(timeout=10)
                self.model.receive(resp)
                if resp.kind == "tagged" and resp.tag == tag:
                    return
        except (ConnectionEnded, TimeoutError):
            return

    async def unsolicited(self, seconds: float) -> None:
        """Read what the server sends with no command in progress, for
        ``seconds`` (it may send anything but EXPUNGE then, RFC 3501 §7.4.1)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                resp = await self.read(timeout=left)
            except TimeoutError:
                return
            self.model.receive(resp)
            if resp.status == "BYE":
                self.model.ended()
                raise ConnectionEnded(resp.line)

    async def idle(self, seconds: float) -> Response:
        """IDLE for ``seconds``, every response checked, then DONE."""
        tag = self.next_tag()
        self.model.begin(tag, "IDLE")
        await self.send(f"{tag} IDLE\r\n".encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        started = False
        while True:
            left = deadline - loop.time()
            if started and left <= 0:
                break
            try:
                resp = await self.read(timeout=max(left, 0.01) if started else None)
            except TimeoutError:
                break
            if resp.kind == "cont":
                started = True
                continue
            self.model.receive(resp)
            if resp.kind == "tagged":
                return resp  # refused
            if resp.status == "BYE":
                self.model.ended()
                raise ConnectionEnded(resp.line)
        await self.send(b"DONE\r\n")
        return await self.until(tag)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 5)
            except (TimeoutError, ConnectionError):
                pass
            self.writer = None
