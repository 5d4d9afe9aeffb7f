"""SEARCH evaluation (RFC 3501 §6.4.4), pure.

A parsed program (:class:`~waypost.services.mailaccess.criteria.SearchKey`) is
compiled once per command by :func:`compile_search` into a predicate over
:class:`SearchMessage`, a small protocol-neutral view the service builds
from its metadata rows (``MailAccess.search``, for any protocol). Compiling
resolves ``*`` in sequence sets and folds the search strings once, instead of once per message.

Cost matters in a 10,000-message mailbox: flags, UIDs, sequence numbers,
sizes and internal dates are metadata; headers need the message header;
BODY and TEXT need the whole message. :func:`cost` tells the service what a
program needs, and AND / OR evaluate their cheaper side first, so
``UNSEEN BODY x`` never opens a message that is already seen. The ready
:class:`LazyMessage` loads the bytes (and parses) only when a key asks.

Matching is a case-insensitive substring test on decoded text: RFC 2047
encoded words and body charsets are decoded, quoted-printable and base64
undone, and both sides Unicode case-folded (RFC 3501 leaves the folding of
non-ASCII to the implementation; casefold is the thorough one).

Address keys (FROM, TO, CC, BCC) match the needle against the decoded header
as written *and* against its addresses with RFC 5322 comments and folding
white space taken out (``name <local@domain>`` or ``<local@domain>`` per address, as
``mime.parse_addresses`` reads them): ``FROM user-from@domain.org`` finds
``<user-from (comment)@ (comment) domain.org>``. Dovecot matches both forms
the same way; the raw form keeps a search for a comment's text working.

WITHIN (RFC 5032 §3): ``YOUNGER n`` is an internal date at most ``n``
seconds before the search's ``now`` (``SearchContext.now``, taken once per
command by the caller: this module reads no clock), ``OLDER n`` the rest, so
the two are exact complements.

Dates: BEFORE/ON/SINCE compare the internal date's day in UTC (the
server's zone); SENTBEFORE/SENTON/SENTSINCE the day written in the Date
header, in its own zone (time and zone are ignored, RFC 3501). A message
without a readable Date header matches no SENT* key.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

from waypost import mime
from waypost.services.mailaccess.criteria import SearchKey, SequenceSet

META, HEADER, BODY = 0, 1, 2
"""Costs: metadata only, the message header, the whole message."""


class SearchMessage(Protocol):
    """What a search reads of one message. ``flags`` include ``\\Recent``
    when the message is recent in the client's view."""

    seq: int
    uid: int
    flags: Collection[str]
    internal_date: float | datetime
    size: int
    modseq: int

    def header(self, name: str) -> list[str]:
        """Decoded values of every field called ``name`` (none: ``[]``)."""
        ...

    def header_text(self) -> str:
        """The whole header, decoded (for TEXT)."""
        ...

    def body_text(self) -> str:
        """The decoded body text (for BODY and TEXT)."""
        ...


@dataclass(frozen=True, slots=True)
class SearchContext:
    """The mailbox the search runs in: ``messages`` (``*`` of sequence
    sets), ``max_uid`` (``*`` of UID sets, 0 when empty) and the UIDs of a
    saved result ``$`` (RFC 5182) if the client's view keeps one."""

    messages: int
    max_uid: int
    saved: frozenset[int] = field(default_factory=frozenset)
    now: float = 0.0


Predicate = Callable[[SearchMessage], bool]


class LazyMessage:
    """A :class:`SearchMessage` that loads the message bytes on first need
    (``load``) and uses the cached parse if there is one (``parsed`` or a
    loader for it), else parses the bytes."""

    modseq = 0  # set by whoever knows it (SEARCH MODSEQ)

    def __init__(
        self,
        seq: int,
        uid: int,
        flags: Collection[str],
        internal_date: float | datetime,
        size: int,
        load: Callable[[], bytes],
        parsed: mime.ParsedMessage | Callable[[], mime.ParsedMessage] | None = None,
    ) -> None:
        self.seq = seq
        self.uid = uid
        self.flags = flags
        self.internal_date = internal_date
        self.size = size
        self._load = load
        self._parsed = parsed
        self._raw: bytes | None = None
        self._headers: dict[str, list[str]] = {}
        self._header_text: str | None = None
        self._body_text: str | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._load()
        return self._raw

    def parsed(self) -> mime.ParsedMessage:
        if callable(self._parsed):
            self._parsed = self._parsed()
        if self._parsed is None:
            self._parsed = mime.parse(self.raw)
        return self._parsed

    def _body_start(self) -> int:
        if isinstance(self._parsed, mime.ParsedMessage):
            return self._parsed.root.body_start
        return mime.header_end(self.raw)

    def header(self, name: str) -> list[str]:
        key = name.lower()
        if key not in self._headers:
            data = self.raw
            fields = mime.find_fields(data, 0, self._body_start(), [key])
            self._headers[key] = [mime.decode_header(mime.field_value(data, f)) for f in fields]
        return self._headers[key]

    def header_text(self) -> str:
        if self._header_text is None:
            self._header_text = mime.decode_header(self.raw[: self._body_start()])
        return self._header_text

    def body_text(self) -> str:
        if self._body_text is None:
            self._body_text = "\n".join(mime.iter_text(self.raw, self.parsed().root))
        return self._body_text


def cost(key: SearchKey) -> int:
    """What evaluating ``key`` needs: META, HEADER or BODY."""
    if key.op in ("BODY", "TEXT"):
        return BODY
    if key.op in _HEADER_KEYS or key.op in _SENT_KEYS:
        return HEADER
    if key.op in ("AND", "OR", "NOT"):
        return max((cost(k) for k in key.args), default=META)
    return META


def uses(key: SearchKey, ops: Collection[str]) -> bool:
    """Whether any node of the program is one of ``ops``."""
    if key.op in ops:
        return True
    return any(isinstance(k, SearchKey) and uses(k, ops) for k in key.args)


def matches(key: SearchKey, msg: SearchMessage, ctx: SearchContext) -> bool:
    return compile_search(key, ctx)(msg)


def search(
    key: SearchKey, messages: Iterable[SearchMessage], ctx: SearchContext
) -> list[SearchMessage]:
    """The messages that match, in the order given."""
    test = compile_search(key, ctx)
    return [m for m in messages if test(m)]


# --------------------------------------------------------------------------

_HEADER_KEYS = {
    "BCC": "bcc",
    "CC": "cc",
    "FROM": "from",
    "SUBJECT": "subject",
    "TO": "to",
    "HEADER": "",
}
_SENT_KEYS = frozenset({"SENTBEFORE", "SENTON", "SENTSINCE"})
_FLAG_KEYS = {
    "ANSWERED": ("\\answered", True),
    "UNANSWERED": ("\\answered", False),
    "DELETED": ("\\deleted", True),
    "UNDELETED": ("\\deleted", False),
    "DRAFT": ("\\draft", True),
    "UNDRAFT": ("\\draft", False),
    "FLAGGED": ("\\flagged", True),
    "UNFLAGGED": ("\\flagged", False),
    "SEEN": ("\\seen", True),
    "UNSEEN": ("\\seen", False),
    "RECENT": ("\\recent", True),
    "OLD": ("\\recent", False),
}


def _has(msg: SearchMessage, flag: str) -> bool:
    return any(f.lower() == flag for f in msg.flags)


def _fold(text: str) -> str:
    return text.casefold()


def timestamp(value: float | datetime) -> float:
    """Seconds since the epoch of an internal date (a naive one is UTC)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return value


def mailboxes(value: str | None) -> list[tuple[str | None, str, str]]:
    """(display name, mailbox, ``mailbox@host``) of each address of a header
    value, comments and folding white space gone, group markers skipped."""
    out = []
    for name, _, local, host in mime.parse_addresses(value) or ():
        if local is not None and host is not None:
            out.append((name, local, f"{local}@{host}" if host else local))
    return out


def address_forms(value: str) -> str:
    """The addresses of a header value without comments and folding white
    space: ``name <local@domain>``, comma-separated (see the module doc)."""
    return ", ".join(
        f"{name} <{spec}>" if name else f"<{spec}>" for name, _, spec in mailboxes(value)
    )


_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})


def _header_test(name: str, needle: str) -> Predicate:
    if name not in _ADDRESS_FIELDS:
        return lambda m: any(needle in _fold(v) for v in m.header(name))

    def test(m: SearchMessage) -> bool:
        values = m.header(name)
        if any(needle in _fold(v) for v in values):
            return True
        return any(needle in _fold(address_forms(v)) for v in values)

    return test


def internal_day(value: float | datetime) -> date:
    """The day of an internal date in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.date()
        return value.astimezone(UTC).date()
    return datetime.fromtimestamp(value, UTC).date()


def sent_day(msg: SearchMessage) -> date | None:
    """The day written in the Date header (its own zone), if readable."""
    for value in msg.header("date")[:1]:
        try:
            parts = email.utils.parsedate_tz(value)
            if parts is None:
                return None
            return date(parts[0], parts[1], parts[2])
        except (ValueError, TypeError, OverflowError, IndexError):
            return None
    return None


def _compare(op: str, day: date | None, ref: date) -> bool:
    if day is None:
        return False
    if op.endswith("BEFORE"):
        return day < ref
    if op.endswith("ON"):
        return day == ref
    return day >= ref  # SINCE


def _seq_test(seqset: SequenceSet, largest: int, saved: frozenset[int], uid: bool) -> Predicate:
    if seqset.saved:
        return lambda m: m.uid in saved
    contains = seqset.matcher(largest)
    if uid:
        return lambda m: contains(m.uid)
    return lambda m: contains(m.seq)


def compile_search(key: SearchKey, ctx: SearchContext) -> Predicate:
    """A predicate for ``key`` in the mailbox ``ctx`` describes."""
    op = key.op
    if op == "ALL":
        return lambda m: True
    if op in _FLAG_KEYS:
        flag, want = _FLAG_KEYS[op]
        return lambda m: _has(m, flag) == want
    if op == "NEW":
        return lambda m: _has(m, "\\recent") and not _has(m, "\\seen")
    if op in ("KEYWORD", "UNKEYWORD"):
        kw, want = key.args[0].lower(), op == "KEYWORD"
        return lambda m: _has(m, kw) == want
    if op == "LARGER":
        n = key.args[0]
        return lambda m: m.size > n
    if op == "SMALLER":
        n = key.args[0]
        return lambda m: m.size < n
    if op == "MODSEQ":  # RFC 7162 §3.1.5: at least this MODSEQ
        n = key.args[0]
        return lambda m: m.modseq >= n
    if op == "SEQ":
        return _seq_test(key.args[0], ctx.messages, ctx.saved, uid=False)
    if op == "UID":
        return _seq_test(key.args[0], ctx.max_uid, ctx.saved, uid=True)
    if op in ("BEFORE", "ON", "SINCE"):
        ref = key.args[0]
        return lambda m: _compare(op, internal_day(m.internal_date), ref)
    if op in _SENT_KEYS:
        ref = key.args[0]
        return lambda m: _compare(op, sent_day(m), ref)
    if op in _HEADER_KEYS:
        if op == "HEADER":
            name, needle = key.args[0].lower(), _fold(key.args[1])
        else:
            name, needle = _HEADER_KEYS[op], _fold(key.args[0])
        return _header_test(name, needle)
    if op in ("OLDER", "YOUNGER"):
        limit, older = ctx.now - key.args[0], op == "OLDER"
        return lambda m: (timestamp(m.internal_date) < limit) == older
    if op == "BODY":
        needle = _fold(key.args[0])
        return lambda m: needle in _fold(m.body_text())
    if op == "TEXT":
        needle = _fold(key.args[0])
        return lambda m: needle in _fold(m.header_text()) or needle in _fold(m.body_text())
    if op == "NOT":
        inner = compile_search(key.args[0], ctx)
        return lambda m: not inner(m)
    if op == "OR":
        a, b = sorted(key.args, key=cost)
        first, second = compile_search(a, ctx), compile_search(b, ctx)
        return lambda m: first(m) or second(m)
    if op == "AND":
        tests = [compile_search(k, ctx) for k in sorted(key.args, key=cost)]
        return lambda m: all(t(m) for t in tests)
    raise ValueError(f"unknown search key {op}")
