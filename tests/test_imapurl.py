"""IMAP URLs (RFC 5092) as CATENATE uses them, and the APPEND grammar of
MULTIAPPEND / CATENATE / UTF8 (RFC 3502, 4469, 6855) on bytes; with
hypothesis fuzz targets for both parsers (each answer is a value or the
parser's own error, never another exception)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.protocols.imap import wire
from waypost.protocols.imap.imapurl import MAX_URL, ImapUrl, UrlError, parse_url
from waypost.protocols.imap.wire import AppendMessage, CatPart, ParseError, Section

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- URLs ----------------------------------------------------------------------------------


def test_server_relative_url_with_everything() -> None:
    url = parse_url("/INBOX;UIDVALIDITY=785799047/;UID=113330/;SECTION=1.5.9/;PARTIAL=0.1024")
    assert url == ImapUrl("INBOX", 113330, 785799047, Section((1, 5, 9)), (0, 1024))


def test_absolute_url_user_host_port_and_encoded_names() -> None:
    url = parse_url(
        "IMAP://Bob;AUTH=*@Mail.Example.COM:143/Lists/Stra%C3%9Fe%20A/;uid=7"
        "/;section=HEADER.FIELDS%20(FROM%20TO)/;partial=5"
    )
    assert url == ImapUrl(
        "Lists/Straße A",
        7,
        None,
        Section((), "HEADER.FIELDS", ("FROM", "TO")),
        (5, None),
        host="mail.example.com",
        user="Bob",
        port=143,
    )
    assert parse_url("imap://h/INBOX/;UID=1") == ImapUrl("INBOX", 1, host="h")
    assert parse_url("imap://%61b@h/INBOX/;UID=1").user == "ab"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "INBOX/;UID=1",  # neither absolute nor server-relative
        "/INBOX",  # a mailbox, not a message
        "/INBOX/;UID=0",
        "/INBOX/;UID=4294967296",
        "/INBOX;UIDVALIDITY=0/;UID=1",
        "/;UID=1",
        "/INBOX/;UID=1/;SECTION=1.BOGUS",
        "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20()",
        "/INBOX/;UID=1/;PARTIAL=1.0",
        "/INBOX/;UID=1;URLAUTH=anonymous:internal:0123",
        "/INBOX/;UID=1;EXPIRE=2030-01-01T00:00:00Z;URLAUTH=x",
        "/INBOX?SUBJECT%20x",
        "/IN BOX/;UID=1",
        "/IN%ZZBOX/;UID=1",
        "/IN%FFBOX/;UID=1",  # not UTF-8
        "/IN%00BOX/;UID=1",
        "http://h/INBOX/;UID=1",
        "imap://",
        "imap://h",
        "imap://h:99999/INBOX/;UID=1",
        "imap://a@b@h/INBOX/;UID=1",
        "/" + "a" * MAX_URL + "/;UID=1",
    ],
)
def test_what_is_not_a_message_url(text: str) -> None:
    with pytest.raises(UrlError):
        parse_url(text)


URL_PIECES = st.sampled_from(
    ["imap://", "/", ";UID=", ";UIDVALIDITY=", ";SECTION=", ";PARTIAL=", ";URLAUTH=", "@",
     ":", "1", "0", ".", "INBOX", "%", "%C3%9F", "%ff", "HEADER.FIELDS", "%20(", ")", "MIME",
     "TEXT", "[", "]", " ", "\x00", "ß", "?", ";AUTH=*"]
)  # fmt: skip


@SETTINGS
@given(st.one_of(st.text(max_size=120), st.lists(URL_PIECES, max_size=25).map("".join)))
def test_fuzzed_urls_parse_or_are_refused(text: str) -> None:
    try:
        url = parse_url(text)
    except UrlError:
        return
    assert 0 < url.uid <= wire.MAX_NUMBER and url.mailbox
    assert (url.host is None) == text.startswith("/")


@SETTINGS
@given(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30),
    st.integers(1, wire.MAX_NUMBER),
    st.none() | st.integers(1, wire.MAX_NUMBER),
    st.sampled_from(["", "1", "2.3", "HEADER", "TEXT", "1.MIME", "HEADER.FIELDS (FROM)"]),
)
def test_generated_urls_round_trip(
    mailbox: str, uid: int, uidvalidity: int | None, section: str
) -> None:
    from urllib.parse import quote

    text = "/" + quote(mailbox, safe="") + (f";UIDVALIDITY={uidvalidity}" if uidvalidity else "")
    text += f"/;UID={uid}" + (f"/;SECTION={quote(section)}" if section else "")
    url = parse_url(text)
    assert (url.mailbox, url.uid, url.uidvalidity) == (mailbox, uid, uidvalidity)
    assert (str(url.section) if url.section else "") == section


# -- the APPEND grammar ----------------------------------------------------------------------


def test_multiappend_catenate_and_utf8_parse() -> None:
    args = wire.parse(
        b'a APPEND INBOX (\\Seen) "17-Jul-1996 02:44:25 -0700" {3+}\r\nabc'
        b" ~{2+}\r\nx\x00"
        b' (\\Draft) CATENATE (URL "/INBOX/;UID=1" TEXT {2+}\r\nhi URL /a/;UID=2 TEXT ~{1+}\r\n\x00)'
        b" UTF8 (~{1+}\r\nz)"
    ).args
    when = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert args.mailbox == "INBOX" and len(args.messages) == 4
    assert args.messages == (
        AppendMessage(("\\Seen",), when, b"abc"),
        AppendMessage((), None, b"x\x00", binary=True),
        AppendMessage(
            ("\\Draft",),
            None,
            b"",
            parts=(
                CatPart(url="/INBOX/;UID=1"),
                CatPart(text=b"hi"),
                CatPart(url="/a/;UID=2"),
                CatPart(text=b"\x00", binary=True),
            ),
        ),
        AppendMessage((), None, b"z", binary=True, utf8=True),
    )
    single = wire.parse(b"a APPEND INBOX {1+}\r\nq").args
    assert single == wire.Append("INBOX", (), None, b"q")  # the RFC 3501 form, as before
    assert single.messages == (AppendMessage((), None, b"q"),)
    assert datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC) == when


@pytest.mark.parametrize(
    "data",
    [
        b"a APPEND INBOX CATENATE ()",
        b"a APPEND INBOX CATENATE (TEXT)",
        b"a APPEND INBOX CATENATE (URL)",
        b"a APPEND INBOX CATENATE (BODY /x/;UID=1)",
        b"a APPEND INBOX CATENATE (URL /x/;UID=1",
        b"a APPEND INBOX CATENATE (URL /x/;UID=1)(URL /x/;UID=1)",
        b"a APPEND INBOX UTF8 ({1+}\r\nz)",  # UTF8 takes a literal8
        b"a APPEND INBOX UTF8 ~{1+}\r\nz",
        b"a APPEND INBOX {1+}\r\nq (\\Seen)",  # a second message without data
        b"a APPEND INBOX {1+}\r\nq{1+}\r\nr",  # no space between messages
        b"a APPEND INBOX {1+}\r\nq NIL",
    ],
)
def test_bad_append_grammar(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        wire.parse(data)
    assert info.value.status == "BAD" and info.value.response().startswith(b"a BAD ")


APPEND_PIECES = st.sampled_from(
    [b" ", b"(", b")", b"\\Seen", b"CATENATE", b"URL", b"TEXT", b"UTF8", b"/INBOX/;UID=1",
     b'"', b"{1+}\r\nx", b"~{1+}\r\n\x00", b"{0+}\r\n", b'"17-Jul-1996 02:44:25 -0700"', b"NIL",
     b"\r\n", b"{", b"}", b"~"]
)  # fmt: skip


@SETTINGS
@given(st.lists(APPEND_PIECES, max_size=20).map(b"".join))
def test_fuzzed_append_commands_parse_or_are_refused(tail: bytes) -> None:
    data = b"a APPEND INBOX " + tail
    reader = wire.CommandReader(max_line=1024, max_literal=64)
    for event in reader.feed(data + b"\r\n"):
        if not isinstance(event, wire.RawCommand):
            continue
        try:
            command = wire.parse_command(event)
        except ParseError as exc:
            assert exc.response().endswith(b"\r\n")
            continue
        if command.name == "APPEND":
            for message in command.args.messages:
                assert message.parts or message.message is not None
