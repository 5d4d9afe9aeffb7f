"""The datasets of the webmail pages (issue 10 point 6): the message list and
the message view, built from :class:`MailAccess` results only.

Invariants:

* every function blocks on the store: call it in the web module's worker
  pool, never on the event loop;
* every value taken from a message or a mailbox name that goes into a
  dataset is HTML-escaped here (web.md §4.3 pitfall: skins print plain
  ``%%x%%`` raw), with a URL-encoded twin (``...URL``) where a link needs it;
  the only markup from a message is the HTML part after
  :func:`waypost.web.sanitize.sanitize`;
* rights are the service's: listing or viewing needs ``r`` (a mailbox the
  user may not read raises the service's :class:`MailboxError`, never shows
  data); viewing sets ``\\Seen`` only with ``s`` (``MailAccess.mark_seen``);
* part numbers are IMAP section numbers (``1``, ``1.2``), so a download URL
  names the same part an IMAP ``BODY[1.2]`` fetch does.

Choices [waypost]: a page lists :data:`PAGE_SIZE` messages unless ``Limit``
says otherwise (at most :data:`MAX_PAGE`); the default order is the
internal (arrival) date, newest first; sorting by date and size reads the
index only, by sender or subject the cached MIME parse of every message;
``Search`` matches the subject or the sender (IMAP ``OR SUBJECT x FROM x``:
headers only, so it stays cheap on large mailboxes).
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from waypost import mime
from waypost.services.mailaccess.criteria import SearchKey
from waypost.services.mailaccess.errors import NotFound
from waypost.services.mailaccess.rights import Opened
from waypost.services.mailaccess.service import FetchNeeds, MailAccess, MessageData
from waypost.web.sanitize import sanitize

PAGE_SIZE = 50
MAX_PAGE = 500
SORTS = ("date", "from", "subject", "size")
MAX_SEARCH = 200
_PART = re.compile(r"[1-9][0-9]{0,4}(\.[1-9][0-9]{0,4}){0,20}")


class BadRequest(ValueError):
    """A parameter the pages cannot use (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    mailbox: str
    skip: int = 0
    limit: int = PAGE_SIZE
    sort: str = "date"
    descending: bool = True
    search: str = ""


@dataclass(frozen=True, slots=True)
class Download:
    """A part to send as an attachment."""

    content_type: str
    filename: str
    data: bytes


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(f"not a number: {value[:20]!r}")
    return max(low, min(high, int(value)))


def list_query(params: Any) -> ListQuery:
    """The message list's query parameters, checked (:class:`BadRequest`)."""
    mailbox = params.get("Mailbox") or "INBOX"
    sort = (params.get("Sort") or "date").lower()
    order = (params.get("Order") or "desc").lower()
    search = params.get("Search") or ""
    if sort not in SORTS or order not in ("asc", "desc") or len(search) > MAX_SEARCH:
        raise BadRequest("bad Sort, Order or Search")
    return ListQuery(check_mailbox(mailbox), _int(params.get("Skip"), 0, 0, 10**9),
                     _int(params.get("Limit"), PAGE_SIZE, 1, MAX_PAGE), sort,
                     order == "desc", search.strip())


def check_mailbox(name: str) -> str:
    """Refuse what no mailbox name is (control characters, over-long names);
    the service checks the rest (``names.py``, traversal included)."""
    if not name or len(name) > 1024 or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise BadRequest("bad mailbox name")
    return name


def check_uid(value: str | None) -> int:
    if not value or not value.isdigit() or len(value) > 10 or int(value) == 0:
        raise BadRequest("bad UID")
    return int(value)


def check_part(value: str) -> tuple[int, ...]:
    if not _PART.fullmatch(value):
        raise BadRequest("bad part number")
    return tuple(int(n) for n in value.split("."))


# -- presentation helpers -----------------------------------------------------------


def address_text(addresses: Sequence[mime.Address] | None) -> str:
    """Addresses as a person reads them (``Name <a@b>``), not escaped."""
    out = []
    for name, _adl, mailbox, host in addresses or ():
        if mailbox is None or host is None:
            continue  # group markers
        addr = f"{mailbox}@{host}" if host != mime.MISSING_DOMAIN else mailbox
        label = mime.decode_header(name) if name else ""
        out.append(f"{label} <{addr}>" if label else addr)
    return ", ".join(out)


def date_text(value: str | None, fallback: float) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of the Date header, else of the arrival."""
    when: datetime | None = None
    if value:
        try:
            when = parsedate_to_datetime(mime.decode_header(value))
        except (TypeError, ValueError, IndexError):
            when = None
    if when is None:
        when = datetime.fromtimestamp(fallback, UTC)
    elif when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M")


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _envelope(message: MessageData) -> mime.Envelope:
    return message.parsed.envelope if message.parsed is not None else mime.Envelope()


def _fetch_all(mail: MailAccess, opened: Opened, uids: Sequence[int], needs: FetchNeeds
               ) -> list[MessageData]:
    pairs = [(0, uid) for uid in uids]
    out: list[MessageData] = []
    while pairs:
        batch = mail.fetch(opened, pairs, needs)
        out += batch.messages
        pairs = pairs[batch.done:]
        if batch.done == 0:
            break
    return out


# -- the message list ------------------------------------------------------------------


def message_list(mail: MailAccess, user: str, query: ListQuery) -> dict[str, Any]:
    """The dataset of ``Mailbox.wssp``: the page of messages and the links."""
    selection = mail.select(user, query.mailbox, True)
    opened = selection.opened
    uids = list(selection.uids)
    if query.search:
        key = SearchKey("OR", (SearchKey("SUBJECT", (query.search,)),
                               SearchKey("FROM", (query.search,))))
        uids = mail.search(opened, uids, key, lambda uid: False, True)
    meta: dict[int, tuple[tuple[str, ...], float, int]] = {}
    with mail.index(opened) as index:
        for uid in uids:
            i = index.position(uid)
            if i is not None:
                meta[uid] = (index.flags[i], index.dates[i], index.sizes[i])
    uids = [uid for uid in uids if uid in meta]
    if query.sort in ("date", "size"):
        column = 1 if query.sort == "date" else 2
        uids.sort(key=lambda uid: (meta[uid][column], uid), reverse=query.descending)
        page_uids = uids[query.skip:query.skip + query.limit]
        fetched = {m.uid: m for m in _fetch_all(mail, opened, page_uids, FetchNeeds(parsed=True))}
    else:
        everything = {m.uid: m for m in _fetch_all(mail, opened, uids, FetchNeeds(parsed=True))}

        def text(uid: int) -> str:
            env = _envelope(everything[uid]) if uid in everything else mime.Envelope()
            if query.sort == "subject":
                return mime.decode_header(env.subject or "").casefold()
            return address_text(env.from_).casefold()

        uids.sort(key=lambda uid: (text(uid), uid), reverse=query.descending)
        page_uids = uids[query.skip:query.skip + query.limit]
        fetched = everything
    rows = []
    for uid in page_uids:
        flags, date, size = meta[uid]
        env = _envelope(fetched[uid]) if uid in fetched else mime.Envelope()
        subject = mime.decode_header(env.subject or "").strip()
        lower = {f.lower() for f in flags}
        row: dict[str, Any] = {
            "uid": uid,
            "from": esc(address_text(env.from_)),
            "subject": esc(subject) if subject else "(no subject)",
            "date": date_text(env.date, date),
            "size": size_text(size),
            "sizeBytes": size,
        }
        for flag, name in (("\\seen", "seen"), ("\\flagged", "flagged"),
                           ("\\answered", "answered"), ("\\deleted", "deleted")):
            if flag in lower:
                row[name] = True
        if "seen" not in row:
            row["unread"] = True
        rows.append(row)
    total = len(uids)
    base = {"Mailbox": query.mailbox, "Sort": query.sort,
            "Order": "desc" if query.descending else "asc", "Limit": str(query.limit)}
    if query.search:
        base["Search"] = query.search

    def link(**changes: str) -> str:
        return esc("Mailbox.wssp?" + urllib.parse.urlencode({**base, **changes}))

    dataset: dict[str, Any] = {
        "mailbox": esc(query.mailbox),
        "mailboxURL": quote(query.mailbox),
        "messages": rows,
        "total": total,
        "first": query.skip + 1 if rows else 0,
        "last": query.skip + len(rows),
        "search": esc(query.search),
        "sort": query.sort,
        "order": "desc" if query.descending else "asc",
        "canDelete": opened.can("d") or None,
    }
    if query.skip > 0:
        dataset["prevURL"] = link(Skip=str(max(0, query.skip - query.limit)))
    if query.skip + query.limit < total:
        dataset["nextURL"] = link(Skip=str(query.skip + query.limit))
    for name in SORTS:
        flip = "asc" if (query.sort == name and query.descending) else "desc"
        dataset[f"sort_{name}URL"] = link(Sort=name, Order=flip, Skip="0")
    return dataset


# -- the message view ------------------------------------------------------------------


def numbered_parts(root: mime.Part) -> Iterator[tuple[str, mime.Part]]:
    """The leaf parts of a message with their IMAP section numbers; an
    attached message is one leaf (it downloads as a whole)."""
    if not root.is_multipart:
        yield "1", root
        return

    def walk(part: mime.Part, prefix: str) -> Iterator[tuple[str, mime.Part]]:
        for n, child in enumerate(part.parts, 1):
            number = f"{prefix}{n}"
            if child.is_multipart:
                yield from walk(child, number + ".")
            else:
                yield number, child

    yield from walk(root, "")


def part_filename(data: bytes, part: mime.Part) -> str:
    name = None
    if part.disposition is not None:
        name = dict((k.lower(), v) for k, v in part.disposition[1]).get("filename")
    name = name or part.param("name")
    return mime.decode_header(name).strip() if name else ""


def _is_attachment(data: bytes, part: mime.Part) -> bool:
    disposition = part.disposition[0].lower() if part.disposition else ""
    if disposition == "attachment" or part.is_message:
        return True
    if part.type == "text" and part.subtype in ("plain", "html") and not part_filename(data, part):
        return False
    return not (part.type == "image" and part.id and disposition != "attachment")


def _content_id(part: mime.Part) -> str:
    return (part.id or "").strip().strip("<>").strip()


def _one_message(
    mail: MailAccess, user: str, name: str, uid: int
) -> tuple[Opened, MessageData, bytes, mime.ParsedMessage]:
    """A message the user may read, with its bytes and MIME parse;
    :class:`NotFound` when it is not there."""
    opened = mail.open(user, name, "r")
    batch = mail.fetch(opened, [(0, uid)], FetchNeeds(raw=True, parsed=True))
    if not batch.messages:
        raise NotFound(f"no message with UID {uid}")
    message = batch.messages[0]
    data = message.raw or b""
    return opened, message, data, message.parsed or mime.parse(data)


def message_view(mail: MailAccess, user: str, name: str, uid: int, *,
                 show_images: bool = False, plain: bool = False) -> dict[str, Any]:
    """The dataset of ``Message.wssp``; sets \\Seen (with the ``s`` right).
    :class:`NotFound` when the message is not there."""
    opened, message, data, parsed = _one_message(mail, user, name, uid)
    env = parsed.envelope
    mailbox_url = quote(name)
    parts = list(numbered_parts(parsed.root))
    cids = {_content_id(p): n for n, p in parts if p.id and p.type == "image"}

    def cid_url(cid: str) -> str | None:
        number = cids.get(urllib.parse.unquote(cid).strip().strip("<>"))
        return f"Part/{mailbox_url}/{uid}/{number}?Inline=1" if number else None

    text_part = next((p for _, p in parts if p.type == "text" and p.subtype == "plain"
                      and not _is_attachment(data, p)), None)
    html_part = next((p for _, p in parts if p.type == "text" and p.subtype == "html"
                      and not _is_attachment(data, p)), None)
    dataset: dict[str, Any] = {
        "mailbox": esc(name),
        "mailboxURL": mailbox_url,
        "uid": uid,
        "from": esc(address_text(env.from_)),
        "to": esc(address_text(env.to)),
        "cc": esc(address_text(env.cc)),
        "subject": esc(mime.decode_header(env.subject or "").strip()) or "(no subject)",
        "date": date_text(env.date, message.internal_date),
        "plainURL": esc(f"Message.wssp?Mailbox={mailbox_url}&UID={uid}&Plain=1"),
        "htmlURL": esc(f"Message.wssp?Mailbox={mailbox_url}&UID={uid}"),
    }
    if html_part is not None and not plain:
        body, blocked = sanitize(mime.part_text(data, html_part), show_images=show_images,
                                 cid_url=cid_url)
        dataset["htmlBody"] = body
        if blocked:
            dataset["imagesBlocked"] = blocked
            dataset["showImagesURL"] = esc(
                f"Message.wssp?Mailbox={mailbox_url}&UID={uid}&ShowImages=1")
    else:
        source = text_part or html_part
        dataset["textBody"] = esc(mime.part_text(data, source)) if source is not None else ""
        if plain and html_part is not None:
            dataset["hasHTML"] = True
    attachments = []
    for number, part in parts:
        if part in (text_part, html_part) or not _is_attachment(data, part):
            continue
        filename = part_filename(data, part) or f"part-{number}"
        attachments.append({
            "name": esc(filename),
            "type": esc(f"{part.type}/{part.subtype}"),
            "size": size_text(len(mime.part_content(data, part))),
            "url": esc(f"Part/{mailbox_url}/{uid}/{number}"),
        })
    dataset["attachments"] = attachments
    if "\\Seen" not in message.flags:
        mail.mark_seen(opened, [message])
    return dataset


def download(mail: MailAccess, user: str, name: str, uid: int, number: tuple[int, ...]
             ) -> Download:
    """A part's decoded content. :class:`NotFound` for a missing message or part."""
    _, _, data, parsed = _one_message(mail, user, name, uid)
    part = parsed.find(number)
    if part is None or part.is_multipart:
        raise NotFound("no such part")
    content = data[part.body_start:part.end] if part.is_message else mime.part_content(data, part)
    filename = part_filename(data, part) or "part-" + ".".join(map(str, number))
    return Download(f"{part.type}/{part.subtype}", filename, content)
