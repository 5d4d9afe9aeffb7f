"""IMAP wire format, pure: no sockets, no clocks, no storage.

Three layers, each testable on bytes:

* :class:`CommandReader` frames the byte stream into commands. It is fed
  chunks and returns events: a complete :class:`RawCommand` (its lines and
  literals), :class:`Continue` (a synchronizing literal ``{n}`` was
  announced and accepted: the session sends ``+``), or :class:`Rejected`
  (a line or literal over the configured limits: the session sends the
  ready-made response). Memory stays bounded: a line longer than the limit
  is skipped to its end, an over-limit synchronizing literal is refused
  before the client sends it, an over-limit LITERAL+ ``{n+}`` (RFC 7888,
  which the client sends without waiting) is counted and discarded, never
  stored; the session may close the connection instead (``fatal``).
* :func:`parse_command` turns a :class:`RawCommand` into a :class:`Command`
  with typed arguments (sequence sets, FETCH attributes, SEARCH programs,
  STORE modes, ...). Every syntax error is a :class:`ParseError` whose
  :meth:`~ParseError.response` is the ``tag BAD ...`` (or ``* BAD``) line;
  an unsupported SEARCH charset is ``NO [BADCHARSET ...]``.
* Serialisers write strings (quoted when safe, else a literal), envelopes,
  body structures, flag lists and status lines.

Mailbox names are UTF-8 inside Waypost and modified UTF-7 on the wire
(RFC 3501 §5.1.3, spec/mailboxes.md §1): the parser decodes them strictly
(``&Jjo`` unterminated, ``&AGE-`` encoding plain ASCII, 8-bit bytes: all
refused, as a name that does not round-trip would name two mailboxes). A
refused name is still a valid astring: it reaches the session as an
:class:`InvalidName`, which no mailbox can have, and is answered ``NO``
(never ``BAD``). After ``ENABLE UTF8=ACCEPT`` (RFC 6855 §3) or ``ENABLE
IMAP4rev2`` (RFC 9051 §5.1) names are UTF-8 on the wire in both directions
(``parse_command(..., utf8=True)``, the serialisers' ``utf8=True``): quoted
strings carry the 8-bit bytes, ``&`` is an ordinary character, and names
are put in Unicode NFC (Net-Unicode, RFC 5198), as RFC 9051 §5.1 allows.

Leniency, where it costs nothing: several spaces count as one, a trailing
space is ignored, LF without CR ends a line, 8-bit bytes are accepted inside
quoted strings (clients send UTF-8 SEARCH strings that way).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from waypost import mime
from waypost.services.mailaccess.criteria import SearchKey, SequenceSet

CRLF = b"\r\n"

MAX_LINE = 65536
"""Default longest command line in octets (Dovecot's imap_max_line_length)."""

MAX_LITERAL = 50 * 1024 * 1024
"""Default largest literal (the largest APPEND)."""

MAX_NUMBER = 4294967295
"""nz-number / uniqueid / sizes are 32-bit (RFC 3501 §4.2)."""

MAX_DEPTH = 64
"""Deepest nesting of parentheses (SEARCH programs) the parser follows."""

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")


# --------------------------------------------------------------------------
# Errors


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", text).strip()


class ParseError(Exception):
    """A command the server cannot accept. ``tag`` is None when the line
    had no usable tag (the answer is then ``* BAD``). ``code`` is a response
    code without brackets (``"BADCHARSET (US-ASCII UTF-8)"``)."""

    def __init__(
        self, tag: str | None, text: str, *, code: str | None = None, status: str = "BAD"
    ) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text
        self.code = code
        self.status = status

    def response(self) -> bytes:
        return tagged(self.tag or "*", self.status, self.text, self.code)


class SaveFailed(ParseError):
    """A ``SEARCH RETURN (SAVE ...)`` refused with NO (a charset): the saved
    result ``$`` becomes empty (RFC 5182 §2.1)."""


class Utf7Error(ValueError):
    """A mailbox name that is not valid modified UTF-7 (or, in UTF-8 mode,
    not a name any mailbox can have: a control character)."""


class InvalidName(str):
    """A syntactically valid mailbox name that no mailbox can have (invalid
    modified UTF-7, a control character). The parser hands it on instead of
    failing, so the session answers ``NO [NONEXISTENT]`` / ``NO [CANNOT]``
    rather than ``BAD``; the session never passes it to the service. The
    string value is the name as sent, for messages only."""

    reason: str

    def __new__(cls, sent: str, reason: str) -> InvalidName:
        self = super().__new__(cls, sent)
        self.reason = reason
        return self


class Denormalized(str):
    """A UTF-8 mailbox name the client sent in another Unicode normalisation
    form; the value is the NFC form Waypost uses, ``sent`` what came (for the
    LIST ``OLDNAME`` data item, RFC 9051 §6.3.2, §6.3.4)."""

    sent: str

    def __new__(cls, name: str, sent: str) -> Denormalized:
        self = super().__new__(cls, name)
        self.sent = sent
        return self


# --------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 §5.1.3)

_B64_RUN = re.compile(r"&([A-Za-z0-9+,]*)-?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def encode_mailbox(name: str) -> str:
    """UTF-8 mailbox name -> modified UTF-7."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if "\x20" <= ch <= "\x7e":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(name: str | bytes) -> str:
    """Modified UTF-7 -> UTF-8 mailbox name; :class:`Utf7Error` unless the
    input is exactly what :func:`encode_mailbox` would write."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            raise Utf7Error("8-bit characters must be encoded as modified UTF-7") from None
    if not name.isascii():
        raise Utf7Error("8-bit characters must be encoded as modified UTF-7")
    if "&" not in name:
        if _CONTROL.search(name):
            raise Utf7Error("control characters in a mailbox name")
        return name
    out: list[str] = []
    pos = 0
    for m in _B64_RUN.finditer(name):
        out.append(name[pos : m.start()])
        pos = m.end()
        payload = m.group(1)
        if not m.group(0).endswith("-"):
            raise Utf7Error("unterminated modified UTF-7 sequence (missing '-')")
        if not payload:
            out.append("&")
            continue
        if len(payload) % 4 == 1:
            raise Utf7Error("modified UTF-7 sequence of invalid length")
        padded = payload.replace(",", "/") + "=" * (-len(payload) % 4)
        try:
            text = base64.b64decode(padded, validate=True).decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            raise Utf7Error("modified UTF-7 sequence is not valid UTF-16") from None
        if any("\x20" <= ch <= "\x7e" for ch in text):
            raise Utf7Error("modified UTF-7 must not encode printable ASCII")
        out.append(text)
    out.append(name[pos:])
    decoded = "".join(out)
    if encode_mailbox(decoded) != name:
        raise Utf7Error("modified UTF-7 is not in its one valid form")
    if _CONTROL.search(decoded):
        raise Utf7Error("control characters in a mailbox name")
    return decoded


def decode_utf8_mailbox(data: bytes) -> str:
    """A mailbox name sent as UTF-8 (RFC 6855 §3, RFC 9051 §5.1) -> its NFC
    form; :class:`UnicodeDecodeError` for bytes that are not UTF-8 (a syntax
    error), :class:`Utf7Error` for a control character (no such mailbox);
    a :class:`Denormalized` when the NFC form differs from what was sent."""
    sent = data.decode("utf-8")
    name = unicodedata.normalize("NFC", sent)
    if _CONTROL.search(name):
        raise Utf7Error("control characters in a mailbox name")
    return name if name == sent else Denormalized(name, sent)


def mailbox_name(data: bytes, *, utf8: bool = False) -> str:
    """The mailbox a wire name means: a UTF-8 name, or an :class:`InvalidName`
    when the name is well-formed but cannot name a mailbox.
    :class:`UnicodeDecodeError` when ``utf8`` and the bytes are not UTF-8."""
    try:
        return decode_utf8_mailbox(data) if utf8 else decode_mailbox(data)
    except Utf7Error as e:
        return InvalidName(data.decode("utf-8", "replace"), str(e))


# --------------------------------------------------------------------------
# Framing: the command reader


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One command as sent: ``lines[i]`` (without CRLF) ends with a literal
    header for every ``i < len(literals)``, ``literals[i]`` follows it."""

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    @property
    def tag(self) -> str | None:
        return _tag_of(self.lines[0])

    @property
    def size(self) -> int:
        return sum(map(len, self.lines)) + sum(map(len, self.literals))


@dataclass(frozen=True, slots=True)
class Continue:
    """Send ``+ Ready for literal data`` (:func:`continuation`)."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Send :meth:`response`; the command is dropped. ``fatal``: the client
    is sending an over-limit LITERAL+ literal that the reader discards; the
    session may rather close the connection (RFC 7888 §4)."""

    tag: str | None
    text: str
    status: str = "BAD"
    code: str | None = None
    fatal: bool = False

    def response(self) -> bytes:
        return tagged(self.tag or "*", self.status, self.text, self.code)


Event = RawCommand | Continue | Rejected

_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?$")
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")


def _tag_of(line: bytes) -> str | None:
    m = _TAG.match(line)
    if m is None or (m.end() < len(line) and line[m.end()] != 0x20):
        return None
    return m.group().decode()


class CommandReader:
    """Incremental framing of client input into commands (see module doc).

    ``max_line``: longest line in octets (CRLF included); ``max_literal``:
    largest literal; ``max_command``: all lines and literals of one command.
    """

    def __init__(
        self,
        max_line: int = MAX_LINE,
        max_literal: int = MAX_LITERAL,
        max_command: int | None = None,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command if max_command is not None else max_literal + 4 * max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no LF
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._size = 0
        self._tag: str | None = None
        self._literal = bytearray()
        self._literal_left = -1  # >= 0 while reading a literal
        self._skip_line = False  # discarding an over-long line up to its LF
        self._discard = False  # the current command is rejected; count, do not keep

    @property
    def pending(self) -> bool:
        """Part of a command is buffered (useful at connection close)."""
        return bool(self._buf or self._lines or self._literal_left >= 0)

    @property
    def in_literal(self) -> bool:
        return self._literal_left >= 0

    @property
    def buffered(self) -> int:
        """Octets held for the command being read (bounded by the limits)."""
        return (
            len(self._buf)
            + len(self._literal)
            + sum(map(len, self._lines))
            + sum(map(len, self._literals))
        )

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        buf += data
        pos = 0
        while pos < len(buf):
            if self._literal_left >= 0:
                take = min(self._literal_left, len(buf) - pos)
                if not self._discard:
                    self._literal += buf[pos : pos + take]
                pos += take
                self._literal_left -= take
                if self._literal_left:
                    break
                self._literal_left = -1
                if not self._discard:
                    self._literals.append(bytes(self._literal))
                self._literal = bytearray()
                continue
            nl = buf.find(b"\n", max(pos, self._scanned))
            if nl < 0:
                if self._skip_line:
                    pos = len(buf)
                elif len(buf) - pos > self.max_line:
                    self._too_long(bytes(buf[pos : pos + 256]), events)
                    self._skip_line = True
                    pos = len(buf)
                self._scanned = len(buf)
                break
            line_len = nl + 1 - pos
            if self._skip_line:
                self._skip_line = False
                self._reset()
                pos = nl + 1
                continue
            if line_len > self.max_line:
                self._too_long(bytes(buf[pos : pos + 256]), events)
                self._reset()
                pos = nl + 1
                continue
            line = bytes(buf[pos:nl])
            pos = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line, events)
        del buf[:pos]
        self._scanned = max(0, self._scanned - pos)
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not self._lines and not self._discard:
            self._tag = _tag_of(line)
        self._size += len(line) + 2
        m = _LITERAL_AT_END.search(line)
        if m is None:
            if not self._discard:
                self._lines.append(line)
                events.append(RawCommand(tuple(self._lines), tuple(self._literals)))
            self._reset()
            return
        size = int(m.group(2))
        sync = not m.group(3)
        if self._discard:
            if sync:
                self._reset()  # the client waits for "+", which never comes
            else:
                self._literal_left = size
            return
        if size > self.max_literal or self._size + size > self.max_command:
            what = "Literal" if size > self.max_literal else "Command"
            limit = self.max_literal if size > self.max_literal else self.max_command
            text = f"{what} too large ({size} octets, at most {limit})"
            if sync:
                events.append(Rejected(self._tag, text, "NO", "TOOBIG"))
                self._reset()
            else:
                events.append(Rejected(self._tag, text, "NO", "TOOBIG", fatal=True))
                self._reset()
                self._discard = True
                self._literal_left = size
            return
        self._size += size
        self._lines.append(line)
        self._literal_left = size
        if sync:
            events.append(Continue(self._tag, size))

    def _too_long(self, head: bytes, events: list[Event]) -> None:
        if self._discard:
            return  # the command was rejected already
        tag = self._tag if self._lines else _tag_of(head)
        if tag is not None and len(tag) >= self.max_line:
            tag = None  # may not have ended yet when the line is cut off: "* BAD"
        events.append(Rejected(tag, f"Command line too long (at most {self.max_line} octets)"))

    def _reset(self) -> None:
        self._lines = []
        self._literals = []
        self._size = 0
        self._tag = None
        self._discard = False


# --------------------------------------------------------------------------
# Command AST


@dataclass(frozen=True, slots=True)
class Section:
    """``BODY[section]``: part numbers and HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join([*map(str, self.part), *([self.text] if self.text else [])])
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One FETCH item. ``name`` is ENVELOPE, FLAGS, INTERNALDATE, RFC822,
    RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID,
    BINARY or BINARY.SIZE; BODY/BINARY carry a ``section`` when written with
    brackets (``BODY`` alone is the non-extensible structure)."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


ALL_KEY = SearchKey("ALL")


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str
    initial: str | None = None  # SASL-IR; "=" is an empty response


@dataclass(frozen=True, slots=True)
class MailboxArgs:
    """DELETE, SUBSCRIBE, UNSUBSCRIBE, GETACL, MYRIGHTS."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Qresync:
    """The QRESYNC parameter of SELECT/EXAMINE (RFC 7162 §3.2.5): what the
    client knew; ``seq_match`` is (known sequence set, their UIDs)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT / EXAMINE; ``params`` are the names of the parameters given
    (``CONDSTORE``, ``QRESYNC``: RFC 7162), ``qresync`` the latter's value."""

    mailbox: str
    params: tuple[str, ...] = ()
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Sent)) (RFC 6154)


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ListArgs:
    """LIST / LSUB. ``select`` and ``returns`` are the LIST-EXTENDED options
    (upper-case); ``status`` the items of ``RETURN (STATUS (...))``."""

    reference: str
    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CatPart:
    """One CATENATE part (RFC 4469 §5): ``TEXT`` data or a ``URL``;
    ``binary``: the text came as literal8 (or ``UTF8 (~{n})``)."""

    text: bytes | None = None
    url: str | None = None
    binary: bool = False
    utf8: bool = False  # ``UTF8 (~{n})`` (RFC 6855 §4)


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND: the literal, or CATENATE ``parts``."""

    flags: tuple[str, ...]
    date: datetime | None
    message: bytes
    binary: bool = False  # sent as literal8 ~{n}
    utf8: bool = False  # sent as UTF8 (~{n}) (RFC 6855 §4)
    parts: tuple[CatPart, ...] = ()  # CATENATE (RFC 4469)


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND: the first message inline (the RFC 3501 form), ``more`` the
    further ones of MULTIAPPEND (RFC 3502); :attr:`messages` lists all."""

    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes
    binary: bool = False  # sent as literal8 ~{n}
    utf8: bool = False
    parts: tuple[CatPart, ...] = ()
    more: tuple[AppendMessage, ...] = ()

    @property
    def messages(self) -> tuple[AppendMessage, ...]:
        first = AppendMessage(
            self.flags, self.date, self.message, self.binary, self.utf8, self.parts
        )
        return (first, *self.more)


@dataclass(frozen=True, slots=True)
class Fetch:
    """``changedsince``/``vanished``: the FETCH modifiers of RFC 7162 §3.1.4.1, §3.2.6."""

    seqset: SequenceSet
    atts: tuple[FetchAtt, ...]
    changedsince: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """``mode``: ``set`` (FLAGS), ``add`` (+FLAGS), ``remove`` (-FLAGS)."""

    seqset: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY and MOVE."""

    seqset: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Search:
    """``returns``: the RFC 4731 result options (``MIN MAX ALL COUNT SAVE``),
    None for a plain SEARCH; ``RETURN ()`` is read as ``("ALL",)`` (§3.1)."""

    charset: str | None
    key: SearchKey
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Sort:
    """SORT (RFC 5256 §3): ``criteria`` as ``(key, reverse)`` pairs."""

    criteria: tuple[tuple[str, bool], ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Thread:
    """THREAD (RFC 5256 §3): the algorithm (upper case)."""

    algorithm: str
    charset: str
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Expunge:
    seqset: SequenceSet | None = None  # UID EXPUNGE (UIDPLUS)


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id:
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class SetAcl:
    """``mode``: ``set``, ``add`` (``+rights``) or ``remove`` (``-rights``)."""

    mailbox: str
    identifier: str
    mode: str
    rights: str


@dataclass(frozen=True, slots=True)
class AclIdentifier:
    """DELETEACL and LISTRIGHTS."""

    mailbox: str
    identifier: str


@dataclass(frozen=True, slots=True)
class QuotaRoot:
    """GETQUOTA (RFC 9208 §4.1.1): a quota root name."""

    root: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA (RFC 9208 §4.1.3): the root and ``(resource, limit)`` pairs."""

    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Command:
    """``name`` upper-case without the UID prefix; ``uid`` tells it was there."""

    tag: str
    name: str
    args: Any = None
    uid: bool = False


# --------------------------------------------------------------------------
# Tokenizer

_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_ASTRING = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")
_LIST_CHARS = re.compile(rb"[\x21\x23-\x27\x2a-\x5b\x5d-\x7a\x7c-\x7e]+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_ANY_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')
_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_QUOTED_DATE_TIME = re.compile(rb'"[^"]*"')
_INITIAL_RESPONSE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_NUMBER = re.compile(rb"\d+")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_FLAG = re.compile(rb"\\?[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+|\\\*")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_SPEC = re.compile(rb"[A-Za-z0-9.]*")
_PARTIAL = re.compile(rb"<(\d{1,10})\.(\d{1,10})>")
_DATE = re.compile(rb'("?)(\d{1,2})-([A-Za-z]{3})-(\d{4})\1')
_DATE_TIME = re.compile(
    rb'"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)
_MONTH_NAMES = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_MONTHS = {m.upper(): i for i, m in enumerate(_MONTH_NAMES, 1)}
_SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


class _Cursor:
    """Reads tokens across the lines and literals of one command."""

    def __init__(self, raw: RawCommand) -> None:
        self.lines = raw.lines
        self.literals = raw.literals
        self.li = 0
        self.line = raw.lines[0]
        self.pos = 0
        self.tag: str | None = None
        self.utf8 = False  # mailbox names are UTF-8 (UTF8=ACCEPT, IMAP4rev2)
        self.utf8_accept = False  # UTF8=ACCEPT enabled: a CHARSET label conflicts

    def error(self, text: str) -> ParseError:
        return ParseError(self.tag, text)

    def peek(self) -> int:
        """The next byte, or -1 at the end of a line."""
        return self.line[self.pos] if self.pos < len(self.line) else -1

    def eol(self) -> bool:
        return self.pos >= len(self.line) and self.li >= len(self.literals)

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.error("Expected a space" if not self.eol() else "Missing arguments")
        while self.peek() == 0x20:
            self.pos += 1
        if self.eol():
            raise self.error("Missing arguments")

    def more(self) -> bool:
        """Skip spaces; True if something follows."""
        while self.peek() == 0x20:
            self.pos += 1
        return not self.eol()

    def next_item(self) -> bool:
        """Between the items of a space-separated run: True if one follows
        (after its space), False at the end, an error without the space."""
        if self.eol():
            return False
        if self.peek() != 0x20:
            raise self.error("Expected a space")
        return self.more()

    def end(self) -> None:
        if self.more():
            raise self.error("Unexpected extra arguments")

    def expect(self, char: bytes) -> None:
        if self.peek() != char[0]:
            raise self.error(f"Expected {char.decode()!r}")
        self.pos += 1

    def match(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        m = pattern.match(self.line, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def atom(self, what: str = "an atom") -> str:
        m = self.match(_ATOM)
        if m is None:
            raise self.error(f"Expected {what}")
        return m.group().decode("ascii")

    def keyword(self) -> str:
        return self.atom("a keyword").upper()

    def literal(self) -> tuple[bytes, bool] | None:
        """A literal at the cursor: (data, is literal8), else None."""
        m = _LITERAL.match(self.line, self.pos)
        if m is None:
            if self.at_string():
                raise self.error("Invalid literal (expected {number} at the end of the line)")
            return None
        if self.li >= len(self.literals):  # parse() of bytes cut short
            raise self.error("Literal data missing")
        data = self.literals[self.li]
        self.li += 1
        self.line = self.lines[self.li]
        self.pos = 0
        return data, bool(m.group(1))

    def at_string(self) -> bool:
        """A quoted string or a literal starts here."""
        c = self.peek()
        return c in (0x22, 0x7B) or (c == 0x7E and self.line[self.pos + 1 : self.pos + 2] == b"{")

    def string(self, what: str = "a string") -> bytes:
        if self.peek() == 0x22:
            m = self.match(_QUOTED)
            if m is None:
                if _ANY_QUOTED.match(self.line, self.pos) is None:
                    raise self.error("Unterminated quoted string")
                raise self.error("Invalid character or escape in quoted string")
            return re.sub(rb"\\(.)", rb"\1", m.group(1))
        lit = self.literal()
        if lit is None:
            raise self.error(f"Expected {what}")
        if lit[1]:
            raise self.error("literal8 is only allowed in APPEND")
        return lit[0]

    def astring(self, what: str = "a string") -> bytes:
        if self.at_string():
            return self.string(what)
        m = self.match(_ASTRING)
        if m is None or self.peek() >= 0x80:
            raise self.error(f"Expected {what} (8-bit text must be quoted or a literal)")
        return m.group()

    def nstring(self) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == b"NIL" and not _ASTRING.match(
            self.line, self.pos + 3
        ):
            self.pos += 3
            return None
        return self.string()

    def number(self, what: str = "a number", *, nonzero: bool = False) -> int:
        m = self.match(_NUMBER)
        if m is None:
            raise self.error(f"Expected {what}")
        n = int(m.group())
        if n > MAX_NUMBER or (nonzero and n == 0):
            raise self.error(f"Invalid {what}: {m.group().decode()}")
        return n

    def is_keyword(self, word: bytes) -> bool:
        """The next atom is ``word`` (case-insensitive); consumed if so."""
        m = _ATOM.match(self.line, self.pos)
        if m is not None and m.group().upper() == word:
            self.pos = m.end()
            return True
        return False


def _utf8(data: bytes, cur: _Cursor, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise cur.error(f"{what} is not valid UTF-8") from None


def _wire_name(cur: _Cursor, data: bytes, what: str) -> str:
    try:
        return mailbox_name(data, utf8=cur.utf8)
    except UnicodeDecodeError:  # UTF8-quoted allows only UTF-8 (RFC 6855 §3)
        raise cur.error(f"Invalid {what}: not UTF-8") from None


def _mailbox(cur: _Cursor) -> str:
    """A mailbox name; an :class:`InvalidName` when it cannot name one."""
    word = cur.line[cur.pos :].split(b" ", 1)[0]
    if not cur.at_string() and max(word, default=0) >= 0x80:
        how = "quoted" if cur.utf8 else "modified UTF-7"
        raise cur.error(f"Invalid mailbox name: 8-bit characters must be {how}")
    return _wire_name(cur, cur.astring("a mailbox name"), "mailbox name")


def _list_mailbox(cur: _Cursor) -> str:
    if cur.at_string():
        data = cur.string("a mailbox pattern")
    else:
        m = cur.match(_LIST_CHARS)
        if m is None or cur.peek() >= 0x80:
            how = "quoted" if cur.utf8 else "modified UTF-7"
            raise cur.error(f"Expected a mailbox pattern (8-bit must be {how})")
        data = m.group()
    return _wire_name(cur, data, "mailbox pattern")


def parse_sequence_set(text: bytes | str, *, allow_saved: bool = True) -> SequenceSet:
    """``1:*,3,5:7`` (``$`` alone for a saved result); ValueError if invalid."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    if data == b"$" and allow_saved:
        return SequenceSet(saved=True)
    ranges: list[tuple[int | None, int | None]] = []
    for item in data.split(b","):
        ends = item.split(b":")
        if len(ends) > 2 or not item:
            raise ValueError(f"Invalid sequence set: {data.decode('ascii', 'replace')}")
        nums: list[int | None] = []
        for e in ends:
            if e == b"*":
                nums.append(None)
            elif e.isdigit() and e[0:1] != b"0" and int(e) <= MAX_NUMBER:
                nums.append(int(e))
            else:
                raise ValueError(f"Invalid sequence set: {data.decode('ascii', 'replace')}")
        ranges.append((nums[0], nums[-1]))
    return SequenceSet(tuple(ranges))


def _seqset(cur: _Cursor) -> SequenceSet:
    m = cur.match(_SEQSET)
    if m is None:
        raise cur.error("Expected a sequence set")
    if cur.peek() not in (-1, 0x20, 0x29):
        raise cur.error("Invalid sequence set")
    try:
        return parse_sequence_set(m.group())
    except ValueError as e:
        raise cur.error(str(e)) from None


def _flag(cur: _Cursor, *, allow_star: bool = False) -> str:
    m = cur.match(_FLAG)
    if m is None:
        raise cur.error("Expected a flag")
    flag = m.group().decode("ascii")
    if flag == "\\*" and not allow_star:
        raise cur.error("\\* is not a flag")
    return _SYSTEM_FLAGS.get(flag.lower(), flag) if flag.startswith("\\") else flag


def _flag_list(cur: _Cursor) -> tuple[str, ...]:
    cur.expect(b"(")
    flags: list[str] = []
    while cur.peek() == 0x20:
        cur.pos += 1
    while cur.peek() != 0x29:
        flags.append(_flag(cur))
        if cur.peek() == 0x20:
            while cur.peek() == 0x20:
                cur.pos += 1
        elif cur.peek() != 0x29:
            raise cur.error("Expected ')' after the flags")
    cur.pos += 1
    return tuple(dict.fromkeys(flags))


def _atom_list(cur: _Cursor, what: str) -> list[str]:
    cur.expect(b"(")
    items: list[str] = []
    while cur.more() and cur.peek() != 0x29:
        items.append(cur.atom(what).upper())
        if cur.peek() not in (0x20, 0x29):
            raise cur.error(f"Expected ')' after the {what}s")
    cur.expect(b")")
    return items


# --------------------------------------------------------------------------
# Commands

STATUS_ITEMS = frozenset({
    "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
    "SIZE",  # RFC 8438
    "DELETED",  # RFC 9051 §6.3.11
    "DELETED-STORAGE",  # RFC 9208 §4.2
    "APPENDLIMIT",  # RFC 7889 §3.2
    "HIGHESTMODSEQ",  # RFC 7162 §3.1.8
})  # fmt: skip
"""The STATUS items the parser accepts; one per line so each extension adds its own."""
LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
LIST_RECURSIVE = frozenset({"SUBSCRIBED", "SPECIAL-USE"})
"""The selection options RECURSIVEMATCH can modify (RFC 5258 §3, RFC 6154 §3)."""
ACL_RIGHTS = frozenset("lrswipkxteacd0123456789")
SPECIAL_USE = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)

_SPECIAL_USE = {u.lower(): u for u in SPECIAL_USE}

_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ATTS = frozenset((
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
    "BODY", "BODYSTRUCTURE", "UID",
    "MODSEQ",
))  # fmt: skip
_SECTION_ATTS = {
    "BODY": ("BODY", False),
    "BODY.PEEK": ("BODY", True),
    "BINARY": ("BINARY", False),
    "BINARY.PEEK": ("BINARY", True),
    "BINARY.SIZE": ("BINARY.SIZE", True),
}
_SECTION_TEXTS = frozenset({"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def _no_args(cur: _Cursor, uid: bool) -> None:
    return None


# [waypost] LOGIN user names may carry ``%`` unquoted (``user%domain``, the
# CGP login form): Python's imaplib and other simple clients send it so.
# Otherwise astring chars, "]" included (RFC 3501 §9; found by the fuzz target).
_LOGIN_USER = re.compile(rb"[\x21\x23-\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")


def _login(cur: _Cursor, uid: bool) -> Login:
    cur.sp()
    m = None if cur.at_string() else cur.match(_LOGIN_USER)
    user = m.group() if m is not None else cur.astring("a user name")
    cur.sp()
    password = cur.astring("a password")
    return Login(
        user.decode("utf-8", "surrogateescape"), password.decode("utf-8", "surrogateescape")
    )


def _authenticate(cur: _Cursor, uid: bool) -> Authenticate:
    cur.sp()
    mechanism = cur.atom("a SASL mechanism").upper()
    initial = None
    if cur.more():
        m = cur.match(_INITIAL_RESPONSE)
        if m is None or not m.group():
            raise cur.error("Invalid initial response")
        initial = m.group().decode()
    return Authenticate(mechanism, initial)


def _mailbox_only(cur: _Cursor, uid: bool) -> MailboxArgs:
    cur.sp()
    return MailboxArgs(_mailbox(cur))


def _select(cur: _Cursor, uid: bool) -> Select:
    cur.sp()
    mailbox = _mailbox(cur)
    params: list[str] = []
    qresync = None
    if cur.more():
        cur.expect(b"(")
        while cur.more() and cur.peek() != 0x29:
            name = cur.keyword()
            if name in params:
                raise cur.error(f"SELECT parameter {name} given twice")
            if name == "QRESYNC":
                cur.sp()
                qresync = _qresync(cur)
            elif name != "CONDSTORE":
                raise cur.error(f"Unknown SELECT parameter {name}")
            params.append(name)
            if cur.peek() not in (0x20, 0x29):
                raise cur.error("Expected ')' after the SELECT parameters")
        cur.expect(b")")
    return Select(mailbox, tuple(params), qresync)


def _create(cur: _Cursor, uid: bool) -> Create:
    cur.sp()
    mailbox = _mailbox(cur)
    uses: list[str] = []
    if cur.more():
        cur.expect(b"(")
        if not cur.is_keyword(b"USE"):
            raise cur.error("Unknown CREATE parameter")
        cur.sp()
        for flag in _flag_list(cur):
            use = _SPECIAL_USE.get(flag.lower())
            if use is None:
                raise ParseError(
                    cur.tag, f"Unknown special use {flag}", code="USEATTR", status="NO"
                )
            uses.append(use)
        cur.expect(b")")
    return Create(mailbox, tuple(uses))


def _rename(cur: _Cursor, uid: bool) -> Rename:
    cur.sp()
    old = _mailbox(cur)
    cur.sp()
    return Rename(old, _mailbox(cur))


def _list(cur: _Cursor, uid: bool, *, lsub: bool = False) -> ListArgs:
    cur.sp()
    select: list[str] = []
    extended = False
    if not lsub and cur.peek() == 0x28:
        extended = True
        select = _atom_list(cur, "LIST selection option")
        for opt in select:
            if opt not in LIST_SELECT:
                raise cur.error(f"Unknown LIST selection option {opt}")
        if "RECURSIVEMATCH" in select and not LIST_RECURSIVE.intersection(select):
            # RFC 5258 §3 Note 3: alone or with only REMOTE it modifies nothing
            raise cur.error("RECURSIVEMATCH needs SUBSCRIBED or SPECIAL-USE")
        cur.sp()
    reference = _mailbox(cur)
    cur.sp()
    patterns: list[str] = []
    if not lsub and cur.peek() == 0x28:
        extended = True
        cur.pos += 1
        while cur.more() and cur.peek() != 0x29:
            patterns.append(_list_mailbox(cur))
        cur.expect(b")")
        if not patterns:
            raise cur.error("Expected a mailbox pattern")
    else:
        patterns.append(_list_mailbox(cur))
    returns: list[str] = []
    status: list[str] = []
    if not lsub and cur.more():
        if not cur.is_keyword(b"RETURN"):
            raise cur.error("Expected RETURN")
        extended = True
        cur.sp()
        cur.expect(b"(")
        while cur.more() and cur.peek() != 0x29:
            opt = cur.keyword()
            if opt not in LIST_RETURN:
                raise cur.error(f"Unknown LIST return option {opt}")
            returns.append(opt)
            if opt == "STATUS":
                cur.sp()
                status = _status_items(cur)
        cur.expect(b")")
    return ListArgs(
        reference, tuple(patterns), frozenset(select), frozenset(returns), tuple(status), extended
    )


def _lsub(cur: _Cursor, uid: bool) -> ListArgs:
    return _list(cur, uid, lsub=True)


# -- CONDSTORE / QRESYNC (RFC 7162) ---------------------------------------------

MAX_MODSEQ = 2**63 - 1
"""mod-sequence-value is a positive 63-bit number (RFC 7162 §7)."""


def _modseq(cur: _Cursor, *, zero: bool) -> int:
    """mod-sequence-value (``zero``: mod-sequence-valzer). CHANGEDSINCE and the
    QRESYNC modseq also take 0 here, as Dovecot does: "everything"."""
    m = cur.match(_NUMBER)
    if m is None:
        raise cur.error("Expected a mod-sequence")
    n = int(m.group())
    if n > MAX_MODSEQ or (n == 0 and not zero):
        raise cur.error(f"Invalid mod-sequence {m.group().decode()}")
    return n


def _qresync(cur: _Cursor) -> Qresync:
    """``(uidvalidity modseq [known-uids [(seq-set uid-set)]])`` (RFC 7162 §3.2.5)."""
    cur.expect(b"(")
    uidvalidity = cur.number("the UIDVALIDITY", nonzero=True)
    cur.sp()
    modseq = _modseq(cur, zero=True)
    known = match = None
    if _another(cur) and cur.peek() != 0x28:
        known = _seqset(cur)
        if known.saved:
            raise cur.error("$ is not a UID set")
        _another(cur)
    if cur.peek() == 0x28:
        cur.pos += 1
        seqs = _seqset(cur)
        cur.sp()
        uids = _seqset(cur)
        cur.expect(b")")
        if seqs.saved or uids.saved or _count(seqs) != _count(uids):
            raise cur.error("The sequence match data must pair as many numbers as UIDs")
        match = (seqs, uids)
    cur.expect(b")")
    return Qresync(uidvalidity, modseq, known, match)


def _another(cur: _Cursor) -> bool:
    """A space and then another item of a parenthesised list (not its end)."""
    if cur.peek() != 0x20:
        return False
    return cur.more() and cur.peek() != 0x29


def _count(seqset: SequenceSet) -> int | None:
    """How many numbers a set without ``*`` names (None with ``*``)."""
    if any(None in r for r in seqset.ranges):
        return None
    return sum(abs(int(high or 0) - int(low or 0)) + 1 for low, high in seqset.ranges)


def _fetch_modifiers(cur: _Cursor, uid: bool) -> tuple[int | None, bool]:
    """``(CHANGEDSINCE n [VANISHED])`` after the FETCH items (RFC 7162 §3.1.4.1,
    §3.2.6): VANISHED only in UID FETCH, and only with CHANGEDSINCE."""
    cur.expect(b"(")
    changedsince: int | None = None
    vanished = False
    while cur.more() and cur.peek() != 0x29:
        word = cur.keyword()
        if word == "CHANGEDSINCE" and changedsince is None:
            cur.sp()
            changedsince = _modseq(cur, zero=True)
        elif word == "VANISHED" and not vanished:
            if not uid:
                raise cur.error("VANISHED is only allowed in UID FETCH")
            vanished = True
        else:
            raise cur.error(f"Invalid FETCH modifier {word}")
        if cur.peek() not in (0x20, 0x29):
            raise cur.error("Expected ')' after the FETCH modifiers")
    cur.expect(b")")
    if changedsince is None:
        raise cur.error("Expected CHANGEDSINCE in the FETCH modifiers")
    return changedsince, vanished


def _status_items(cur: _Cursor) -> list[str]:
    items = _atom_list(cur, "status item")
    if not items:
        raise cur.error("Expected status items")
    for item in items:
        if item not in STATUS_ITEMS:
            raise cur.error(f"Unknown status item {item}")
    return list(dict.fromkeys(items))


def _status(cur: _Cursor, uid: bool) -> Status:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    return Status(mailbox, tuple(_status_items(cur)))


def parse_date_time(data: bytes) -> datetime:
    """``"17-Jul-1996 02:44:25 -0700"`` (with the quotes) -> aware datetime."""
    m = _DATE_TIME.fullmatch(data)
    if m is None:
        raise ValueError("Invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    month = _MONTHS.get(mon.upper().decode())
    if month is None or int(zm) > 59:
        raise ValueError("Invalid date-time")
    offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
    when = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))
    try:  # stored as an instant and written back in UTC: it must be a UTC date too
        when.astimezone(UTC)
    except OverflowError:
        raise ValueError("Invalid date-time (out of range in UTC)") from None
    return when


def _append(cur: _Cursor, uid: bool) -> Append:
    """``APPEND mailbox 1*append-message`` (RFC 3502 §6); append-data is a
    literal, a literal8 (RFC 3516 §4.4), ``CATENATE (...)`` (RFC 4469 §5) or
    ``UTF8 (literal8)`` (RFC 6855 §4)."""
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    messages = [_append_message(cur)]
    while cur.next_item():
        messages.append(_append_message(cur))
    first = messages[0]
    return Append(
        mailbox, first.flags, first.date, first.message, first.binary, first.utf8, first.parts,
        tuple(messages[1:]),
    )  # fmt: skip


def _append_message(cur: _Cursor) -> AppendMessage:
    flags: tuple[str, ...] = ()
    when = None
    if cur.peek() == 0x28:
        flags = _flag_list(cur)
        cur.sp()
    if cur.peek() == 0x22:
        m = cur.match(_QUOTED_DATE_TIME)
        try:
            when = parse_date_time(m.group() if m else b"")
        except (ValueError, OverflowError):
            raise cur.error('Invalid date-time (expected "dd-Mon-yyyy hh:mm:ss +zzzz")') from None
        cur.sp()
    if cur.is_keyword(b"CATENATE"):
        cur.sp()
        cur.expect(b"(")
        parts = [_cat_part(cur)]
        while cur.peek() != 0x29:
            cur.sp()
            parts.append(_cat_part(cur))
        cur.expect(b")")
        return AppendMessage(flags, when, b"", parts=tuple(parts))
    if cur.is_keyword(b"UTF8"):
        data = _utf8_literal(cur)
        return AppendMessage(flags, when, data, binary=True, utf8=True)
    lit = cur.literal()
    if lit is None:
        raise cur.error("APPEND needs the message as a literal")
    return AppendMessage(flags, when, lit[0], lit[1])


def _utf8_literal(cur: _Cursor) -> bytes:
    """``UTF8 SP "(" literal8 ")"`` after the UTF8 keyword (RFC 6855 §4)."""
    cur.sp()
    cur.expect(b"(")
    lit = cur.literal()
    if lit is None or not lit[1]:
        raise cur.error("UTF8 takes a literal8: UTF8 (~{n})")
    cur.expect(b")")
    return lit[0]


def _cat_part(cur: _Cursor) -> CatPart:
    """``TEXT literal`` (literal8 too, as with BINARY) or ``URL astring``."""
    word = cur.keyword()
    cur.sp()
    if word == "URL":
        url = cur.astring("a URL")
        try:
            return CatPart(url=url.decode("utf-8"))
        except UnicodeDecodeError:
            raise cur.error("URL is not UTF-8") from None
    if word == "TEXT":
        lit = cur.literal()
        if lit is None:
            raise cur.error("TEXT takes a literal")
        return CatPart(text=lit[0], binary=lit[1])
    if word == "UTF8":
        return CatPart(text=_utf8_literal(cur), binary=True, utf8=True)
    raise cur.error(f"Unknown CATENATE part {word} (expected TEXT or URL)")


def _fetch_att(cur: _Cursor) -> list[FetchAtt]:
    m = cur.match(_FETCH_NAME)
    if m is None:
        raise cur.error("Expected a FETCH item")
    name = m.group().decode().upper()
    if cur.peek() != 0x5B:  # '['
        if name in _MACROS:
            raise cur.error(f"{name} cannot be used inside a list")
        if name not in _SIMPLE_ATTS:
            raise cur.error(f"Unknown FETCH item {name}")
        return [FetchAtt(name)]
    if name not in _SECTION_ATTS:
        raise cur.error(f"Unknown FETCH item {name}")
    base, peek = _SECTION_ATTS[name]
    cur.pos += 1
    spec = cur.match(_SECTION_SPEC)
    words = spec.group().decode().upper().split(".") if spec and spec.group() else []
    part: list[int] = []
    while words and words[0].isdigit():
        word = words.pop(0)
        n = int(word)
        if word.startswith("0") or n > MAX_NUMBER or len(part) >= MAX_DEPTH:
            raise cur.error("Invalid section part number")
        part.append(n)
    text = ".".join(words)
    if text not in _SECTION_TEXTS or (text == "MIME" and not part):
        raise cur.error(f"Invalid section {spec.group().decode() if spec else ''}")
    if base != "BODY" and text:
        raise cur.error(f"{name} takes part numbers only")
    fields: list[str] = []
    if text.startswith("HEADER.FIELDS"):
        cur.sp()
        cur.expect(b"(")
        while cur.more() and cur.peek() != 0x29:
            fname = cur.astring("a header field name")
            if not _FIELD_NAME.fullmatch(fname):
                raise cur.error("Invalid header field name")
            fields.append(fname.decode().upper())
        cur.expect(b")")
        if not fields:
            raise cur.error("Expected header field names")
    cur.expect(b"]")
    partial = None
    if cur.peek() == 0x3C:  # '<'
        pm = cur.match(_PARTIAL)
        if pm is None or int(pm.group(2)) == 0:
            raise cur.error("Invalid partial (expected <offset.count>)")
        start, count = int(pm.group(1)), int(pm.group(2))
        if start > MAX_NUMBER or count > MAX_NUMBER:
            raise cur.error("Invalid partial")
        partial = (start, count)
        if base == "BINARY.SIZE":
            raise cur.error("BINARY.SIZE takes no partial")
    section = Section(tuple(part), text, tuple(fields))  # echoed as asked (FROM FROM)
    return [FetchAtt(base, section, peek, partial)]


def _fetch(cur: _Cursor, uid: bool) -> Fetch:
    cur.sp()
    seqset = _seqset(cur)
    cur.sp()
    atts: list[FetchAtt] = []
    if cur.peek() == 0x28:
        cur.pos += 1
        while cur.more() and cur.peek() != 0x29:
            atts.extend(_fetch_att(cur))
            if cur.peek() not in (0x20, 0x29):
                raise cur.error("Expected ')' after the FETCH items")
        cur.expect(b")")
        if not atts:
            raise cur.error("Expected FETCH items")
    else:
        m = _ATOM.match(cur.line, cur.pos)
        word = m.group().decode().upper() if m else ""
        if word in _MACROS:
            cur.pos = m.end() if m else cur.pos
            atts = [FetchAtt(n) for n in _MACROS[word]]
        else:
            atts = _fetch_att(cur)
    changedsince, vanished = None, False
    if cur.peek() == 0x20 and cur.more() and cur.peek() == 0x28:
        changedsince, vanished = _fetch_modifiers(cur, uid)
    return Fetch(seqset, tuple(dict.fromkeys(atts)), changedsince, vanished)


_STORE_ITEM = re.compile(r"([+-]?)FLAGS(\.SILENT)?")


def _store(cur: _Cursor, uid: bool) -> Store:
    cur.sp()
    seqset = _seqset(cur)
    cur.sp()
    unchangedsince = None
    if cur.peek() == 0x28:  # store-modifiers (RFC 7162 §3.1.3)
        cur.pos += 1
        if not cur.is_keyword(b"UNCHANGEDSINCE"):
            raise cur.error("Unknown STORE modifier (expected UNCHANGEDSINCE)")
        cur.sp()
        unchangedsince = _modseq(cur, zero=True)
        cur.expect(b")")
        cur.sp()
    item = cur.atom("FLAGS, +FLAGS or -FLAGS").upper()
    m = _STORE_ITEM.fullmatch(item)
    if m is None:
        raise cur.error(f"Unknown STORE item {item}")
    mode = {"": "set", "+": "add", "-": "remove"}[m.group(1)]
    cur.sp()
    if cur.peek() == 0x28:
        flags = _flag_list(cur)
    else:
        found = [_flag(cur)]
        while cur.next_item():
            found.append(_flag(cur))
        flags = tuple(dict.fromkeys(found))
    return Store(seqset, mode, bool(m.group(2)), flags, unchangedsince)


def _copy(cur: _Cursor, uid: bool) -> Copy:
    cur.sp()
    seqset = _seqset(cur)
    cur.sp()
    return Copy(seqset, _mailbox(cur))


def _expunge(cur: _Cursor, uid: bool) -> Expunge:
    if not uid:
        return Expunge()
    cur.sp()
    return Expunge(_seqset(cur))


_SEARCH_FLAGS = frozenset((
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED",
    "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
))  # fmt: skip
_SEARCH_STRINGS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_SEARCH_DATES = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_SEARCH_ARGS = (
    _SEARCH_STRINGS
    | _SEARCH_DATES
    | {"LARGER", "SMALLER", "KEYWORD", "UNKEYWORD", "HEADER", "UID", "NOT", "OR"}
    | {"OLDER", "YOUNGER"}
    | {"MODSEQ"}
)
SEARCH_RETURN = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
"""RFC 4731 §3.1 result options, and SAVE (RFC 5182 §2.1)."""
SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
"""RFC 5256 §3 sort keys and RFC 5957's DISPLAYFROM/DISPLAYTO."""
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


def _search_date(cur: _Cursor) -> date:
    m = cur.match(_DATE)
    if m is None:
        raise cur.error("Invalid date (expected d-Mon-yyyy)")
    month = _MONTHS.get(m.group(3).upper().decode())
    try:
        if month is None:
            raise ValueError
        return date(int(m.group(4)), month, int(m.group(2)))
    except ValueError:
        raise cur.error(f"Invalid date {m.group().decode()}") from None


def _search_key(cur: _Cursor, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise cur.error("Search program nested too deeply")
    c = cur.peek()
    if c == 0x28:
        cur.pos += 1
        keys = []
        while cur.more() and cur.peek() != 0x29:
            keys.append(_search_key(cur, depth + 1))
        cur.expect(b")")
        if not keys:
            raise cur.error("Empty search key list")
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    if c >= 0 and c in b"0123456789*$":
        return SearchKey("SEQ", (_seqset(cur),))
    word = cur.keyword()
    if word in _SEARCH_FLAGS:
        return SearchKey(word)
    if word not in _SEARCH_ARGS:
        raise cur.error(f"Unknown search key {word}")
    cur.sp()
    if word in _SEARCH_STRINGS:
        return SearchKey(word, (_search_string(cur),))
    if word in _SEARCH_DATES:
        return SearchKey(word, (_search_date(cur),))
    if word in ("LARGER", "SMALLER"):
        return SearchKey(word, (cur.number("a size"),))
    if word in ("OLDER", "YOUNGER"):  # RFC 5032 §3: an interval in seconds
        return SearchKey(word, (cur.number("an interval in seconds", nonzero=True),))
    if word in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(word, (_flag(cur),))
    if word == "HEADER":
        name = cur.astring("a header field name")
        if not _FIELD_NAME.fullmatch(name):
            raise cur.error("Invalid header field name")
        cur.sp()
        return SearchKey(word, (name.decode(), _search_string(cur)))
    if word == "UID":
        return SearchKey(word, (_seqset(cur),))
    if word == "MODSEQ":
        return SearchKey(word, (_search_modseq(cur),))
    if word == "NOT":
        return SearchKey(word, (_search_key(cur, depth + 1),))
    if word == "OR":
        first = _search_key(cur, depth + 1)
        cur.sp()
        return SearchKey(word, (first, _search_key(cur, depth + 1)))
    raise AssertionError(word)


_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})


def _search_modseq(cur: _Cursor) -> int:
    """``MODSEQ ["/flags/<flag>" priv|shared|all] n`` (RFC 7162 §3.1.5). The
    entry is checked and then not used: Waypost keeps one MODSEQ per message,
    never below any of its flags' (so the result is the superset the RFC
    allows; Dovecot does the same)."""
    if cur.at_string():
        entry = cur.string("an entry name")
        if not entry.lower().startswith(b"/flags/") or len(entry) == 7:
            raise cur.error('Invalid MODSEQ entry name (expected "/flags/<flag>")')
        cur.sp()
        if cur.keyword() not in _ENTRY_TYPES:
            raise cur.error("Invalid MODSEQ entry type (expected priv, shared or all)")
        cur.sp()
    return _modseq(cur, zero=True)


def _search_string(cur: _Cursor) -> str:
    # Clients send UTF-8 also without CHARSET; invalid bytes never fail a search.
    return cur.astring("a search string").decode("utf-8", "replace")


def _search_return(cur: _Cursor) -> tuple[str, ...]:
    """``RETURN (MIN COUNT ...)`` (RFC 4731 §3.1); the empty list means ALL."""
    cur.sp()
    cur.expect(b"(")
    items: list[str] = []
    while cur.peek() != 0x29:
        word = cur.atom("a search return option").upper()
        if word not in SEARCH_RETURN:
            raise cur.error(f"Unknown search return option {word}")
        if word not in items:
            items.append(word)
        if cur.peek() != 0x29:
            cur.sp()
    cur.expect(b")")
    cur.sp()
    return tuple(items) or ("ALL",)


def _charset(cur: _Cursor, *, save: bool = False) -> str:
    charset = cur.astring("a charset").decode("ascii", "replace").upper()
    if charset not in SUPPORTED_CHARSETS and cur.utf8_accept:
        # RFC 6855 §3 (erratum 4029): a label conflicting with UTF8=ACCEPT is
        # BAD (SEARCH, SORT, THREAD). [waypost] UTF-8 and US-ASCII do not
        # conflict: accepted, as clients such as MailKit always send CHARSET
        # UTF-8. (IMAP4rev2 alone keeps NO [BADCHARSET], RFC 9051 §6.4.4.)
        raise cur.error(f"CHARSET {charset} conflicts with UTF8=ACCEPT; strings are UTF-8")
    if charset not in SUPPORTED_CHARSETS:
        raise (SaveFailed if save else ParseError)(
            cur.tag,
            f"Unsupported charset {charset}",
            code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")",
            status="NO",
        )
    return charset


def _search_program(cur: _Cursor) -> SearchKey:
    keys = [_search_key(cur, 0)]
    while cur.next_item():
        keys.append(_search_key(cur, 0))
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


def _search(cur: _Cursor, uid: bool) -> Search:
    cur.sp()
    returns = _search_return(cur) if cur.is_keyword(b"RETURN") else None
    charset = None
    if cur.is_keyword(b"CHARSET"):
        cur.sp()
        charset = _charset(cur, save=returns is not None and "SAVE" in returns)
        cur.sp()
    return Search(charset, _search_program(cur), returns)


def _sort(cur: _Cursor, uid: bool) -> Sort:
    """``SORT (REVERSE DATE SUBJECT) UTF-8 ALL`` (RFC 5256 §3: charset required)."""
    cur.sp()
    cur.expect(b"(")
    criteria: list[tuple[str, bool]] = []
    while True:
        word = cur.atom("a sort key").upper()
        reverse = word == "REVERSE"
        if reverse:
            cur.sp()
            word = cur.atom("a sort key").upper()
        if word not in SORT_KEYS:
            raise cur.error(f"Unknown sort key {word}")
        criteria.append((word, reverse))
        if cur.peek() == 0x29:
            break
        cur.sp()
    cur.expect(b")")
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    return Sort(tuple(criteria), charset, _search_program(cur))


def _thread(cur: _Cursor, uid: bool) -> Thread:
    """``THREAD REFERENCES UTF-8 ALL`` (RFC 5256 §3)."""
    cur.sp()
    algorithm = cur.atom("a thread algorithm").upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise cur.error(f"Unknown thread algorithm {algorithm}")
    cur.sp()
    charset = _charset(cur)
    cur.sp()
    return Thread(algorithm, charset, _search_program(cur))


def _enable(cur: _Cursor, uid: bool) -> Enable:
    cur.sp()
    caps = [cur.atom("a capability").upper()]
    while cur.next_item():
        caps.append(cur.atom("a capability").upper())
    return Enable(tuple(dict.fromkeys(caps)))


def _id(cur: _Cursor, uid: bool) -> Id:
    cur.sp()
    if cur.is_keyword(b"NIL"):
        return Id(None)
    cur.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while cur.more() and cur.peek() != 0x29:
        key = cur.string("an ID field name")
        cur.sp()
        value = cur.nstring()
        if len(params) >= 30 or len(key) > 30 or (value is not None and len(value) > 1024):
            raise cur.error("ID parameters too long (RFC 2971 limits)")
        params.append(
            (
                key.decode("utf-8", "replace"),
                None if value is None else value.decode("utf-8", "replace"),
            )
        )
    cur.expect(b")")
    return Id(tuple(params))


def _identifier(cur: _Cursor) -> str:
    return _utf8(cur.astring("an identifier"), cur, "Identifier")


def _setacl(cur: _Cursor, uid: bool) -> SetAcl:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    identifier = _identifier(cur)
    cur.sp()
    rights = _utf8(cur.astring("rights"), cur, "Rights")
    mode = "set"
    if rights[:1] in ("+", "-"):
        mode = "add" if rights[0] == "+" else "remove"
        rights = rights[1:]
    bad = sorted(set(rights) - ACL_RIGHTS)
    if bad:
        raise cur.error(f"Unknown rights: {''.join(bad)}")
    return SetAcl(mailbox, identifier, mode, "".join(dict.fromkeys(rights)))


def _acl_identifier(cur: _Cursor, uid: bool) -> AclIdentifier:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    return AclIdentifier(mailbox, _identifier(cur))


def _getquota(cur: _Cursor, uid: bool) -> QuotaRoot:
    cur.sp()
    return QuotaRoot(_utf8(cur.astring("a quota root"), cur, "A quota root"))


MAX_NUMBER64 = 2**63 - 1
"""RFC 9208 §8 number64."""


def _setquota(cur: _Cursor, uid: bool) -> SetQuota:
    cur.sp()
    root = _utf8(cur.astring("a quota root"), cur, "A quota root")
    cur.sp()
    cur.expect(b"(")
    limits: list[tuple[str, int]] = []
    while cur.peek() != 0x29:
        if limits:
            cur.sp()
        resource = cur.keyword()
        cur.sp()
        m = cur.match(_NUMBER)
        if m is None or int(m.group()) > MAX_NUMBER64:
            raise cur.error(f"Expected a limit for {resource}")
        limits.append((resource, int(m.group())))
    cur.expect(b")")
    return SetQuota(root, tuple(limits))


_Parser = Callable[[_Cursor, bool], Any]

COMMANDS: dict[str, _Parser] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
                     "IDLE", "NAMESPACE"), _no_args),
    **dict.fromkeys(("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETACL", "MYRIGHTS"), _mailbox_only),
    "GETQUOTAROOT": _mailbox_only, "GETQUOTA": _getquota, "SETQUOTA": _setquota,
    **dict.fromkeys(("SELECT", "EXAMINE"), _select),
    **dict.fromkeys(("COPY", "MOVE"), _copy),
    **dict.fromkeys(("DELETEACL", "LISTRIGHTS"), _acl_identifier),
    "EXPUNGE": _expunge, "LOGIN": _login, "AUTHENTICATE": _authenticate, "CREATE": _create,
    "RENAME": _rename, "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "FETCH": _fetch, "STORE": _store, "SEARCH": _search, "ENABLE": _enable, "ID": _id,
    "SETACL": _setacl,
    "SORT": _sort, "THREAD": _thread,
}  # fmt: skip
"""Command name -> argument parser (all commands the session may accept)."""

UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})


def parse_command(raw: RawCommand, *, utf8: bool = False, utf8_accept: bool = False) -> Command:
    """The command AST of one framed command, or :class:`ParseError`;
    ``utf8``: mailbox names are UTF-8 (UTF8=ACCEPT or IMAP4rev2 enabled);
    ``utf8_accept``: UTF8=ACCEPT is enabled (SEARCH CHARSET, RFC 6855 §3)."""
    cur = _Cursor(raw)
    cur.utf8 = utf8 or utf8_accept
    cur.utf8_accept = utf8_accept
    if not raw.lines[0].strip(b" "):
        raise ParseError(None, "Empty command line")
    tag = _tag_of(raw.lines[0])
    if tag is None:
        raise ParseError(None, "Invalid tag")
    if any(b"\x00" in line for line in raw.lines):
        raise ParseError(tag, "NUL in command")
    cur.tag = tag
    cur.pos = len(tag)
    try:
        cur.sp()
    except ParseError:
        raise ParseError(tag, "Missing command") from None
    name = cur.keyword()
    uid = False
    if name == "UID":
        cur.sp()
        name = cur.keyword()
        if name not in UID_COMMANDS:
            raise ParseError(tag, f"UID {name} is not a command")
        uid = True
    parser = COMMANDS.get(name)
    if parser is None:
        raise ParseError(tag, f"Unknown command {name}")
    args = parser(cur, uid)
    cur.end()
    return Command(tag, name, args, uid)


def parse(data: bytes, *, utf8: bool = False, utf8_accept: bool = False, **limits: int) -> Command:
    """Frame and parse one whole command given as bytes (tests, tools)."""
    events = CommandReader(**limits).feed(data if data.endswith(b"\n") else data + CRLF)
    commands = [e for e in events if isinstance(e, RawCommand)]
    rejected = [e for e in events if isinstance(e, Rejected)]
    if rejected:
        raise ParseError(
            rejected[0].tag, rejected[0].text, code=rejected[0].code, status=rejected[0].status
        )
    if len(commands) != 1:
        raise ParseError(None, "Expected exactly one complete command")
    return parse_command(commands[0], utf8=utf8, utf8_accept=utf8_accept)


# --------------------------------------------------------------------------
# Serialisers

QUOTED_MAX = 1024
"""Longer strings are written as literals."""

_ATOM_SAFE = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")
_NEEDS_LITERAL = re.compile(rb'[\x00\r\n"\\\x80-\xff]')
_NEEDS_LITERAL_STR = re.compile(r'[\x00\r\n"\\]')


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else mime.raw(value)


def literal(data: bytes, *, binary: bool = False) -> bytes:
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % len(data) + data


def string(value: str | bytes) -> bytes:
    """A quoted string when safe (short, 7-bit, no CR/LF/quote/backslash), else a literal."""
    if isinstance(value, str):  # the common case, kept fast: FETCH of many envelopes
        if value.isascii() and len(value) <= QUOTED_MAX and not _NEEDS_LITERAL_STR.search(value):
            return f'"{value}"'.encode("ascii")
        value = mime.raw(value)
    if len(value) > QUOTED_MAX or _NEEDS_LITERAL.search(value):
        return literal(value)
    return b'"' + value + b'"'


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when the text is one (and not NIL), else a string."""
    data = _bytes(value)
    if _ATOM_SAFE.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7, quoted; with ``utf8``
    (UTF8=ACCEPT, IMAP4rev2) the UTF-8 itself in a quoted string (RFC 6855
    §3, RFC 9051 §5.1), a literal only when quoting cannot carry it."""
    if not utf8:
        return string(encode_mailbox(name))
    data = name.encode("utf-8", "surrogatepass")
    if len(data) > QUOTED_MAX or _NEEDS_LITERAL_STR.search(name):
        return literal(data)
    return b'"' + data + b'"'


def oldname(sent: str) -> bytes:
    """The LIST extended data ``("OLDNAME" ("name"))`` (RFC 9051 §7.3.1) for a
    name sent in another form than the one used (UTF-8 sessions only)."""
    return b'("OLDNAME" (' + mailbox(sent, utf8=True) + b"))"


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def _params(params: Sequence[tuple[str, str]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(k) + b" " + string(v) for k, v in params) + b")"


def address_list(addresses: Sequence[mime.Address] | None) -> bytes:
    if not addresses:
        return b"NIL"
    return (
        b"("
        + b"".join(b"(" + b" ".join(nstring(x) for x in addr) + b")" for addr in addresses)
        + b")"
    )


def envelope(env: mime.Envelope | None) -> bytes:
    env = env or mime.Envelope()
    return (
        b"("
        + b" ".join(
            (
                nstring(env.date),
                nstring(env.subject),
                address_list(env.from_),
                address_list(env.sender),
                address_list(env.reply_to),
                address_list(env.to),
                address_list(env.cc),
                address_list(env.bcc),
                nstring(env.in_reply_to),
                nstring(env.message_id),
            )
        )
        + b")"
    )


def _language(lang: Sequence[str] | None) -> bytes:
    if not lang:
        return b"NIL"
    if len(lang) == 1:
        return string(lang[0])
    return b"(" + b" ".join(string(x) for x in lang) + b")"


def _disposition(dsp: tuple[str, mime.Params] | None) -> bytes:
    if dsp is None:
        return b"NIL"
    return b"(" + string(dsp[0].upper()) + b" " + _params(dsp[1]) + b")"


def body_structure(part: mime.Part, *, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY of a part tree."""
    out = bytearray()
    _body(part, extensible, out)
    return bytes(out)


def _body(part: mime.Part, ext: bool, out: bytearray) -> None:
    out += b"("
    if part.is_multipart and part.parts:
        for child in part.parts:
            _body(child, ext, out)
        out += b" " + string(part.subtype.upper())
        if ext:
            out += b" ".join(
                (
                    b"",
                    _params(part.params),
                    _disposition(part.disposition),
                    _language(part.language),
                    nstring(part.location),
                )
            )
        out += b")"
        return
    out += b" ".join(
        (
            string(part.type.upper()),
            string(part.subtype.upper()),
            _params(part.params),
            nstring(part.id),
            nstring(part.description),
            string((part.encoding or "7BIT").upper()),
            b"%d" % part.size,
        )
    )
    if part.type == "message" and part.subtype == "rfc822":
        inner = part.message or mime.Part(part.body_start, part.body_start, part.end)
        out += b" " + envelope(inner.envelope) + b" "
        _body(inner, ext, out)
        out += b" %d" % part.lines
    elif part.type == "text":
        out += b" %d" % part.lines
    if ext:
        out += b" ".join(
            (
                b"",
                nstring(part.md5),
                _disposition(part.disposition),
                _language(part.language),
                nstring(part.location),
            )
        )
    out += b")"


def internal_date(value: float | datetime) -> bytes:
    """INTERNALDATE ``"17-Jul-1996 02:44:25 -0700"``; epoch seconds are UTC."""
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    else:
        when = datetime.fromtimestamp(value, UTC)
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    month = _MONTH_NAMES[when.month - 1]
    return (
        f'"{when.day:2d}-{month}-{when.year:04d} {when.hour:02d}:{when.minute:02d}:'
        f'{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode()


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK [CODE] text`` (also ``* BAD ...`` with tag ``*``)."""
    head = f"{tag} {status}"
    if code:
        head += f" [{_clean(code)}]"
    text = _clean(text)
    return (f"{head} {text}" if text else head).encode("utf-8", "replace") + CRLF


def untagged(text: str | bytes) -> bytes:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return b"* " + data + CRLF


def continuation(text: str = "Ready for literal data") -> bytes:
    return b"+ " + _clean(text).encode("utf-8", "replace") + CRLF


def list_line(
    name: str,
    attributes: Iterable[str] = (),
    *,
    delimiter: str | None = "/",
    command: str = "LIST",
    extra: bytes = b"",
    utf8: bool = False,
) -> bytes:
    """``* LIST (\\HasNoChildren) "/" "INBOX"`` (or LSUB); ``extra`` is
    appended as LIST-EXTENDED data, e.g. ``(CHILDINFO ("SUBSCRIBED"))``."""
    delim = b"NIL" if delimiter is None else string(delimiter)
    name_ = mailbox(name, utf8=utf8)
    line = b"* %s %s %s %s" % (command.encode(), flag_list(attributes), delim, name_)
    return line + (b" " + extra if extra else b"") + CRLF


def childinfo(criteria: Iterable[str]) -> bytes:
    """The RFC 5258 §4 extended data item ``("CHILDINFO" ("SUBSCRIBED"))``."""
    return b'("CHILDINFO" (' + b" ".join(string(c) for c in criteria) + b"))"


def status_line(
    name: str, items: Iterable[tuple[str, int | None]], *, utf8: bool = False
) -> bytes:
    """``* STATUS "INBOX" (MESSAGES 3 UNSEEN 1)``; None is NIL (``APPENDLIMIT NIL``)."""
    values = b" ".join(
        b"%s %s" % (k.encode(), b"NIL" if v is None else b"%d" % v) for k, v in items
    )
    return b"* STATUS " + mailbox(name, utf8=utf8) + b" (" + values + b")" + CRLF


def vanished_line(uids: Iterable[int], *, earlier: bool = False) -> bytes:
    """``* VANISHED [(EARLIER)] uid-set`` (RFC 7162 §3.2.10); b"" when none."""
    text = compact_set(uids)
    if not text:
        return b""
    return b"* VANISHED " + (b"(EARLIER) " if earlier else b"") + text.encode() + CRLF


def search_line(numbers: Iterable[int]) -> bytes:
    """``* SEARCH 2 5 7`` (``* SEARCH`` when nothing matched)."""
    return b" ".join([b"* SEARCH", *(b"%d" % n for n in numbers)]) + CRLF


def esearch_line(tag: str, uid: bool, items: Sequence[tuple[str, int | str]]) -> bytes:
    """``* ESEARCH (TAG "a1") UID MIN 2 ALL 2:4,9`` (RFC 4731 §3.1); ``items``
    in the order given, an ALL value already a compact sequence set."""
    out = b'* ESEARCH (TAG "%s")' % tag.encode()
    if uid:
        out += b" UID"
    for name, value in items:
        out += b" %s %s" % (name.encode(), str(value).encode())
    return out + CRLF


def sort_line(numbers: Iterable[int]) -> bytes:
    """``* SORT 5 3 4`` (RFC 5256 §4; ``* SORT`` when nothing matched)."""
    return b" ".join([b"* SORT", *(b"%d" % n for n in numbers)]) + CRLF


ThreadNode = tuple[int | None, list["ThreadNode"]]
"""A thread tree: a message (None for a dummy parent) and its children."""


def thread_line(roots: Sequence[ThreadNode]) -> bytes:
    """``* THREAD (2)(3 6 (4 23)(44 7 96))`` (RFC 5256 §4): a chain of single
    children is written flat, siblings as parenthesised lists."""
    out = bytearray(b"* THREAD")
    for root in roots:
        out += b" " if len(out) == 8 else b""
        out += b"("
        _thread_chain(root, out)
        out += b")"
    return bytes(out) + CRLF


def _thread_chain(node: ThreadNode, out: bytearray) -> None:
    first = True
    while True:  # iterative along chains: deep threads never recurse per message
        message, children = node
        if message is not None:
            out += b"%s%d" % (b"" if first else b" ", message)
            first = False
        if len(children) == 1:
            node = children[0]
            continue
        if children and not first:
            out += b" "
        for child in children:  # thread-nested: 2*thread-list, no space between
            out += b"("
            _thread_chain(child, out)
            out += b")"
        return


def compact_set(numbers: Iterable[int]) -> str:
    """The shortest sequence set for the numbers (COPYUID, APPENDUID): ``1:3,7``."""
    out: list[str] = []
    run_start = prev = -2
    for n in sorted(set(numbers)):
        if n != prev + 1:
            if prev >= 0:
                out.append(str(prev) if prev == run_start else f"{run_start}:{prev}")
            run_start = n
        prev = n
    if prev >= 0:
        out.append(str(prev) if prev == run_start else f"{run_start}:{prev}")
    return ",".join(out)


def idle_done(raw: RawCommand) -> bool:
    """The client ended IDLE: the line ``DONE`` (RFC 2177)."""
    return not raw.literals and raw.lines[0].strip().upper() == b"DONE"
