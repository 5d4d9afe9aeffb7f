"""The compose form and the message it sends (issue 10 point 6): the
dataset of ``Compose.wssp`` (empty, or prefilled from an original for a
reply, reply-all or forward) and the MIME message built from a posted form.

Invariants:

* every function that reads mail blocks on the store: call it in the web
  module's worker pool; the original is read through :class:`MailAccess`
  with the user's rights (``r``), never otherwise;
* every value put into a dataset is HTML-escaped here (web.md §4.3
  pitfall), the form's own values included when the form is shown again;
* a header field of the form with CR, LF or NUL is refused
  (:class:`ComposeError` ``headerInjection``), never folded or cleaned: nothing
  is sent then; every address is parsed with :func:`email.utils.getaddresses`
  and checked on its own;
* the built message has CRLF lines (``policy.SMTP``), UTF-8 headers as
  RFC 2047 encoded words, attachments in base64 with RFC 2231 file names,
  and no ``Bcc`` field (the Bcc recipients are only in the envelope, and
  the Sent copy is the same bytes).

Choices [waypost]: the reply prefixes ``Re: `` and ``Fwd: `` are not added
again when the subject already starts with one (``Re:``, ``RE:``, ``Aw:``;
``Fwd:``, ``Fw:``); a reply quotes the plain text part, else the text of the
sanitised HTML part, with ``> `` at most :data:`MAX_QUOTE` characters; a
forward shows the original's header block and text unquoted, and offers its
attachments as checkboxes, all checked; ``References`` keeps the last
:data:`MAX_REFERENCES` ids; addresses are ASCII (no EAI yet).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import policy
from email.errors import HeaderParseError, MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, getaddresses, make_msgid
from html.parser import HTMLParser
from typing import Any

from waypost import mime
from waypost.services.container import Services
from waypost.services.mailaccess.errors import (
    MailboxError,
    MailboxExists,
    StoreError,
    TryCreate,
)
from waypost.services.mailaccess.service import MailAccess
from waypost.services.preferences import web_prefs
from waypost.web import mail as webmail
from waypost.web.sanitize import sanitize

MODES = ("reply", "replyall", "forward")
MAX_QUOTE = 100_000
MAX_REFERENCES = 20
MAX_FILENAME = 200
POLICY = policy.SMTP.clone(cte_type="7bit")
"""CRLF lines, encoded words for non-ASCII headers, no 8-bit bodies."""
_REPLIED = re.compile(r"(?i)^\s*(re|aw)(\[\d+\])?\s*:")
_FORWARDED = re.compile(r"(?i)^\s*(fwd?|wg)(\[\d+\])?\s*:")
_MSGID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_ADDR = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
HEADER_FIELDS = ("To", "Cc", "Bcc", "Subject")


class ComposeError(ValueError):
    """The form cannot be sent as it is; ``code`` is one of the fixed codes
    the skin maps to text, ``detail`` (already safe to show once escaped)
    names the address or gives the server's reason."""

    def __init__(self, code: str, detail: str = "", address: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.address = address


@dataclass(frozen=True, slots=True)
class Upload:
    """A file attached in the form (or taken from the original for a forward)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Draft:
    """The form's fields, as posted (checked by :func:`check_draft`)."""

    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    mailbox: str = ""
    uid: int | None = None
    mode: str = ""
    forward_parts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Original:
    """What a reply or forward takes from the message it answers."""

    mailbox: str
    uid: int
    subject: str
    from_: str
    to: str
    cc: str
    date: str
    reply_to: list[tuple[str, str]]
    senders: list[tuple[str, str]]
    recipients: list[tuple[str, str]]
    message_id: str | None
    references: list[str]
    text: str
    attachments: list[dict[str, Any]]


# -- addresses --------------------------------------------------------------------------


def _pairs(addresses: Sequence[mime.Address] | None) -> list[tuple[str, str]]:
    out = []
    for name, _adl, mailbox, host in addresses or ():
        if mailbox is None or host is None or host == mime.MISSING_DOMAIN:
            continue
        out.append((mime.decode_header(name).strip() if name else "", f"{mailbox}@{host}"))
    return out


def display(name: str, address: str) -> str:
    """``Name <addr>`` as a person types it (quoted where RFC 5322 needs it)."""
    name = " ".join(name.split())
    if not name:
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def address_list(pairs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(display(n, a) for n, a in pairs)


def parse_addresses(text: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of one field; :class:`ComposeError`
    ``badAddress`` naming the first entry that is not a plain address."""
    if not text.strip():
        return []
    out = []
    for name, address in getaddresses([text]):
        if not _ADDR.fullmatch(address) or len(address) > 254:
            shown = address or name or text
            raise ComposeError("badAddress", address=shown[:200])
        out.append((name, address))
    if text.count("@") > sum(a.count("@") + n.count("@") for n, a in out):
        raise ComposeError("badAddress", address=text[:200])
    return out


def own_addresses(services: Services, account: str) -> set[str]:
    """The account's address and its aliases, lower case: what reply-all leaves out."""
    domain = account.rpartition("@")[2]
    names = services.directory.account_aliases(account)
    return {account.lower(), *(f"{n}@{domain}".lower() for n in names)}


# -- the original -----------------------------------------------------------------------


class _Text(HTMLParser):
    """The text of (sanitised) HTML, with line breaks where blocks end."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "pre", "table", "ul", "ol", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def html_text(markup: str) -> str:
    parser = _Text()
    parser.feed(sanitize(markup, show_images=False)[0])
    parser.close()
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", "".join(parser.out))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _references(data: bytes, env: mime.Envelope) -> list[str]:
    end = mime.header_end(data)
    found = mime.find_fields(data, 0, end, ["References"])
    refs = _MSGID.findall(mime.decode_header(mime.field_value(data, found[0]))) if found else []
    if not refs and env.in_reply_to:
        refs = _MSGID.findall(env.in_reply_to)[:1]
    return refs


def read_original(mail: MailAccess, user: str, name: str, uid: int) -> Original:
    """The original of a reply or forward, read with the user's rights (``r``)."""
    _opened, message, data, parsed = webmail._one_message(mail, user, name, uid)
    env = parsed.envelope
    parts = list(webmail.numbered_parts(parsed.root))
    leaves = [(n, p) for n, p in parts if not webmail._is_attachment(data, p)]
    plain = next((p for _, p in leaves if p.type == "text" and p.subtype == "plain"), None)
    rich = next((p for _, p in leaves if p.type == "text" and p.subtype == "html"), None)
    text = (mime.part_text(data, plain) if plain is not None
            else html_text(mime.part_text(data, rich)) if rich is not None else "")
    attachments = []
    for number, part in parts:
        if part in (plain, rich) or not webmail._is_attachment(data, part):
            continue
        attachments.append({
            "number": number,
            "name": webmail.esc(webmail.part_filename(data, part) or f"part-{number}"),
            "type": webmail.esc(f"{part.type}/{part.subtype}"),
            "size": webmail.size_text(len(mime.part_content(data, part))),
        })
    message_id = _MSGID.findall(env.message_id or "")
    return Original(
        mailbox=name, uid=uid,
        subject=mime.decode_header(env.subject or "").strip(),
        from_=webmail.address_text(env.from_), to=webmail.address_text(env.to),
        cc=webmail.address_text(env.cc),
        date=webmail.date_text(env.date, message.internal_date),
        reply_to=_pairs(env.reply_to), senders=_pairs(env.from_),
        recipients=_pairs(env.to) + _pairs(env.cc),
        message_id=message_id[0] if message_id else None,
        references=_references(data, env), text=text[:MAX_QUOTE],
        attachments=attachments,
    )


def reply_subject(subject: str) -> str:
    return subject if _REPLIED.match(subject) else f"Re: {subject}"


def forward_subject(subject: str) -> str:
    return subject if _FORWARDED.match(subject) else f"Fwd: {subject}"


def quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def prefill(original: Original, mode: str, own: set[str]) -> Draft:
    """The form for a reply (To = Reply-To or From), a reply to all (plus
    the original's To and Cc, without the user's own addresses) or a forward."""
    draft = Draft(mailbox=original.mailbox, uid=original.uid, mode=mode)
    if mode == "forward":
        draft.subject = forward_subject(original.subject)
        head = [f"From: {original.from_}", f"Date: {original.date}",
                f"Subject: {original.subject}", f"To: {original.to}"]
        if original.cc:
            head.append(f"Cc: {original.cc}")
        draft.body = ("\n\n---------- Forwarded message ----------\n" + "\n".join(head)
                      + "\n\n" + original.text)
        draft.forward_parts = [a["number"] for a in original.attachments]
        return draft
    to = original.reply_to or original.senders
    draft.to = address_list(to)
    if mode == "replyall":
        seen = {a.lower() for _, a in to} | own
        cc = []
        for name, address in original.recipients:
            if address.lower() not in seen:
                seen.add(address.lower())
                cc.append((name, address))
        draft.cc = address_list(cc)
    draft.subject = reply_subject(original.subject)
    draft.body = f"\n\nOn {original.date}, {original.from_} wrote:\n{quoted(original.text)}\n"
    return draft


# -- the dataset ------------------------------------------------------------------------


def form_dataset(draft: Draft, original: Original | None, sender: str,
                 error: ComposeError | None = None) -> dict[str, Any]:
    """The dataset of ``Compose.wssp``; absent keys are false in WSSP."""
    esc = webmail.esc
    dataset: dict[str, Any] = {
        "to": esc(draft.to), "cc": esc(draft.cc), "bcc": esc(draft.bcc),
        "subject": esc(draft.subject), "body": esc(draft.body),
        "from": esc(sender),
        "mode": draft.mode,
        "backURL": "Mailboxes.wssp",
    }
    if draft.mode:
        dataset["mode_" + draft.mode] = True
    if original is not None:
        dataset["mailbox"] = esc(original.mailbox)
        dataset["mailboxURL"] = urllib.parse.quote(original.mailbox, safe="")
        dataset["uid"] = original.uid
        dataset["original"] = True
        dataset["originalSubject"] = esc(original.subject) or "(no subject)"
        dataset["backURL"] = esc(f"Message.wssp?Mailbox={dataset['mailboxURL']}"
                                 f"&UID={original.uid}")
        if draft.mode == "forward":
            dataset["attachments"] = [
                {**a, "checked": True} if a["number"] in draft.forward_parts else dict(a)
                for a in original.attachments]
    if error is not None:
        dataset["errorCode"] = error.code
        if error.detail:
            dataset["errorText"] = esc(error.detail)
        if error.address:
            dataset["errorAddress"] = esc(error.address)
    return dataset


# -- the message ------------------------------------------------------------------------


def check_draft(draft: Draft) -> tuple[list[tuple[str, str]], list[tuple[str, str]],
                                       list[tuple[str, str]]]:
    """To, Cc and Bcc parsed; :class:`ComposeError` for a header field with a
    line break (``headerInjection``), a bad address, or no recipient."""
    for name in HEADER_FIELDS:
        value = getattr(draft, name.lower())
        if any(c in value for c in "\r\n\0"):
            raise ComposeError("headerInjection", detail=name)
    to, cc, bcc = (parse_addresses(v) for v in (draft.to, draft.cc, draft.bcc))
    if not (to or cc or bcc):
        raise ComposeError("noRecipients")
    return to, cc, bcc


def safe_filename(name: str) -> str:
    """A posted file name without a path, control characters, or excess length."""
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return name[:MAX_FILENAME] or "attachment"


def content_type(value: str | None) -> str:
    value = (value or "").split(";")[0].strip().lower()
    return value if _TYPE.fullmatch(value) else "application/octet-stream"


def _header_address(name: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, HeaderParseError, MessageError):
        raise ComposeError("badAddress", address=address) from None


def build_message(draft: Draft, *, sender: tuple[str, str], main_domain: str,
                  original: Original | None, uploads: Sequence[Upload]) -> bytes:
    """The message to submit and to save in Sent (no Bcc field), CRLF lines."""
    to, cc, _bcc = check_draft(draft)
    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = _header_address(*sender)
        if to:
            msg["To"] = [_header_address(n, a) for n, a in to]
        if cc:
            msg["Cc"] = [_header_address(n, a) for n, a in cc]
        msg["Subject"] = draft.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=main_domain)
        if original is not None and draft.mode in ("reply", "replyall") \
                and original.message_id:
            refs = [*original.references, original.message_id][-MAX_REFERENCES:]
            msg["In-Reply-To"] = original.message_id
            msg["References"] = " ".join(refs)
        msg["User-Agent"] = "Waypost WebUser"
        body = draft.body.replace("\r\n", "\n").replace("\r", "\n")
        msg.set_content(body if body.endswith("\n") else body + "\n")
        for upload in uploads:
            _attach(msg, upload)
        return msg.as_bytes()
    except (ValueError, HeaderParseError, MessageError) as exc:
        if isinstance(exc, ComposeError):
            raise
        raise ComposeError("badMessage", detail=str(exc)[:200]) from None


def _attach(msg: EmailMessage, upload: Upload) -> None:
    maintype, _, subtype = upload.content_type.partition("/")
    if maintype == "message" or maintype == "multipart":
        if upload.content_type == "message/rfc822":
            inner = BytesParser(policy=POLICY).parsebytes(upload.data)
            msg.add_attachment(inner, filename=upload.filename)
            return
        maintype, subtype = "application", "octet-stream"
    msg.add_attachment(upload.data, maintype=maintype, subtype=subtype,
                       filename=upload.filename)


def forwarded(mail: MailAccess, user: str, original: Original, numbers: Sequence[str]
              ) -> list[Upload]:
    """The original's attachments chosen for a forward, read with the user's rights."""
    offered = {a["number"] for a in original.attachments}
    out = []
    for number in numbers:
        if number not in offered:
            continue
        part = webmail.download(mail, user, original.mailbox, original.uid,
                                webmail.check_part(number))
        out.append(Upload(safe_filename(part.filename), content_type(part.content_type),
                          part.data))
    return out


def sender_of(services: Services, account: str) -> tuple[str, str]:
    """(RealName, address) of the account: the From of its mail."""
    real = services.directory.effective_account_settings(account).get("RealName", "")
    real = real if isinstance(real, str) else ""
    return " ".join(real.split())[:200], account


# -- after sending ----------------------------------------------------------------------


def save_sent(mail: MailAccess, services: Services, account: str, message: bytes) -> str:
    """A ``\\Seen`` copy in the ``SentBox`` preference (created with special
    use ``\\Sent`` when missing); the mailbox name, "" when not saved by choice."""
    box = web_prefs(services, account).sent_box
    if not box:
        return ""
    try:
        mail.append(account, box, message, ("\\Seen",))
    except TryCreate:
        try:
            mail.create(account, box, special_use="\\Sent")
        except MailboxExists:
            pass  # created meanwhile (another session, IMAP)
        mail.append(account, box, message, ("\\Seen",))
    return box


def mark_original(mail: MailAccess, user: str, name: str, uid: int, mode: str) -> bool:
    """``\\Answered`` on a replied original, ``$Forwarded`` on a forwarded one,
    where the user has the right; silently nothing otherwise."""
    flag = "$Forwarded" if mode == "forward" else "\\Answered"
    try:
        opened = mail.open(user, name, "r")
        flags = mail.check_flags(opened, [flag], "add")
        mail.store_flags(opened, [uid], flags, "add")
    except (MailboxError, StoreError):
        return False
    return True
