"""Mailboxes of accounts and the messages in them (design.md "Mailstore").

A stored message is three things: an immutable content-addressed body blob
(shared by the queue and every mailbox copy), a small per-copy header
``prefix`` (Return-Path, X-Real-To: what differs between copies of one
body), and byte ranges of the blob to ``omit`` (header fields the copy must
not carry, e.g. a forged X-Real-To). So delivery never copies a body, and
reading a message is ``prefix + blob - omit``.

The few header fields a listing shows (From, Subject, Date, Message-ID) are
parsed once when the message is stored, with a parser that never fails on
broken input, and kept decoded for display. IMAP works on the same rows
through the ``Store.mail_*`` methods (flags, MODSEQ, expunge, copy, the
cached MIME structure); which mailbox a name means and what a user may do
with it is decided in ``services/mailaccess/``.

Every copy local delivery stores -- plain, unified (X-Real-To), made by a
server-wide ``Store in`` or by domain and account rules -- is built by
:class:`StoredCopies`, one per queued message: the Return-Path line (RFC
5321 §4.4), the omitted ranges, the summary, the flags and the parsed MIME
structure are decided there and nowhere else.

The methods are synchronous like the store: the CLI calls them directly,
the server from a worker thread.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Sequence
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32

from waypost import mime
from waypost.services.mailaccess.names import check_create
from waypost.storage.interface import (
    INBOX,
    MailboxInfo,
    MailMessage,
    NewAppend,
    NewMailMessage,
    QueuedMessage,
    QueuedRecipient,
    RecipientUpdate,
    Store,
    StoreError,
    normalize_flags,
)

SUMMARY_FIELDS = {"from": "From", "subject": "Subject", "date": "Date",
                  "message_id": "Message-ID"}
_WS = re.compile(r"\s+")


def split_account(account: str) -> tuple[str, str]:
    """``name@domain`` -> (domain, name), as LOCAL queue names and routes write it."""
    name, at, domain = account.rpartition("@")
    if not at or not name or not domain:
        raise StoreError(f"expected an account as name@domain, got {account!r}")
    return domain, name


def header_block(body: bytes) -> bytes:
    """The header section of a message (up to and including the blank line)."""
    if body.startswith((b"\r\n", b"\n")):
        return b""
    return body[: mime.header_end(body)]


def field_ranges(body: bytes, names: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """Byte ranges of the header fields called ``names`` (with continuation lines)."""
    wanted = {n.lower().encode() for n in names}
    header = header_block(body)
    ranges: list[tuple[int, int]] = []
    pos = 0
    current: list[int] | None = None
    while pos < len(header):
        nl = header.find(b"\n", pos)
        end = len(header) if nl < 0 else nl + 1
        text = header[pos:end]
        if text[:1] in (b" ", b"\t") and current is not None:
            current[1] = end  # a continuation line belongs to the field above
        else:
            if current is not None:
                ranges.append((current[0], current[1]))
                current = None
            name, colon, _ = text.partition(b":")
            if colon and name.strip().lower() in wanted:
                current = [pos, end]
        pos = end
    if current is not None:
        ranges.append((current[0], current[1]))
    return tuple(ranges)


def summarize(body: bytes) -> dict[str, str]:
    """From/Subject/Date/Message-ID for listings: decoded, unfolded, never raising."""
    # Raw 8-bit headers (SMTPUTF8) are read as UTF-8; invalid bytes survive as
    # surrogates for display_header to replace, instead of the parser's opaque
    # "unknown-8bit" Header objects.
    text = header_block(body).decode("utf-8", "surrogateescape")
    try:
        parsed = HeaderParser(policy=compat32).parsestr(text)
    except Exception:  # the parser is lenient; this is belt and braces
        return {}
    summary = {}
    for key, name in SUMMARY_FIELDS.items():
        value = parsed.get(name)
        if value is not None:
            summary[key] = display_header(value)
    return summary


def display_header(value: object) -> str:
    """A header value as a person reads it: encoded words decoded, raw
    8-bit text taken as UTF-8, whitespace collapsed."""
    text = str(value)
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # undecodable bytes (surrogateescape)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        text = str(make_header(decode_header(text)))
    except Exception:
        pass
    return _WS.sub(" ", text).strip()


def assemble(prefix: bytes, body: bytes, omit: Sequence[tuple[int, int]]) -> bytes:
    """``prefix + body`` without the ``omit`` ranges: the message as stored."""
    parts = [prefix]
    pos = 0
    for start, end in sorted(omit):
        parts.append(body[pos:start])
        pos = max(pos, end)
    parts.append(body[pos:])
    return b"".join(parts)


Ranges = tuple[tuple[int, int], ...]


class StoredCopies:
    """The mailbox copies of one queued message, built in one place.

    A copy is the queued blob (never copied) under a per-copy ``prefix``:

    * ``Return-Path: <sender>`` on every copy (RFC 5321 §4.4: added at final
      delivery); any Return-Path already in the message is omitted;
    * for unified domain-wide accounts, one ``real_to_header`` line listing
      the original recipients routed into the account; any such field the
      sender wrote is omitted, so it cannot be forged;
    * what rules add (``Add Header``, ``Tag Subject``): more prefix lines and
      omitted ranges (:meth:`edited`), with the summary taken again since the
      Subject may have changed.

    Every copy of the message shares one internal date. Header work is
    small; :meth:`with_structure` parses whole messages and belongs on a
    worker thread.
    """

    def __init__(
        self, message: QueuedMessage, body: bytes, *, real_to_header: str,
        now: float | None = None,
    ) -> None:
        self.message = message
        self.body = body
        self.real_to_header = real_to_header
        self.now = time.time() if now is None else now
        self.return_path = f"Return-Path: <{header_safe(message.mail_from)}>\r\n".encode(
            "utf-8", "replace")
        self._summary: dict[str, str] | None = None
        self._omit: dict[bool, Ranges] = {}

    def summary(self) -> dict[str, str]:
        """The listing fields of the message as queued (parsed once per message)."""
        if self._summary is None:
            self._summary = summarize(self.body)
        return self._summary

    def _omitted(self, unified: bool) -> Ranges:
        if unified not in self._omit:
            names = ["Return-Path", self.real_to_header] if unified else ["Return-Path"]
            self._omit[unified] = field_ranges(self.body, names)
        return self._omit[unified]

    def copy(
        self, domain: str, account: str, mailbox: str, queue_keys: Sequence[int], *,
        real_to: Sequence[str] = (), flags: Sequence[str] = (),
    ) -> NewMailMessage:
        """One copy into ``domain``/``account``/``mailbox`` (INBOX if it is
        missing) that settles ``queue_keys``; ``real_to`` makes it unified."""
        prefix = self.return_path
        if real_to:
            prefix += f"{self.real_to_header}: {', '.join(real_to)}\r\n".encode(
                "utf-8", "replace")
        return NewMailMessage(
            domain=domain, account=account, mailbox=mailbox, blob=self.message.blob,
            blob_size=len(self.body), internal_date=self.now, prefix=prefix,
            omit=self._omitted(bool(real_to)), flags=normalize_flags(flags),
            summary=self.summary(), fallback_inbox=True, queue_keys=tuple(queue_keys),
        )

    def for_recipients(
        self, account: str, recipients: Sequence[QueuedRecipient]
    ) -> list[NewMailMessage]:
        """The copies these recipients (all routed ``LOCAL(account)``) make:
        one per target mailbox, and one per mailbox for the unified ones."""
        domain, name = split_account(account)
        # (mailbox, unified?) -> (original recipients for the header, queue keys)
        groups: dict[tuple[str, bool], tuple[list[str], list[int]]] = {}
        for r in recipients:
            real_to = header_safe(r.real_to).strip().strip("<>") if r.real_to else None
            names, keys = groups.setdefault((r.mailbox or INBOX, real_to is not None), ([], []))
            keys.append(r.key)
            if real_to and real_to.lower() not in {n.lower() for n in names}:
                names.append(real_to)
        return [self.copy(domain, name, box, keys, real_to=names)
                for (box, _), (names, keys) in groups.items()]

    def edited(
        self, copy: NewMailMessage, prefix: bytes, omit: Ranges, flags: Sequence[str]
    ) -> NewMailMessage:
        """``copy`` with more prefix lines, omitted ranges and flags (rules)."""
        if not prefix and not omit:
            return self.flagged([copy], flags)[0]
        new_prefix = copy.prefix + prefix
        new_omit = tuple(sorted(set(copy.omit) | set(omit)))
        head = header_block(self.body)
        summary = summarize(
            assemble(new_prefix, head, [r for r in new_omit if r[1] <= len(head)]) + b"\r\n"
        )
        return dataclasses.replace(copy, prefix=new_prefix, omit=new_omit, summary=summary,
                                   flags=normalize_flags([*copy.flags, *flags]))

    @staticmethod
    def flagged(copies: Sequence[NewMailMessage], flags: Sequence[str]) -> list[NewMailMessage]:
        if not flags:
            return list(copies)
        return [dataclasses.replace(c, flags=normalize_flags([*c.flags, *flags])) for c in copies]

    def with_structure(self, copies: Sequence[NewMailMessage]) -> list[NewMailMessage]:
        """Parse each copy once, here (design.md: at delivery), so IMAP's first
        ENVELOPE or BODYSTRUCTURE of it reads the cache instead of the body."""
        return [dataclasses.replace(c, structure=mime.parse(
            assemble(c.prefix, self.body, c.omit)).to_json()) for c in copies]


def header_safe(value: str) -> str:
    """A value for a header field we write: without CR and LF, nothing in it
    can start another field (header injection from an envelope address)."""
    return value.replace("\r", "").replace("\n", "")


class Mailstore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def append(
        self, account: str, mailbox: str, body: bytes, *, prefix: bytes = b"",
        flags: Sequence[str] = (), date: float | None = None, create: bool = False,
    ) -> int:
        """Store ``body`` (a new or existing blob) in a mailbox; returns the UID.

        A missing mailbox is an error unless it is INBOX or ``create`` is set
        (IMAP APPEND answers ``[TRYCREATE]``; delivery falls back to INBOX).
        """
        domain, name = split_account(account)
        if create:
            try:
                self.store.mail_create_mailbox(domain, name, check_create(mailbox))
            except StoreError:
                pass  # exists already (any other problem shows in mail_store)
        key = self.store.blob_put(body)
        message = NewMailMessage(
            domain=domain, account=name, mailbox=mailbox, blob=key, blob_size=len(body),
            internal_date=time.time() if date is None else date, prefix=prefix,
            flags=tuple(flags), summary=summarize(prefix + body),
        )
        uid = self.store.mail_store([message])[0]
        assert uid is not None
        return uid

    def append_many(
        self, domain: str, account: str, mailbox: str, messages: Sequence[NewAppend], *,
        max_usage: int | None = None,
    ) -> tuple[int, list[int]]:
        """IMAP MULTIAPPEND: several new bodies in one transaction, all or none
        (RFC 3502 §3), durable on return; (UIDVALIDITY, UIDs in order)."""
        return self.store.mail_append_many(domain, account, mailbox, messages,
                                           max_usage=max_usage)

    def queued_body(self, blob: str) -> bytes:
        """A queued message's body: local delivery stores copies of this blob."""
        return self.store.blob_get(blob)

    def deliver(
        self, copies: Sequence[NewMailMessage], settle: Sequence[RecipientUpdate]
    ) -> list[int | None]:
        """Store delivered copies and settle their queue recipients in ONE
        transaction (never twice, never lost: ``Store.mail_store``)."""
        return self.store.mail_store(copies, settle)

    def message_bytes(self, message: MailMessage) -> bytes:
        """The stored message: ``prefix + blob - omit``."""
        return assemble(message.prefix, self.store.blob_get(message.blob), message.omit)

    def create_mailbox(self, account: str, mailbox: str) -> MailboxInfo:
        """A new mailbox; its name obeys the mail-access name rules."""
        return self.store.mail_create_mailbox(*split_account(account), check_create(mailbox))

    def mailboxes(self, account: str) -> list[MailboxInfo]:
        return self.store.mail_mailboxes(*split_account(account))

    def mailbox(self, account: str, mailbox: str = INBOX) -> MailboxInfo:
        return self.store.mail_mailbox(*split_account(account), mailbox)

    def list_messages(self, account: str, mailbox: str = INBOX) -> list[MailMessage]:
        return self.store.mail_messages(*split_account(account), mailbox)

    def read_message(self, account: str, mailbox: str, uid: int) -> bytes:
        return self.message_bytes(self.store.mail_message(*split_account(account), mailbox, uid))

    def delete_messages(self, account: str, mailbox: str, uids: Sequence[int]) -> int:
        """Remove messages (their blobs are collected once nothing names them)."""
        return self.store.mail_delete(*split_account(account), mailbox, uids)
