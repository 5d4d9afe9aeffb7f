"""Delivery Status Notifications (RFC 3464): the bounce sent to a sender.

The runner calls :func:`build_dsn` when recipients fail (at once for a
``5xx``, at expiry for a queue that never answered or a held domain that
never collected its mail) or, optionally, when mail is delayed. The result
is a complete message, ready to be queued from the null sender ``<>`` (so a
DSN can never cause another one: never bounce a bounce, smtp.md §2.3).

Shape: ``multipart/report; report-type=delivery-status`` with

1. a plain-text part a person can read: what happened and why;
2. a ``message/delivery-status`` part a program can read: Reporting-MTA,
   Original-Envelope-Id, Arrival-Date, then per recipient Original-
   Recipient (from ORCPT), Final-Recipient, Action, Status, Remote-MTA and
   Diagnostic-Code;
3. the original message (``message/rfc822``, RET=FULL or no RET) or only
   its header (``text/rfc822-headers``, RET=HDRS).

The original must come back exactly as it was sent, 8-bit bytes included.
The :mod:`email` generator would re-serialise a parsed message (refolding
headers, re-encoding bodies, rewriting line ends), so the report is
generated around a random placeholder which is then replaced by the
original bytes; the boundary is chosen so that it cannot occur in them.
"""

from __future__ import annotations

import io
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime, make_msgid

from waypost import mime

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Mail Delivery Report (relayed)",
    "expanded": "Mail Delivery Report (expanded)",
}


@dataclass(frozen=True, slots=True)
class DSNRecipient:
    """One recipient's fate.

    ``address`` is the envelope recipient reported as Final-Recipient;
    ``status`` the RFC 3463 code (``"5.1.1"``); ``code``/``text`` the
    remote server's reply (or our own diagnosis when ``remote`` is empty);
    ``orcpt`` the ORCPT address the client gave, if any.
    """

    address: str
    status: str
    code: int = 0
    text: str = ""
    remote: str = ""
    orcpt: str | None = None


def build_dsn(
    *,
    reporting_mta: str,
    original: bytes,
    mail_from: str,
    recipients: Sequence[DSNRecipient],
    ret: str | None,
    envid: str | None,
    action: str = "failed",
    arrival: datetime,
    held_domain: str | None = None,
    postmaster_domain: str | None = None,
) -> bytes:
    """The DSN message for ``mail_from`` about ``recipients`` (CRLF bytes).

    ``reporting_mta`` is our host name (the Main Domain); the DSN comes from
    ``MAILER-DAEMON@`` it (or ``postmaster_domain``). ``held_domain`` marks
    the expiry of a held queue (smtp.md §2.3, §6): the text then says that
    domain never collected its mail. Raises ValueError for the null sender.
    """
    if not mail_from:
        raise ValueError("no DSN is ever sent to the null sender")
    if action not in SUBJECTS:
        raise ValueError(f"unknown DSN action {action!r}")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    arrival = arrival if arrival.tzinfo else arrival.replace(tzinfo=UTC)
    utf8 = not mail_from.isascii()
    msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{postmaster_domain or reporting_mta}>"
    msg["To"] = f"<{mail_from}>"
    msg["Subject"] = SUBJECTS[action]
    msg["Date"] = format_datetime(datetime.now(UTC).astimezone())
    msg["Message-ID"] = make_msgid("dsn", domain=reporting_mta)
    msg["Auto-Submitted"] = "auto-replied"
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/report; report-type=delivery-status"

    headers_only = (ret or "").upper() == "HDRS"
    body = _header_block(original) if headers_only else original
    placeholder = f"=_waypost-original-{secrets.token_hex(16)}_="
    # RFC 6522 §3: the human-readable part, the report, then the original
    msg.set_payload([
        _human_part(reporting_mta, recipients, action, arrival, held_domain),
        _status_part(reporting_mta, recipients, action, arrival, envid),
        _original_part(placeholder, eight_bit=not body.isascii(), headers_only=headers_only),
    ])
    msg.set_boundary(_boundary(body))

    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=msg.policy).flatten(msg)
    report = out.getvalue()
    assert report.count(placeholder.encode()) == 1
    return report.replace(placeholder.encode(), body, 1)


# --------------------------------------------------------------------------
# Parts


def _human_part(
    mta: str,
    recipients: Sequence[DSNRecipient],
    action: str,
    arrival: datetime,
    held_domain: str | None,
) -> MIMEPart:
    when = format_datetime(arrival)
    if held_domain:
        intro = (
            f"Your message of {when} was held here for the domain {held_domain}, whose "
            "mail server collects its mail from us when it comes online. That domain never "
            "collected its mail before the holding time ran out, so the message could not "
            "be delivered to the recipients below."
        )
    elif action == "failed":
        intro = (
            f"I'm sorry to have to inform you that your message of {when} could not be "
            "delivered to one or more recipients. It is attached below."
        )
    elif action == "delayed":
        intro = (
            f"Your message of {when} has not been delivered yet to the recipients below. "
            "This is only a warning: delivery will be retried, and you do not need to send "
            "the message again."
        )
    else:
        intro = f"Your message of {when} was {action} to the recipients below."
    paragraphs = [f"This is the mail system at host {mta}.", intro]
    paragraphs += [f"<{r.address}>: {_explain(r)}" for r in recipients]
    paragraphs.append("For further assistance, please contact your postmaster.")
    text = "\n\n".join(textwrap.fill(p, 72, break_long_words=False) for p in paragraphs)
    part = MIMEPart(policy=policy.SMTP)
    part.set_content(text + "\n", subtype="plain", charset="utf-8")
    part["Content-Description"] = "Notification"
    return part


def _explain(r: DSNRecipient) -> str:
    if r.remote and r.code:
        return f"host {r.remote} said: {r.code} {r.status} {r.text}".strip()
    if r.text:
        return f"{r.text} ({r.status})"
    return f"status {r.status}"


def _status_part(
    mta: str,
    recipients: Sequence[DSNRecipient],
    action: str,
    arrival: datetime,
    envid: str | None,
) -> Message:
    blocks: list[Message | str] = []
    head = Message(policy=policy.SMTP)
    head["Reporting-MTA"] = f"dns; {mta}"
    if envid:
        head["Original-Envelope-Id"] = _clean(envid)
    head["Arrival-Date"] = format_datetime(arrival)
    blocks.append(head)
    for r in recipients:
        block = Message(policy=policy.SMTP)
        if r.orcpt:
            block["Original-Recipient"] = f"{_addr_type(r.orcpt)}; {_clean(r.orcpt)}"
        block["Final-Recipient"] = f"{_addr_type(r.address)}; {_clean(r.address)}"
        block["Action"] = action
        block["Status"] = r.status
        if r.remote:
            block["Remote-MTA"] = f"dns; {_clean(r.remote)}"
        if r.remote and r.code:
            block["Diagnostic-Code"] = _clean(f"smtp; {r.code} {r.status} {r.text}".strip())
        elif r.text:
            block["Diagnostic-Code"] = _clean(f"X-Waypost; {r.text}")
        blocks.append(block)
    part = Message(policy=policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    part["Content-Description"] = "Delivery report"
    part.set_payload(blocks)
    return part


def _original_part(placeholder: str, *, eight_bit: bool, headers_only: bool) -> Message:
    """The third part, its content a placeholder for the original's bytes
    (a str payload is written as it is, even for message/rfc822)."""
    part = Message(policy=policy.SMTP)
    if headers_only:
        part["Content-Type"] = "text/rfc822-headers"
        part["Content-Description"] = "Undelivered Message Headers"
    else:
        part["Content-Type"] = "message/rfc822"
        part["Content-Description"] = "Undelivered Message"
    if eight_bit:
        part["Content-Transfer-Encoding"] = "8bit"
    part.set_payload(placeholder)
    return part


def _boundary(body: bytes) -> str:
    """A boundary that occurs nowhere in the original (RFC 2046 §5.1.1)."""
    while True:
        boundary = f"=_waypost-dsn-{secrets.token_hex(12)}"
        if boundary.encode() not in body:
            return boundary


def _header_block(original: bytes) -> bytes:
    """The header section, with its line ending, without the blank line."""
    head = original[: mime.header_stop(original, 0, len(original))]
    return head if head.endswith(b"\n") else head + b"\r\n"


def _addr_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"


def _clean(value: str) -> str:
    """One header line: control characters would break the report's syntax."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in value).strip()
