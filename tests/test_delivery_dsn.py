"""RFC 3464 delivery status notifications, read back with the ``email`` package."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from waypost.services.delivery.dsn import DSNRecipient, build_dsn

ORIGINAL = (
    b"Received: from client.example ([127.0.0.1]) by main.dom\r\n"
    b"From: Bob <bob@here.dom>\r\n"
    b"To: alice@there.dom, carol@there.dom\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= and a subject long enough that a generator would fold it"
    b" somewhere\r\n"
    b"Message-ID: <orig@here.dom>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Caf\xe9 au lait.\r\n"
    b"From the start of a line\r\n"
    b"--=_waypost-dsn-lookalike\r\n"
    b".\r\n"
)
ARRIVAL = datetime(2024, 3, 1, 12, 30, 0, tzinfo=UTC)
RECIPIENTS = [
    DSNRecipient(
        "alice@there.dom",
        "5.1.1",
        550,
        "No such user here",
        "mx.there.dom",
        orcpt="Alice@There.dom",
    ),
    DSNRecipient("carol@there.dom", "4.4.1", 0, "connection refused", ""),
]


def build(**kw) -> bytes:
    args = dict(
        reporting_mta="main.dom",
        original=ORIGINAL,
        mail_from="bob@here.dom",
        recipients=RECIPIENTS,
        ret=None,
        envid="ENV-42",
        arrival=ARRIVAL,
    )
    args.update(kw)
    return build_dsn(**args)


def words(part: EmailMessage) -> str:
    """The text of a part with its line wrapping undone."""
    return " ".join(part.get_content().split())


def parts(data: bytes) -> list[EmailMessage]:
    return list(parse(data).iter_parts())


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_top_level_header() -> None:
    msg = parse(build())
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@main.dom"
    assert msg["To"].addresses[0].addr_spec == "bob@here.dom"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"].endswith("@main.dom>")
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert not msg.defects


def test_human_part_explains() -> None:
    text = words(parts(build())[0])
    assert "could not be delivered" in text
    assert "<alice@there.dom>: host mx.there.dom said: 550 5.1.1 No such user here" in text
    assert "connection refused" in text


def test_delivery_status_fields() -> None:
    status = list(parse(build()).iter_parts())[1]
    blocks = status.get_payload()
    assert len(blocks) == 3
    head, alice, carol = blocks
    assert head["Reporting-MTA"] == "dns; main.dom"
    assert head["Original-Envelope-Id"] == "ENV-42"
    assert parsedate_to_datetime(head["Arrival-Date"]) == ARRIVAL
    assert alice["Original-Recipient"] == "rfc822; Alice@There.dom"
    assert alice["Final-Recipient"] == "rfc822; alice@there.dom"
    assert alice["Action"] == "failed"
    assert alice["Status"] == "5.1.1"
    assert alice["Remote-MTA"] == "dns; mx.there.dom"
    assert alice["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert carol["Original-Recipient"] is None and carol["Remote-MTA"] is None
    assert carol["Status"] == "4.4.1"
    assert carol["Diagnostic-Code"] == "X-Waypost; connection refused"


def test_original_kept_byte_for_byte() -> None:
    data = build()
    assert ORIGINAL in data
    returned = list(parse(data).iter_parts())[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    inner = returned.get_payload(0)
    assert inner["Message-ID"] == "<orig@here.dom>"
    boundary = parse(data).get_boundary()
    assert boundary.encode() not in ORIGINAL


def test_ret_hdrs_returns_the_header_only() -> None:
    data = build(ret="HDRS")
    part = list(parse(data).iter_parts())[2]
    assert part.get_content_type() == "text/rfc822-headers"
    header = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert header in data
    assert b"Caf\xe9 au lait" not in data


def test_ret_full_is_the_default_and_explicit() -> None:
    assert list(parse(build(ret="FULL")).iter_parts())[2].get_content_type() == "message/rfc822"


def test_no_envid_no_field() -> None:
    head = list(parse(build(envid=None)).iter_parts())[1].get_payload()[0]
    assert head["Original-Envelope-Id"] is None


def test_delayed_warning() -> None:
    msg = parse(build(action="delayed", recipients=[RECIPIENTS[1]]))
    assert msg["Subject"] == "Delayed Mail"
    parts = list(msg.iter_parts())
    assert "will be retried" in words(parts[0])
    assert parts[1].get_payload()[1]["Action"] == "delayed"


def test_held_queue_expiry_says_the_domain_never_collected() -> None:
    rcpt = DSNRecipient("x@cust.dom", "4.4.7", 0, "held mail expired", "")
    msg = parse(build(recipients=[rcpt], held_domain="cust.dom"))
    text = words(next(iter(msg.iter_parts())))
    assert "cust.dom" in text and "never collected its mail" in text


def test_never_to_the_null_sender() -> None:
    with pytest.raises(ValueError):
        build(mail_from="")


def test_ascii_original_is_7bit_and_crlf_throughout() -> None:
    original = b"From: a@b.dom\r\nSubject: x\r\n\r\nplain\r\n"
    data = build(original=original)
    assert original in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert list(parse(data).iter_parts())[2]["Content-Transfer-Encoding"] is None
