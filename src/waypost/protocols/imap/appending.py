"""APPEND and its extensions, from the parsed command to stored messages.

* MULTIAPPEND (RFC 3502): every message of one APPEND is stored in one
  transaction of the mail-access service, or none is (§3: a failure of any
  one stores none); ``[APPENDUID uidvalidity uid-set]`` (RFC 4315 §3) names
  them all, in order.
* CATENATE (RFC 4469): a message is built from ``TEXT`` literals and ``URL``
  parts (IMAP URLs, ``imapurl.py``) naming a message or a section of one that
  the user may read; the service decides that (``services/mailaccess/catenate.py``)
  and this module cuts the section exactly as ``BODY.PEEK[section]<partial>``
  would (``fetch.section_bytes``). Anything unresolvable is ``NO [BADURL url]``
  (the same answer for a mailbox the user may not see as for a missing one),
  a result over the limit ``NO [TOOBIG]``.
* literal8 (RFC 3516 §4.4): ``~{n}`` data may hold NUL; a plain literal may
  not (RFC 3501 §9, CHAR8): ``BAD``.
* UTF8 (RFC 6855 §4): ``UTF8 (~{n})`` only after ``ENABLE UTF8=ACCEPT``, else
  ``BAD``.
* APPENDLIMIT (RFC 7889): one limit, the largest literal (``IMAPMaxLiteral``),
  also for each CATENATE result; all messages of one command together are
  bounded by ``IMAPMaxCommand`` (at least one largest literal). Literals over
  the limits are refused while framing (``wire.CommandReader``: ``NO [TOOBIG]``
  before a synchronizing literal is sent).

:func:`append` blocks (store, blobs, MIME parse): run it in the session's
thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from waypost.protocols.imap import fetch as fetching
from waypost.protocols.imap import imapurl, wire
from waypost.services.mailaccess import catenate
from waypost.services.mailaccess.service import AppendedMany, MailAccess


def refused(text: str, code: str | None = None, status: str = "NO") -> wire.ParseError:
    """A refusal the session answers ``tag status [code] text`` (any
    :class:`~wire.ParseError` is: it is "a command the server cannot accept")."""
    return wire.ParseError(None, text, code=code, status=status)


@dataclass(frozen=True, slots=True)
class Limits:
    """What the session knows that an APPEND depends on."""

    message: int  # largest message (APPENDLIMIT)
    command: int  # all messages of one APPEND together
    utf8: bool  # UTF8=ACCEPT is enabled
    server_ip: str = ""  # the address the client reached: a URL host may name it


def too_big(size: int, limit: int, what: str = "Message") -> wire.ParseError:
    return refused(f"{what} too large ({size} octets, at most {limit})", "TOOBIG")


def append(mail: MailAccess, user: str, args: wire.Append, limits: Limits) -> AppendedMany:
    """Build every message (checks first, URLs resolved), then store them all
    in one transaction; durable when it returns."""
    built: list[tuple[bytes, Sequence[str], datetime | None]] = []
    total = 0
    for message in args.messages:
        data = _message(mail, user, message, limits)
        total += len(data)
        if total > limits.command:
            raise too_big(total, limits.command, "APPEND")
        built.append((data, message.flags, message.date))
    return mail.append_many(user, args.mailbox, built)


def appenduid(done: AppendedMany) -> str:
    """``APPENDUID uidvalidity uid-set`` (RFC 4315 §3)."""
    return f"APPENDUID {done.uidvalidity} {wire.compact_set(done.uids)}"


def _message(mail: MailAccess, user: str, message: wire.AppendMessage, limits: Limits) -> bytes:
    if message.parts:
        for part in message.parts:
            _check_literal(part.text, part.binary, part.utf8, limits)
        data = _catenate(mail, user, message.parts, limits)
    else:
        _check_literal(message.message, message.binary, message.utf8, limits)
        data = message.message
    if not data:
        raise refused("An empty message cannot be appended")
    if len(data) > limits.message:
        raise too_big(len(data), limits.message)
    return data


def _check_literal(data: bytes | None, binary: bool, utf8: bool, limits: Limits) -> None:
    if utf8 and not limits.utf8:
        raise refused("UTF8 needs ENABLE UTF8=ACCEPT first (RFC 6855)", status="BAD")
    if data is not None and not binary and b"\0" in data:
        raise refused("NUL in a literal: send the data as literal8 ~{n}", status="BAD")


def _catenate(mail: MailAccess, user: str, parts: Sequence[wire.CatPart], limits: Limits) -> bytes:
    """RFC 4469 §3: the parts in order; TOOBIG as soon as the result is over the limit."""
    limit = limits.message
    out = bytearray()
    for part in parts:
        piece = part.text
        if piece is None:
            piece = resolve(mail, user, part.url or "", limits.server_ip)
        if len(out) + len(piece) > limit:
            raise too_big(len(out) + len(piece), limit, "CATENATE result")
        out += piece
    return bytes(out)


def bad_url(url: str) -> wire.ParseError:
    # url-resp-text is any TEXT-CHAR but "]" (RFC 4469 §5, erratum 2002)
    shown = url.replace("]", "%5D")
    return refused("CATENATE URL cannot be resolved", f"BADURL {shown}")


def resolve(mail: MailAccess, user: str, url: str, server_ip: str = "") -> bytes:
    """The bytes a CATENATE URL names (``BODY.PEEK[section]<partial>`` of the
    message), or a refusal ``[BADURL url]``. The URL's host may be
    a domain of this server or the address the client connected to."""
    try:
        ref = imapurl.parse_url(url)
        host = None if ref.host in (server_ip, f"[{server_ip}]") else ref.host
        found = catenate.read_message(
            mail, user, ref.mailbox, ref.uid, ref.uidvalidity, host=host, url_user=ref.user
        )
    except (imapurl.UrlError, catenate.UnresolvableUrl):
        raise bad_url(url) from None
    data: bytes | None = found.raw
    if ref.section is not None:
        msg = fetching.FetchMessage(0, ref.uid, (), 0.0, len(found.raw), found.raw, found.parsed)
        data = fetching.section_bytes(ref.section, found.raw, msg)
    if data is None:
        raise bad_url(url)
    if ref.partial is not None:
        start, count = ref.partial
        data = data[start:] if count is None else data[start : start + count]
    return data
