"""FETCH responses (RFC 3501 §6.4.5, §7.4.2), pure.

The session asks :func:`plan` what a FETCH needs before loading anything:
``UID FLAGS RFC822.SIZE`` needs neither the message nor its parse (the
10,000-message listing stays a metadata walk), ENVELOPE and BODYSTRUCTURE
need only the cached :class:`~waypost.mime.ParsedMessage`, header sections
of the message need only its header bytes, and only body sections need the
whole message. :func:`fetch` then writes one ``* n FETCH (...)`` line.

Sections are cut from the stored bytes with the offsets of the parse, so
``BODY[]`` is exactly the stored message and ``RFC822.SIZE`` its length;
a section that does not exist (``BODY[9]`` of a two-part message,
``BODY[1.HEADER]`` of a part that is not a message) is NIL.

``\\Seen`` is set implicitly by BODY[...], BINARY[...], RFC822 and
RFC822.TEXT, not by their .PEEK forms or RFC822.HEADER. :func:`fetch` only
reports it (:attr:`FetchResult.seen`); the session stores the flag when the
user may (the ``s`` right, not EXAMINE), and the response already carries
the new FLAGS, as RFC 3501 asks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from waypost import mime
from waypost.protocols.imap import wire
from waypost.protocols.imap.wire import FetchAtt, Section

SEEN = "\\Seen"


class FetchError(Exception):
    """A FETCH the session answers with ``tag NO [code] text`` (BINARY of a
    part in an unknown Content-Transfer-Encoding: ``UNKNOWN-CTE``)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(slots=True)
class FetchMessage:
    """What the session knows of one message. ``raw`` and ``parsed`` are
    supplied as :func:`plan` says (``raw`` may be just the header when
    ``plan(...).header_only``); ``internal_date`` is epoch seconds (UTC) or
    an aware datetime."""

    seq: int
    uid: int
    flags: Sequence[str]
    internal_date: float | datetime
    size: int
    raw: bytes | None = None
    parsed: mime.ParsedMessage | None = None
    modseq: int = 0  # CONDSTORE (RFC 7162)


@dataclass(frozen=True, slots=True)
class FetchPlan:
    raw: bool  # the message bytes are needed
    header_only: bool  # ... but only its header (up to and including the blank line)
    parsed: bool  # the cached parse is needed
    seen: bool  # the request sets \Seen (a non-PEEK body access)


@dataclass(frozen=True, slots=True)
class FetchResult:
    response: bytes  # "* n FETCH (...)\r\n"
    seen: bool  # \Seen was set implicitly: store it


_KNOWN_CTE = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
_STRUCTURE = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})
_RFC822_CONTENT = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})


def _header_section(att: FetchAtt) -> bool:
    if att.name == "RFC822.HEADER":
        return True
    s = att.section
    return att.name == "BODY" and s is not None and not s.part and s.text.startswith("HEADER")


def sets_seen(att: FetchAtt) -> bool:
    if att.name in _SETS_SEEN:
        return True
    return att.section is not None and not att.peek


def plan(atts: Sequence[FetchAtt]) -> FetchPlan:
    """What :func:`fetch` will need for these items."""
    raw = parsed = seen = False
    header_only = True
    for att in atts:
        seen = seen or sets_seen(att)
        if att.section is None and att.name in _STRUCTURE:
            parsed = True
        elif att.section is not None or att.name in _RFC822_CONTENT:
            raw = True
            if not _header_section(att):
                header_only = False
            if att.section is not None and (att.section.part or att.name != "BODY"):
                parsed = True
    return FetchPlan(raw, raw and header_only, parsed, seen)


def fetch(
    atts: Sequence[FetchAtt],
    msg: FetchMessage,
    *,
    uid_command: bool = False,
    can_set_seen: bool = True,
    leaf_only: bool = False,
    condstore: bool = False,
) -> FetchResult:
    """The ``* n FETCH (...)`` line for one message (UID first in UID FETCH).
    ``leaf_only``: BINARY of a multipart or message part is refused, as
    IMAP4rev2 says (RFC 9051 §6.4.5); RFC 3516 gives its body undecoded.
    With ``condstore`` (RFC 7162 §3.1), a response that sets \\Seen carries
    UID and MODSEQ (``msg.modseq`` is then the MODSEQ after the change)."""
    has_seen = any(f.lower() == "\\seen" for f in msg.flags)
    seen = can_set_seen and not has_seen and any(sets_seen(a) for a in atts)
    flags = [*msg.flags, SEEN] if seen else list(msg.flags)
    items: list[bytes] = []
    if uid_command or any(a.name == "UID" for a in atts) or (seen and condstore):
        items.append(b"UID %d" % msg.uid)
    with_modseq = any(a.name == "MODSEQ" for a in atts) or (seen and condstore)
    if with_modseq:
        items.append(b"MODSEQ (%d)" % msg.modseq)
    flags_sent = False
    for att in atts:
        name = att.name
        if name in ("UID", "MODSEQ"):
            continue
        if name == "FLAGS":
            items.append(b"FLAGS " + wire.flag_list(flags))
            flags_sent = True
        elif name == "RFC822.SIZE":
            items.append(b"RFC822.SIZE %d" % msg.size)
        elif name == "INTERNALDATE":
            items.append(b"INTERNALDATE " + wire.internal_date(msg.internal_date))
        elif att.section is not None:
            items.append(_section_item(att, msg, leaf_only))
        elif name == "ENVELOPE":
            items.append(b"ENVELOPE " + wire.envelope(_parsed(msg).envelope))
        elif name == "BODYSTRUCTURE":
            items.append(b"BODYSTRUCTURE " + wire.body_structure(_parsed(msg).root))
        elif name == "BODY":
            items.append(b"BODY " + wire.body_structure(_parsed(msg).root, extensible=False))
        elif name == "RFC822":
            items.append(b"RFC822 " + _literal(_raw(msg)))
        elif name == "RFC822.HEADER":
            data = _raw(msg)
            items.append(b"RFC822.HEADER " + wire.literal(data[: _body_start(msg, data)]))
        elif name == "RFC822.TEXT":
            data = _raw(msg)
            items.append(b"RFC822.TEXT " + _literal(data[_body_start(msg, data) :]))
    if seen and not flags_sent:
        items.append(b"FLAGS " + wire.flag_list(flags))
    return FetchResult(b"* %d FETCH (" % msg.seq + b" ".join(items) + b")\r\n", seen)


def _raw(msg: FetchMessage) -> bytes:
    if msg.raw is None:
        raise ValueError("this FETCH needs the message bytes (see fetch.plan)")
    return msg.raw


def _parsed(msg: FetchMessage) -> mime.ParsedMessage:
    if msg.parsed is None:
        msg.parsed = mime.parse(_raw(msg))  # fallback: no cached parse
    return msg.parsed


def _body_start(msg: FetchMessage, data: bytes) -> int:
    if msg.parsed is not None:
        return msg.parsed.root.body_start
    return mime.header_end(data)


def item_name(att: FetchAtt) -> bytes:
    """The name a response gives an item: ``BODY[1.MIME]<0>`` for
    ``BODY.PEEK[1.MIME]<0.100>``."""
    name = att.name.encode()
    if att.section is None:
        return name
    out = name + b"[" + str(att.section).encode() + b"]"
    if att.partial is not None:
        out += b"<%d>" % att.partial[0]
    return out


def _section_item(att: FetchAtt, msg: FetchMessage, leaf_only: bool = False) -> bytes:
    assert att.section is not None
    data = _raw(msg)
    binary = False
    if att.name == "BODY":
        content = section_bytes(att.section, data, msg)
    else:
        part = _parsed(msg).find(att.section.part) if att.section.part else None
        if att.section.part and part is None:
            content = None
        else:
            content, binary = _binary(data, part, leaf_only)
        if att.name == "BINARY.SIZE":
            return item_name(att) + b" " + (b"0" if content is None else b"%d" % len(content))
    if content is None:
        return item_name(att) + b" NIL"
    if att.partial is not None:
        start, count = att.partial
        content = content[start : start + count]
    if binary:
        return item_name(att) + b" " + wire.literal(content, binary=b"\0" in content)
    return item_name(att) + b" " + _literal(content)


def _literal(data: bytes) -> bytes:
    """A literal of message text. NUL (stored from an APPEND of literal8) may
    only travel in literal8, which BODY and RFC822 do not have (RFC 3516 §4.3,
    RFC 9051 §4.3): it is sent as 0x80, as Dovecot does; BINARY sends it as is."""
    return wire.literal(data.replace(b"\0", b"\x80") if b"\0" in data else data)


def _binary(data: bytes, part: mime.Part | None, leaf_only: bool = False) -> tuple[bytes, bool]:
    """BINARY content (RFC 3516 §4.2, RFC 9051 §6.4.5): the body with its
    transfer encoding undone; text in CRLF lines, whatever the encoded form
    held (both RFCs: "servers MUST ensure that textual line-oriented sections
    are always transmitted using the IMAP CRLF line termination")."""
    if part is None:
        return data, True
    if part.is_multipart or part.message is not None or (part.type, part.subtype) in _NON_LEAF:
        if leaf_only:
            raise FetchError("BINARY is only for leaf body parts (RFC 9051 6.4.5)", "CANNOT")
        return data[part.body_start : part.end], True
    if (part.encoding or "7bit").lower() in _KNOWN_CTE:
        # broken base64 still decodes, leniently, like everywhere else
        content = mime.part_content(data, part)
        if part.type == "text" and b"\n" in content:
            content = _BARE_LF.sub(b"\r\n", content)
        return content, True
    raise FetchError(f"Unknown Content-Transfer-Encoding {part.encoding}", "UNKNOWN-CTE")


_BARE_LF = re.compile(rb"\r?\n")
_NON_LEAF = frozenset({("message", "rfc822"), ("message", "global")})
"""Besides multipart/*: the parts that are not leaves (RFC 9051 §6.4.5)."""


def section_bytes(section: Section, data: bytes, msg: FetchMessage | None = None) -> bytes | None:
    """The text of ``BODY[section]`` (before any partial), or None if absent."""
    if section.part:
        if msg is None:
            raise ValueError("part sections need the parse")
        part = _parsed(msg).find(section.part)
        if part is None:
            return None
        if not section.text:
            return data[part.body_start : part.end]
        if section.text == "MIME":
            return data[part.header_start : part.body_start]
        if part.message is None:
            return None  # HEADER / TEXT only of a message/rfc822 part
        header_start, body_start, end = (
            part.message.header_start,
            part.message.body_start,
            part.message.end,
        )
    else:
        header_start, end = 0, len(data)
        body_start = _body_start(msg, data) if msg is not None else mime.header_end(data)
    if not section.text:
        return data[header_start:end]
    if section.text == "TEXT":
        return data[body_start:end]
    if section.text == "HEADER":
        return data[header_start:body_start]
    return header_subset(
        data, header_start, body_start, section.fields, exclude=section.text == "HEADER.FIELDS.NOT"
    )


def header_subset(
    data: bytes, start: int, end: int, names: Sequence[str], *, exclude: bool = False
) -> bytes:
    """The fields called ``names`` (or, with ``exclude``, all the others)
    as sent, and the blank line. Cut by byte ranges, so even a hostile
    header of a million lines costs a few regex scans."""
    found = mime.find_fields(data, start, end, names)
    if exclude:
        spans, pos = [], start
        for f in found:
            spans.append(data[pos : f.start])
            pos = f.end
        spans.append(data[pos : mime.header_stop(data, start, end)])
    else:
        spans = [data[f.start : f.end] for f in found]
    out = [s if s.endswith(b"\n") else s + b"\r\n" for s in spans if s]
    out.append(b"\r\n")
    return b"".join(out)
