"""Parse a message once into a cacheable structure (design.md "Mailstore").

IMAP FETCH (ENVELOPE, BODYSTRUCTURE, ``BODY[1.2.MIME]`` ...), the web
interface and the rules all need the same facts about a stored message. They
are computed once at delivery by :func:`parse`, kept as JSON
(:meth:`ParsedMessage.to_json`) beside the message, and read back with
:meth:`ParsedMessage.from_json`, so a FETCH never re-parses.

Why an own scanner instead of ``email.message_from_bytes``: IMAP cuts
sections straight out of the stored bytes, so every part must know the exact
offsets of its header, its body and its end. The ``email`` package rewrites
line ends and forgets positions. The scanner here works on ``bytes.find``
(C speed, no per-line Python loop over large bodies) and follows RFC 2046:

* a part ends before the CRLF that precedes the next delimiter line;
* a delimiter line is ``--boundary`` followed only by white space, a close
  delimiter ``--boundary--``; a line ``--boundaryXYZ`` is content, so a
  boundary that is the prefix of a nested one does not split early;
* an outer boundary is found first and bounds the inner parts, so a nested
  multipart without its close delimiter ends where its parent's next part
  starts; a multipart whose boundary never occurs (or is missing) gets one
  synthetic ``text/plain`` part holding its whole body, because IMAP's
  BODYSTRUCTURE grammar needs at least one part;
* LF-only line ends work everywhere; offsets are those of the bytes given.

Hostile input never raises: depth and part count are capped (deeper
structure is treated as opaque text), garbage or missing Content-Type means
``text/plain; charset=us-ascii`` (``message/rfc822`` inside
``multipart/digest``), and header values are kept *raw* (RFC 3501 returns
header text as it is, encoded words included).

Strings taken from the message are the raw bytes decoded as UTF-8 with
``surrogateescape``: valid UTF-8 (RFC 6532 headers) reads naturally, invalid
bytes survive, and :func:`raw` gives the exact bytes back. ``json.dumps``
escapes the surrogates, so the JSON is pure ASCII.

Header fields are not stored in the cache: cutting ``HEADER.FIELDS`` needs
the message bytes anyway, and :func:`find_fields` locates named fields in
them at C speed (:func:`header_fields` lists all of them). The parse keeps
each part's header and body offsets, so a session can read just the header
bytes of a message (``root.body_start``) when that is all a FETCH needs.

Decoding helpers for search and display (:func:`decode_header`,
:func:`part_content`, :func:`part_text`, :func:`iter_text`) live here too,
because IMAP SEARCH, the web interface and rules all read decoded text.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import json
import quopri
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

MAX_DEPTH = 40
"""Nesting of multiparts and encapsulated messages beyond which parts are
treated as opaque text (a few levels occur in real mail; hostile mail may
nest thousands)."""

MAX_PARTS = 5000
"""Parts per message; the rest of a pathological message stays opaque."""

Address = tuple[str | None, str | None, str | None, str | None]
"""IMAP address: (name, adl, mailbox, host). A group starts with
``(None, None, group, None)`` and ends with ``(None, None, None, None)``."""

Params = tuple[tuple[str, str], ...]

MISSING_DOMAIN = "MISSING_DOMAIN"
"""Host of an address that has none (``From: root``): a NIL host would read
as group syntax in IMAP (Dovecot uses the same marker)."""


def raw(text: str) -> bytes:
    """The original bytes of a string taken from a message."""
    return text.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Data


@dataclass(slots=True)
class Envelope:
    """RFC 3501 ENVELOPE, values raw (unfolded, trimmed); None is NIL."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] | None = None
    sender: tuple[Address, ...] | None = None
    reply_to: tuple[Address, ...] | None = None
    to: tuple[Address, ...] | None = None
    cc: tuple[Address, ...] | None = None
    bcc: tuple[Address, ...] | None = None
    in_reply_to: str | None = None
    message_id: str | None = None

    def to_list(self) -> list[Any]:
        def addrs(value: tuple[Address, ...] | None) -> list[list[str | None]] | None:
            return None if value is None else [list(a) for a in value]

        return [
            self.date,
            self.subject,
            addrs(self.from_),
            addrs(self.sender),
            addrs(self.reply_to),
            addrs(self.to),
            addrs(self.cc),
            addrs(self.bcc),
            self.in_reply_to,
            self.message_id,
        ]

    @classmethod
    def from_list(cls, data: list[Any]) -> Envelope:
        def addrs(value: Any) -> tuple[Address, ...] | None:
            return None if value is None else tuple(tuple(a) for a in value)  # type: ignore[misc]

        return cls(
            data[0],
            data[1],
            addrs(data[2]),
            addrs(data[3]),
            addrs(data[4]),
            addrs(data[5]),
            addrs(data[6]),
            addrs(data[7]),
            data[8],
            data[9],
        )


@dataclass(slots=True)
class Part:
    """One MIME entity and where it lies in the raw message.

    ``raw[header_start:body_start]`` is its header including the blank line
    (the IMAP ``MIME`` section, or ``HEADER`` of a message),
    ``raw[body_start:end]`` its body. Type names are lower-case. A
    ``message/rfc822`` part holds the encapsulated message in ``message``
    (whose ``header_start`` is this part's ``body_start``); a message (the
    root, or an encapsulated one) carries its ``envelope``. ``lines`` (text
    and message parts) counts the body's lines, a last one without a line
    end included.
    """

    header_start: int
    body_start: int
    end: int
    type: str = "text"
    subtype: str = "plain"
    params: Params = ()
    id: str | None = None
    description: str | None = None
    encoding: str | None = None
    md5: str | None = None
    disposition: tuple[str, Params] | None = None
    language: tuple[str, ...] | None = None
    location: str | None = None
    lines: int = 0
    parts: list[Part] = field(default_factory=list)
    message: Part | None = None
    envelope: Envelope | None = None

    @property
    def size(self) -> int:
        return self.end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    @property
    def is_message(self) -> bool:
        """An encapsulated message (IMAP's MESSAGE/RFC822 body type)."""
        return self.message is not None

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value
        return None

    def walk(self) -> Iterator[Part]:
        """This part and every part below it, depth first."""
        yield self
        for child in self.parts:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "h": self.header_start,
            "b": self.body_start,
            "e": self.end,
            "t": self.type,
            "s": self.subtype,
        }
        if self.params:
            d["p"] = [list(p) for p in self.params]
        for key, value in (
            ("id", self.id),
            ("ds", self.description),
            ("en", self.encoding),
            ("md5", self.md5),
            ("lc", self.location),
        ):
            if value is not None:
                d[key] = value
        if self.disposition is not None:
            d["dp"] = [self.disposition[0], [list(p) for p in self.disposition[1]]]
        if self.language is not None:
            d["ln"] = list(self.language)
        if self.lines:
            d["l"] = self.lines
        if self.parts:
            d["c"] = [p.to_dict() for p in self.parts]
        if self.message is not None:
            d["m"] = self.message.to_dict()
        if self.envelope is not None:
            d["v"] = self.envelope.to_list()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Part:
        dp = d.get("dp")
        ln = d.get("ln")
        m = d.get("m")
        v = d.get("v")
        return cls(
            d["h"],
            d["b"],
            d["e"],
            d["t"],
            d["s"],
            tuple((k, val) for k, val in d.get("p", ())),
            d.get("id"),
            d.get("ds"),
            d.get("en"),
            d.get("md5"),
            None if dp is None else (dp[0], tuple((k, val) for k, val in dp[1])),
            None if ln is None else tuple(ln),
            d.get("lc"),
            d.get("l", 0),
            [cls.from_dict(c) for c in d.get("c", ())],
            None if m is None else cls.from_dict(m),
            None if v is None else Envelope.from_list(v),
        )


@dataclass(slots=True)
class ParsedMessage:
    """The parse of one message: ``root`` is the message itself."""

    root: Part
    size: int

    VERSION = 1

    @property
    def envelope(self) -> Envelope:
        return self.root.envelope or Envelope()

    def find(self, path: Sequence[int]) -> Part | None:
        """The part an IMAP section number names (RFC 3501 §6.4.5), or None.

        In a message, part 1 of a non-multipart body is the message itself;
        the numbers after a ``message/rfc822`` part count inside the
        encapsulated message.
        """
        return find_part(self.root, path)

    def to_json(self) -> str:
        return json.dumps(
            {"v": self.VERSION, "n": self.size, "r": self.root.to_dict()}, separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ParsedMessage:
        data = json.loads(text)
        if data.get("v") != cls.VERSION:
            raise ValueError("parsed message cache of another version")
        return cls(Part.from_dict(data["r"]), data["n"])


def find_part(message: Part, path: Sequence[int]) -> Part | None:
    """Resolve section numbers from a message root (see ParsedMessage.find)."""
    current = message
    context, in_message = message, True  # where the next number counts
    for n in path:
        if context.is_multipart:
            kids = context.parts
        elif in_message:
            kids = [context]  # the body of a non-multipart message is its part 1
        else:
            return None
        if not 1 <= n <= len(kids):
            return None
        current = kids[n - 1]
        if current.message is not None:
            context, in_message = current.message, True
        else:
            context, in_message = current, False
    return current


# --------------------------------------------------------------------------
# Header scanning


class Field(NamedTuple):
    """One header field: ``raw[start:end]`` with continuation lines,
    ``raw[value_start:end]`` after the colon. ``name`` is lower-case;
    a broken line without a colon has the name ``b""``."""

    name: bytes
    start: int
    value_start: int
    end: int


def find_header_end(data: bytes, start: int = 0, end: int | None = None) -> int | None:
    """Where the body starts (after the first empty line, CRLF or bare LF),
    or None while ``data[start:end]`` holds no empty line yet. The one place
    that finds the end of a header section: every other question about it
    (:func:`header_end`, :func:`header_stop`) is answered from here."""
    if end is None:
        end = len(data)
    if data.startswith(b"\r\n", start, end):
        return start + 2
    if data.startswith(b"\n", start, end):
        return start + 1
    best = None
    i = data.find(b"\n\r\n", start, end)
    if i >= 0:
        best = i + 3
    j = data.find(b"\n\n", start, end if best is None else best)
    if j >= 0 and (best is None or j + 2 < best):
        best = j + 2
    return best


def header_end(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Where the body starts: after the first empty line, else ``end``."""
    found = find_header_end(data, start, end)
    return (len(data) if end is None else end) if found is None else found


_FIELD = re.compile(rb"(?:([\x21-\x39\x3b-\x7e]+)[ \t]*(:))?[^\n]*\n?(?:[ \t][^\n]*\n?)*")


def header_stop(data: bytes, start: int, end: int) -> int:
    """Where the header's blank line starts (``end`` without one): the
    header fields are ``data[start:header_stop(...)]``."""
    found = find_header_end(data, start, end)
    if found is None:
        return end
    return found - (2 if data.startswith(b"\r\n", found - 2) else 1)


def header_fields(data: bytes, start: int, end: int) -> list[Field]:
    """The fields of the header at ``data[start:end]``, stopping at the blank line."""
    stop = header_stop(data, start, end)
    fields: list[Field] = []
    append = fields.append
    for m in _FIELD.finditer(data, start, stop):
        first, last = m.span()
        if first == last:
            continue
        name = m.group(1)
        append(
            Field(name.lower(), first, m.end(2), last) if name else Field(b"", first, first, last)
        )
    return fields


_CONTINUED = re.compile(rb"[^\n]*\n?(?:[ \t][^\n]*\n?)*")


@functools.lru_cache(maxsize=512)
def _names_pattern(names: frozenset[bytes]) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    alternatives = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return (
        re.compile(rb"(" + alternatives + rb")[ \t]*:", re.IGNORECASE),
        re.compile(rb"\n(" + alternatives + rb")[ \t]*:", re.IGNORECASE),
    )


def find_fields(data: bytes, start: int, end: int, names: Iterable[str | bytes]) -> list[Field]:
    """The fields called one of ``names`` in the header at ``data[start:end]``.

    Same result as filtering :func:`header_fields`, but a regex finds just
    these fields at C speed: a hostile header of a million other lines costs
    no Python loop (parse at delivery, ``HEADER.FIELDS`` and SEARCH use it).
    """
    wanted = frozenset(n.lower() if isinstance(n, bytes) else n.lower().encode() for n in names)
    if not wanted:
        return []
    stop = header_stop(data, start, end)
    first, following = _names_pattern(wanted)
    m = first.match(data, start, stop)
    matches = ([m] if m else []) + list(following.finditer(data, start, stop))
    fields = []
    for m in matches:
        cont = _CONTINUED.match(data, m.end(), stop)
        fields.append(Field(m.group(1).lower(), m.start(1), m.end(), cont.end() if cont else stop))
    return fields


_FOLD = re.compile(rb"\r?\n(?=[ \t])|\r?\n$")


def field_value(data: bytes, f: Field) -> bytes:
    """The value of a field, unfolded (line breaks removed, white space kept), trimmed."""
    return _FOLD.sub(b"", data[f.value_start : f.end]).replace(b"\r\n", b"").strip(b" \t\r\n")


# --------------------------------------------------------------------------
# Structured field values

_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_TYPE = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})\s*(?:;|$)")
_DISPOSITION = re.compile(rf"\s*({_TOKEN})\s*(?:;|$)")
_CONTINUATION = re.compile(r"(.+?)\*(\d{1,3})(\*?)")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _split_semicolons(text: str) -> list[str]:
    """Split at ``;`` outside quoted strings."""
    out: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            out.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    out.append("".join(buf))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"':
        inner = value[1:-1] if value.endswith('"') else value[1:]
        return re.sub(r"\\(.)", r"\1", inner)
    return _COMMENT.sub("", value).strip()


def parse_params(text: str) -> Params:
    """``; name=value`` pairs, lenient; RFC 2231 continuations are joined
    (``name*0``, ``name*1`` -> ``name``; extended ones -> ``name*``) as
    RFC 2231 §3 asks of IMAP servers. Extended values stay percent-encoded."""
    pairs: list[tuple[str, str]] = []
    for segment in _split_semicolons(text):
        name, eq, value = segment.partition("=")
        name = name.strip()
        if not eq or not name or not re.fullmatch(_TOKEN, name):
            continue
        pairs.append((name, _unquote(value)))
    if not any("*" in n for n, _ in pairs):
        return tuple(pairs)
    out: list[tuple[str, str] | list[Any]] = []
    groups: dict[str, list[Any]] = {}
    for name, value in pairs:
        m = _CONTINUATION.fullmatch(name)
        if m is None:
            out.append((name, value))
            continue
        base = m.group(1)
        key = base.lower()
        if key not in groups:
            groups[key] = [base, {}]
            out.append(groups[key])
        groups[key][1].setdefault(int(m.group(2)), (bool(m.group(3)), value))
    result: list[tuple[str, str]] = []
    for item in out:
        if isinstance(item, tuple):
            result.append(item)
            continue
        base, segments = item
        ordered = [segments[i] for i in sorted(segments)]
        if any(ext for ext, _ in ordered):
            text_parts = []
            for i, (ext, value) in enumerate(ordered):
                if ext:
                    text_parts.append(value)
                else:  # a literal segment joins an encoded value percent-encoded
                    text_parts.append(("''" if i == 0 else "") + quote(raw(value), safe=""))
            result.append((base + "*", "".join(text_parts)))
        else:
            result.append((base, "".join(v for _, v in ordered)))
    return tuple(result)


def parse_content_type(value: str | None) -> tuple[str, str, Params] | None:
    """(type, subtype, params) lower-cased type names, or None when absent/garbage."""
    if value is None:
        return None
    m = _TYPE.match(value)
    if m is None:
        return None
    rest = value[m.end() :] if value[m.end() - 1 : m.end()] == ";" else ""
    return m.group(1).lower(), m.group(2).lower(), parse_params(rest)


def parse_disposition(value: str | None) -> tuple[str, Params] | None:
    if value is None:
        return None
    m = _DISPOSITION.match(value)
    if m is None:
        return None
    rest = value[m.end() :] if value[m.end() - 1 : m.end()] == ";" else ""
    return m.group(1), parse_params(rest)


def parse_language(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    tags = tuple(t.strip() for t in _COMMENT.sub("", value).split(",") if t.strip())
    return tags or None


# --------------------------------------------------------------------------
# Addresses (RFC 5322 §3.4, lenient)

_ADDR_SPECIALS = "<>@,;:"
_ATOM_STOP = set(' \t\r\n"(<>[@,;:')


def _tokenize_addresses(value: str) -> list[tuple[str, str]]:
    """Tokens: ('a', atom) ('q', quoted content) ('c', comment) ('d', [literal])
    or (special, special). Unterminated quotes/comments run to the end."""
    toks: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == '"':
            buf = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            toks.append(("q", "".join(buf)))
            i += 1
        elif ch == "(":
            depth, buf = 1, []
            i += 1
            while i < n:
                c = value[i]
                if c == "\\" and i + 1 < n:
                    buf.append(value[i + 1])
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                buf.append(c)
                i += 1
            toks.append(("c", "".join(buf)))
            i += 1
        elif ch == "[":
            j = value.find("]", i)
            j = n - 1 if j < 0 else j
            toks.append(("d", value[i : j + 1]))
            i = j + 1
        elif ch in _ADDR_SPECIALS:
            toks.append((ch, ch))
            i += 1
        else:
            j = i
            while j < n and value[j] not in _ATOM_STOP:
                j += 1
            toks.append(("a", value[i:j]))
            i = j
    return toks


def _phrase(toks: Sequence[tuple[str, str]]) -> str | None:
    words = [t for k, t in toks if k in ("a", "q", "d")]
    return " ".join(words) if words else None


def _quote_local(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr_spec(toks: Sequence[tuple[str, str]]) -> tuple[str, str]:
    at = max((i for i, (k, _) in enumerate(toks) if k == "@"), default=-1)
    local_toks = toks[:at] if at >= 0 else toks
    domain_toks = toks[at + 1 :] if at >= 0 else ()
    local = "".join(
        _quote_local(t) if k == "q" else t for k, t in local_toks if k in ("a", "q", "d")
    )
    domain = "".join(t for k, t in domain_toks if k in ("a", "d", "q"))
    return local, domain


def _mailbox(toks: Sequence[tuple[str, str]]) -> Address | None:
    kinds = [k for k, _ in toks]
    if "<" in kinds:
        lt = kinds.index("<")
        gt = kinds.index(">", lt) if ">" in kinds[lt:] else len(toks)
        name = _phrase(toks[:lt])
        inner = list(toks[lt + 1 : gt])
        adl = None
        if inner and inner[0][0] == "@" and any(k == ":" for k, _ in inner):
            colon = next(i for i, (k, _) in enumerate(inner) if k == ":")
            adl = "".join(t for k, t in inner[:colon] if k != "c") or None
            inner = inner[colon + 1 :]
        if not any(k in ("a", "q", "d") for k, _ in inner):
            return (name, adl, "", "")  # <> (a null path)
        local, domain = _addr_spec(inner)
        return (name, adl, local or "", domain or MISSING_DOMAIN)
    if not any(k in ("a", "q", "d") for k in kinds):
        return None
    comments = [t for k, t in toks if k == "c" and t.strip()]
    local, domain = _addr_spec([t for t in toks if t[0] != "c"])
    return (comments[-1].strip() if comments else None, None, local or "", domain or MISSING_DOMAIN)


def parse_addresses(value: str | None) -> tuple[Address, ...] | None:
    """An address list as IMAP addresses (with group markers), None when empty."""
    if value is None:
        return None
    toks = _tokenize_addresses(value)
    out: list[Address] = []
    i, n = 0, len(toks)
    in_group = False
    while i < n:
        kind = toks[i][0]
        if kind == ",":
            i += 1
            continue
        if kind == ";":
            if in_group:
                out.append((None, None, None, None))
                in_group = False
            i += 1
            continue
        j, angle, colon = i, False, -1
        while j < n:
            k = toks[j][0]
            if k == "<":
                angle = True
            elif k == ">":
                angle = False
            elif not angle and k in (",", ";"):
                break
            elif not angle and k == ":" and not in_group:
                colon = j
                break
            j += 1
        if colon >= 0:
            out.append((None, None, _phrase(toks[i:colon]) or "", None))
            in_group = True
            i = colon + 1
            continue
        addr = _mailbox(toks[i:j])
        if addr is not None:
            out.append(addr)
        i = j
    if in_group:
        out.append((None, None, None, None))
    return tuple(out) if out else None


# --------------------------------------------------------------------------
# Parsing


_ENVELOPE_FIELDS = {
    b"date",
    b"subject",
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"bcc",
    b"in-reply-to",
    b"message-id",
}
_MIME_FIELDS = frozenset(
    {
        b"content-type",
        b"content-transfer-encoding",
        b"content-id",
        b"content-description",
        b"content-disposition",
        b"content-language",
        b"content-location",
        b"content-md5",
    }
)
_MESSAGE_FIELDS = _MIME_FIELDS | _ENVELOPE_FIELDS


def _wanted_fields(data: bytes, start: int, end: int, message: bool) -> dict[bytes, str]:
    """First occurrence of each MIME (and, for a message, envelope) field."""
    values: dict[bytes, str] = {}
    for f in find_fields(data, start, end, _MESSAGE_FIELDS if message else _MIME_FIELDS):
        if f.name not in values:
            values[f.name] = _text(field_value(data, f))
    return values


def parse(data: bytes, *, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS) -> ParsedMessage:
    """Parse a whole message; never raises on any input bytes."""
    parser = _Parser(data, max_depth, max_parts)
    root = parser.entity(0, len(data), ("text", "plain"), 0, message=True)
    return ParsedMessage(root, len(data))


def _count_lines(data: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    n = data.count(b"\n", start, end)
    return n + (data[end - 1] != 0x0A)


class _Parser:
    def __init__(self, data: bytes, max_depth: int, max_parts: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.budget = max_parts

    def entity(
        self,
        start: int,
        end: int,
        default: tuple[str, str],
        depth: int,
        *,
        message: bool,
        opaque: bool = False,
    ) -> Part:
        data = self.data
        self.budget -= 1
        body_start = header_end(data, start, end)
        values = _wanted_fields(data, start, body_start, message)
        part = Part(start, body_start, end)
        ctype = parse_content_type(values.get(b"content-type"))
        if ctype is None or opaque:
            part.type, part.subtype = default
            part.params = (("charset", "us-ascii"),) if default == ("text", "plain") else ()
        else:
            part.type, part.subtype, part.params = ctype
        part.id = values.get(b"content-id")
        part.description = values.get(b"content-description")
        encoding = values.get(b"content-transfer-encoding")
        if encoding is not None:
            part.encoding = _COMMENT.sub("", encoding).strip() or None
        part.md5 = values.get(b"content-md5")
        part.disposition = parse_disposition(values.get(b"content-disposition"))
        part.language = parse_language(values.get(b"content-language"))
        part.location = values.get(b"content-location")
        if message:
            part.envelope = _envelope(values)
        deep = depth >= self.max_depth or self.budget <= 0 or opaque
        if part.type == "multipart":
            self._multipart(part, depth, deep)
        elif part.type == "message" and part.subtype == "rfc822":
            part.lines = _count_lines(data, body_start, end)
            part.message = self.entity(
                body_start, end, ("text", "plain"), depth + 1, message=True, opaque=deep
            )
        elif part.type == "text":
            part.lines = _count_lines(data, body_start, end)
        return part

    def _multipart(self, part: Part, depth: int, deep: bool) -> None:
        boundary = part.param("boundary")
        ranges: list[tuple[int, int]] = []
        if boundary and not deep:
            ranges = split_multipart(self.data, part.body_start, part.end, raw(boundary))
        default = ("message", "rfc822") if part.subtype == "digest" else ("text", "plain")
        if not ranges:
            # no usable boundary: one synthetic text part without a header
            child = Part(
                part.body_start, part.body_start, part.end, params=(("charset", "us-ascii"),)
            )
            child.lines = _count_lines(self.data, part.body_start, part.end)
            part.parts = [child]
            return
        for start, end in ranges:
            if self.budget <= 0:
                # out of budget: the rest of the parts becomes one opaque part
                rest = Part(start, start, ranges[-1][1], params=(("charset", "us-ascii"),))
                rest.lines = _count_lines(self.data, start, rest.end)
                part.parts.append(rest)
                break
            part.parts.append(self.entity(start, end, default, depth + 1, message=False))


def split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the body parts of a multipart body ``data[start:end]``."""
    delim = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        i = data.find(delim, pos, end)
        if i < 0:
            break
        if i != start and data[i - 1] != 0x0A:
            pos = i + 1
            continue
        after = i + len(delim)
        nl = data.find(b"\n", after, end)
        line_end = end if nl < 0 else nl + 1
        close = data.startswith(b"--", after, line_end)
        if not close and data[after:line_end].strip(b" \t\r\n"):
            pos = after  # "--boundaryXYZ": content, or a longer nested boundary
            continue
        if part_start >= 0:
            part_end = i
            if part_end > part_start and data[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and data[part_end - 1] == 0x0D:
                    part_end -= 1
            ranges.append((part_start, part_end))
        if close:
            return ranges
        part_start = line_end
        pos = line_end
    if part_start >= 0:
        ranges.append((part_start, end))  # no close delimiter: the last part runs to the end
    return ranges


def _envelope(values: dict[bytes, str]) -> Envelope:
    from_ = parse_addresses(values.get(b"from"))
    return Envelope(
        date=values.get(b"date"),
        subject=values.get(b"subject"),
        from_=from_,
        sender=parse_addresses(values.get(b"sender")) or from_,
        reply_to=parse_addresses(values.get(b"reply-to")) or from_,
        to=parse_addresses(values.get(b"to")),
        cc=parse_addresses(values.get(b"cc")),
        bcc=parse_addresses(values.get(b"bcc")),
        in_reply_to=values.get(b"in-reply-to"),
        message_id=values.get(b"message-id"),
    )


# --------------------------------------------------------------------------
# Decoding (search, display)

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")


def _codec(charset: str | None) -> str:
    """A Python text codec for a MIME charset; UTF-8 for unknown ones."""
    if not charset:
        return "utf-8"
    name = charset.split("*", 1)[0].strip().strip('"').lower()  # RFC 2231 language suffix
    try:
        info = codecs.lookup(name)
    except LookupError:
        return "utf-8"
    if not getattr(info, "_is_text_encoding", True):
        return "utf-8"  # base64, rot13 ...: not charsets
    return info.name


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("latin-1"), error.end


_LATIN1_FALLBACK = "waypost-mime-latin1"
codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text in ``charset``; bad bytes replaced. 8-bit without a charset is
    taken as UTF-8, each invalid byte as Latin-1 (mixed header encodings
    are common)."""
    if charset is None:
        return data.decode("utf-8", _LATIN1_FALLBACK)
    try:
        return data.decode(_codec(charset), "replace")
    except Exception:  # codecs may fail in exotic ways
        return data.decode("utf-8", "replace")


_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/]")


def _b64(data: bytes) -> bytes:
    """Base64 that never fails: junk characters dropped, padding repaired."""
    clean = _NOT_B64.sub(b"", data)
    if len(clean) % 4 == 1:
        clean = clean[:-1]  # a lone sextet carries no whole octet
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def decode_header(value: str | bytes) -> str:
    """A header value as a person reads it: unfolded, encoded words
    (RFC 2047) decoded, raw 8-bit text as UTF-8."""
    data = value if isinstance(value, bytes) else raw(value)
    text = decode_bytes(re.sub(rb"\r?\n(?=[ \t])", b"", data))
    if "=?" not in text:
        return text

    def word(m: re.Match[str]) -> str:
        charset, kind, payload = m.group(1), m.group(2).lower(), m.group(3)
        octets = payload.encode("ascii", "replace")
        if kind == "b":
            decoded = _b64(octets)
        else:
            decoded = binascii.a2b_qp(octets.replace(b"_", b" "), header=False)
        return decode_bytes(decoded, charset)

    text = _BETWEEN_WORDS.sub(r"\1\2", text)
    return _ENCODED_WORD.sub(word, text)


def header_values(data: bytes, part: Part, name: str) -> list[bytes]:
    """Raw (unfolded) values of every ``name`` field in the part's header."""
    fields = find_fields(data, part.header_start, part.body_start, [name])
    return [field_value(data, f) for f in fields]


def part_content(data: bytes, part: Part) -> bytes:
    """The body of a part with its Content-Transfer-Encoding undone;
    unknown encodings are returned as they are."""
    body = data[part.body_start : part.end]
    encoding = (part.encoding or "").lower()
    if encoding == "base64":
        return _b64(body)
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    return body


def part_text(data: bytes, part: Part) -> str:
    """The decoded text of a text part (charset applied)."""
    return decode_bytes(part_content(data, part), part.param("charset") or "us-ascii")


def iter_text(data: bytes, root: Part) -> Iterator[str]:
    """The decoded body text of a message, what IMAP SEARCH BODY looks in:
    every text part (charset and transfer encoding undone), and the decoded
    headers and text of attached messages. The root's own header is not
    included (see :func:`decode_header` for it)."""
    stack = [root]
    while stack:
        part = stack.pop()
        if part.envelope is not None and part is not root:
            yield decode_header(data[part.header_start : part.body_start])
        if part.message is not None:
            stack.append(part.message)
        elif part.parts:
            stack.extend(reversed(part.parts))
        elif part.type == "text":
            yield part_text(data, part)
