"""IMAP URLs (RFC 5092), pure: the ``URL`` parts of CATENATE (RFC 4469 §3).

Only what names a message or a section of a message is accepted:

* absolute, ``imap://[user[;AUTH=mech]@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=m
  [/;SECTION=s][/;PARTIAL=o[.l]]`` (RFC 5092 §6, ``imessagepart``);
* server-relative, the same from the ``/`` before the mailbox (RFC 4469 §3:
  the base is the IMAP server of the session).

Whether host and user name this server and this user is the session's
question (it knows both); whether the user may read the mailbox is the
mail-access service's. Choices where RFC 5092 leaves room (as Dovecot does):

* the mailbox is percent-encoded UTF-8 (RFC 5092 §3.1), never modified UTF-7;
* ``;URLAUTH=`` / ``;EXPIRE=`` (RFC 4467) and searches (``?``) are refused:
  URLAUTH is not offered, and a search names no single message;
* a URL with no user part means the session's user (the answer is the same
  data the user could FETCH; no one else's mailbox becomes reachable).

Every failure is :class:`UrlError`; the session answers ``NO [BADURL url]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from waypost.protocols.imap import wire

MAX_URL = 8192
"""Longest URL accepted (a mailbox name and a section fit easily)."""

# bchar of RFC 5092 §11, before decoding: unreserved, %HH, sub-delims-sh, & = : @ /
_BCHARS = r"[A-Za-z0-9\-._~!$'()*+,&=:@/%]"
_ABSOLUTE = re.compile(
    r"imap://(?:(?P<userinfo>[^@/?#]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)"
    r"(?::(?P<port>\d{1,5}))?(?P<path>/.*)?",
    re.I | re.S,
)
_PATH = re.compile(
    rf"/(?P<mailbox>{_BCHARS}+?)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9]\d{{0,9}}))?"
    r"/;UID=(?P<uid>[1-9]\d{0,9})"
    r"(?:/;SECTION=(?P<section>[A-Za-z0-9\-._~!$'()*+,&=:@%]+))?"
    r"(?:/;PARTIAL=(?P<offset>\d{1,10})(?:\.(?P<length>[1-9]\d{0,9}))?)?",
    re.I,
)
_USERINFO = re.compile(
    r"(?P<user>[A-Za-z0-9\-._~!$'()*+,&=%]*)(?:;AUTH=(?:\*|[A-Za-z0-9\-._~!$'()*+,&=%]+))?", re.I
)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlError(ValueError):
    """Not an IMAP URL naming a message (or a section of one) on this server."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    """A parsed message URL. ``host`` is None for a server-relative URL;
    ``partial`` is (offset, length or None for "to the end")."""

    mailbox: str
    uid: int
    uidvalidity: int | None = None
    section: wire.Section | None = None
    partial: tuple[int, int | None] | None = None
    host: str | None = None
    user: str | None = None
    port: int | None = None


def _decode(text: str, what: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise UrlError(f"invalid %-escape in the {what}")
    try:
        value = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UrlError(f"the {what} is not UTF-8") from None
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise UrlError(f"control characters in the {what}")
    return value


def _number(text: str) -> int:
    value = int(text)
    if value > wire.MAX_NUMBER:
        raise UrlError(f"number out of range: {text}")
    return value


def parse_section(text: str) -> wire.Section:
    """An IMAP section spec (``1.2``, ``HEADER.FIELDS (FROM)``, ``1.MIME``),
    read by the FETCH parser itself so a URL accepts exactly what FETCH does."""
    if not text.isascii() or re.search(r"[\x00-\x1f\x7f\]\[]", text):
        raise UrlError("invalid section")
    raw = wire.RawCommand((b"u FETCH 1 BODY.PEEK[" + text.encode("ascii") + b"]",))
    try:
        command = wire.parse_command(raw)
    except wire.ParseError as exc:
        raise UrlError(f"invalid section: {exc.text}") from None
    section: wire.Section | None = command.args.atts[0].section
    assert section is not None
    return section


def parse_url(text: str) -> ImapUrl:
    """The message an IMAP URL names (see the module doc), or :class:`UrlError`."""
    if len(text) > MAX_URL:
        raise UrlError("URL too long")
    host = user = None
    port = None
    path = text
    if text[:7].lower() == "imap://":
        m = _ABSOLUTE.fullmatch(text)
        if m is None or m.group("path") is None:
            raise UrlError("not an IMAP URL of a message (imap://[user@]host/mailbox/;UID=n)")
        host = _decode(m.group("host"), "host").lower()
        if m.group("port") is not None:
            port = int(m.group("port"))
            if not 0 < port < 65536:
                raise UrlError("invalid port")
        if m.group("userinfo") is not None:
            info = _USERINFO.fullmatch(m.group("userinfo"))
            if info is None:
                raise UrlError("invalid user part")
            user = _decode(info.group("user"), "user") or None
        path = m.group("path")
    elif not text.startswith("/"):
        raise UrlError("expected imap://... or a server-relative /mailbox/;UID=n")
    m = _PATH.fullmatch(path)
    if m is None:
        raise UrlError("the URL does not name one message (/mailbox[;UIDVALIDITY=n]/;UID=n)")
    mailbox = _decode(m.group("mailbox"), "mailbox")
    if not mailbox:
        raise UrlError("empty mailbox name")
    section = None
    if m.group("section") is not None:
        section = parse_section(_decode(m.group("section"), "section"))
    partial = None
    if m.group("offset") is not None:
        length = m.group("length")
        partial = (_number(m.group("offset")), _number(length) if length else None)
    uidvalidity = m.group("uidvalidity")
    return ImapUrl(
        mailbox,
        _number(m.group("uid")),
        _number(uidvalidity) if uidvalidity else None,
        section,
        partial,
        host,
        user,
        port,
    )
