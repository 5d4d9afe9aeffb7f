"""IMAP wire format on bytes: framing, parsing, modified UTF-7, serialisers."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from waypost.protocols.imap import wire
from waypost.protocols.imap.wire import (
    Continue,
    FetchAtt,
    ParseError,
    RawCommand,
    Rejected,
    SearchKey,
    Section,
    SequenceSet,
)


def bad(data: bytes, **limits: int) -> ParseError:
    with pytest.raises(ParseError) as info:
        wire.parse(data, **limits)
    return info.value


def feed_all(reader: wire.CommandReader, *chunks: bytes) -> list[wire.Event]:
    events: list[wire.Event] = []
    for chunk in chunks:
        events.extend(reader.feed(chunk))
    return events


# -- framing -------------------------------------------------------------------


def test_reader_pipelined_commands_and_partial_lines() -> None:
    r = wire.CommandReader()
    assert r.feed(b"a1 NOOP\r\na2 CAPA") == [RawCommand((b"a1 NOOP",))]
    assert r.pending
    assert r.feed(b"BILITY\r\na3 LOGOUT\n") == [
        RawCommand((b"a2 CAPABILITY",)),
        RawCommand((b"a3 LOGOUT",)),
    ]
    assert not r.pending


def test_synchronizing_literal_asks_for_continuation() -> None:
    r = wire.CommandReader()
    assert r.feed(b"a1 LOGIN {5}\r\n") == [Continue("a1", 5)]
    assert r.in_literal
    assert r.feed(b"hel") == []
    assert r.feed(b"lo {3}\r\n") == [Continue("a1", 3)]
    assert r.feed(b"pw!\r\n") == [RawCommand((b"a1 LOGIN {5}", b" {3}", b""), (b"hello", b"pw!"))]


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    r = wire.CommandReader()
    events = r.feed(b"a1 LOGIN {5+}\r\nhello {3+}\r\npw!\r\n")
    assert events == [RawCommand((b"a1 LOGIN {5+}", b" {3+}", b""), (b"hello", b"pw!"))]
    assert wire.parse_command(events[0]).args == wire.Login("hello", "pw!")


def test_literal_split_at_every_chunk_boundary() -> None:
    data = b'A1 APPEND INBOX (\\Seen) {12}\r\nhello\r\nworld\r\nA2 LOGIN {2+}\r\nab "c"\r\n'
    expected = wire.CommandReader().feed(data)
    assert [type(e) for e in expected] == [Continue, RawCommand, RawCommand]
    for cut in range(1, len(data)):
        r = wire.CommandReader()
        assert feed_all(r, data[:cut], data[cut:]) == expected, cut
    r = wire.CommandReader()  # one byte at a time
    assert feed_all(r, *(data[i : i + 1] for i in range(len(data)))) == expected
    append = wire.parse_command(expected[1])  # type: ignore[arg-type]
    assert append.args.message == b"hello\r\nworld"


def test_literal_containing_crlf_and_braces() -> None:
    r = wire.CommandReader()
    events = r.feed(b"a SEARCH TEXT {7+}\r\n{1}\r\n\r\n\r\n")
    (cmd,) = events
    assert wire.parse_command(cmd).args.key == SearchKey("TEXT", ("{1}\r\n\r\n",))  # type: ignore[union-attr]


def test_unterminated_literal_waits_without_a_command() -> None:
    r = wire.CommandReader()
    assert r.feed(b"a1 APPEND INBOX {100}\r\n") == [Continue("a1", 100)]
    assert r.feed(b"x" * 99) == []
    assert r.pending and r.in_literal and r.buffered < 200
    assert r.feed(b"y") == []  # literal complete, the line after it is not
    assert r.feed(b"\r\n")[0].literals == (b"x" * 99 + b"y",)  # type: ignore[union-attr]


def test_synchronizing_literal_over_limit_is_refused_before_it_is_sent() -> None:
    r = wire.CommandReader(max_literal=10)
    (ev,) = r.feed(b"a1 APPEND INBOX {11}\r\n")
    assert isinstance(ev, Rejected) and not ev.fatal
    assert ev.response() == b"a1 NO [TOOBIG] Literal too large (11 octets, at most 10)\r\n"
    assert not r.pending
    # The client did not get "+", so what follows is the next command.
    assert r.feed(b"a2 NOOP\r\n") == [RawCommand((b"a2 NOOP",))]


def test_literal_plus_over_limit_is_discarded_not_buffered() -> None:
    r = wire.CommandReader(max_literal=1000)
    (ev,) = r.feed(b"a1 APPEND INBOX {5000000+}\r\n")
    assert isinstance(ev, Rejected) and ev.fatal and ev.code == "TOOBIG"
    for _ in range(50):
        assert r.feed(b"z" * 100000) == []
        assert r.buffered < 100
    # after the literal the command line continues, even with another literal
    assert r.feed(b" more {3+}\r\nabc\r\na2 NOOP\r\n") == [RawCommand((b"a2 NOOP",))]


def test_literal_bigger_than_the_command_limit() -> None:
    r = wire.CommandReader(max_literal=100, max_command=150)
    assert r.feed(b"a1 X {100}\r\n") == [Continue("a1", 100)]
    events = r.feed(b"y" * 100 + b" {60}\r\n")
    assert len(events) == 1 and isinstance(events[0], Rejected)
    assert "Command too large" in events[0].text


@pytest.mark.parametrize("huge", [b"{99999999999999999999}", b"{18446744073709551616+}"])
def test_absurd_literal_sizes(huge: bytes) -> None:
    r = wire.CommandReader()
    (ev,) = r.feed(b"a1 LOGIN " + huge + b"\r\n")
    assert isinstance(ev, Rejected) and ev.status == "NO"


def test_overlong_line_is_skipped_to_its_end() -> None:
    r = wire.CommandReader(max_line=100)
    events = r.feed(b"t1 SEARCH " + b"x" * 200)
    assert events == [Rejected("t1", "Command line too long (at most 100 octets)")]
    assert r.buffered == 0
    assert r.feed(b"y" * 100000) == []  # still the same line: nothing more, nothing kept
    assert r.buffered == 0
    assert r.feed(b"zzz\r\nt2 NOOP\r\n") == [RawCommand((b"t2 NOOP",))]
    events = r.feed(
        b"t3 NOOP " + b"x" * 120 + b"\r\nt4 NOOP\r\n"
    )  # too long with the LF in one chunk
    assert events == [
        Rejected("t3", "Command line too long (at most 100 octets)"),
        RawCommand((b"t4 NOOP",)),
    ]
    assert events[0].response().startswith(b"t3 BAD ")  # type: ignore[union-attr]


def test_overlong_line_without_tag_gets_untagged_bad() -> None:
    r = wire.CommandReader(max_line=10)
    (ev,) = r.feed(b"(((((((((((((")
    assert isinstance(ev, Rejected) and ev.tag is None
    assert ev.response().startswith(b"* BAD ")


def test_fuzzed_input_never_raises() -> None:
    rng = random.Random(7888)
    pieces = [
        b"{",
        b"}",
        b"+",
        b"~",
        b"\r\n",
        b"\n",
        b" ",
        b'"',
        b"\\",
        b"(",
        b")",
        b"[",
        b"]",
        b"<",
        b">",
        b"0",
        b"5",
        b"*",
        b":",
        b",",
        b"&",
        b"-",
        b"A1",
        b"FETCH",
        b"SEARCH",
        b"UID",
        b"LOGIN",
        b"BODY[",
        b"\xff",
        b"\x00",
    ]
    for _ in range(300):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        r = wire.CommandReader(max_line=64, max_literal=16)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 8)
            for ev in r.feed(data[pos : pos + step]):
                if isinstance(ev, RawCommand):
                    try:
                        wire.parse_command(ev)
                    except ParseError as e:
                        assert e.response().endswith(b"\r\n")
            pos += step
        assert r.buffered <= 64 + 16 + 8


# -- commands ------------------------------------------------------------------


def test_simple_commands() -> None:
    for name in (
        "CAPABILITY",
        "NOOP",
        "LOGOUT",
        "STARTTLS",
        "CHECK",
        "CLOSE",
        "UNSELECT",
        "IDLE",
        "NAMESPACE",
        "EXPUNGE",
    ):
        cmd = wire.parse(f"x1 {name.lower()}".encode())
        assert (cmd.tag, cmd.name, cmd.uid) == ("x1", name, False)
    assert wire.parse(b"x1 EXPUNGE").args == wire.Expunge()
    assert wire.parse(b"x1 UID EXPUNGE 1:3,7").args == wire.Expunge(SequenceSet(((1, 3), (7, 7))))


def test_login_and_authenticate() -> None:
    assert wire.parse(
        b'a LOGIN "us\\"er" p\xc3\xa4ss'.replace(b"p\xc3\xa4ss", b"{5}\r\np\xc3\xa4ss")
    ).args == wire.Login('us"er', "päss")
    assert wire.parse(b"a LOGIN alice s3cr]t").args == wire.Login("alice", "s3cr]t")
    assert wire.parse(b"a AUTHENTICATE plain").args == wire.Authenticate("PLAIN")
    assert wire.parse(b"a AUTHENTICATE PLAIN AGFsaWNlAHB3").args == wire.Authenticate(
        "PLAIN", "AGFsaWNlAHB3"
    )
    assert wire.parse(b"a AUTHENTICATE PLAIN =").args == wire.Authenticate("PLAIN", "=")


def test_mailbox_commands_decode_modified_utf7() -> None:
    assert wire.parse(b"a SELECT inbox").args == wire.Select("inbox")
    assert wire.parse(b'a EXAMINE "&AOk-t&AOk-" (CONDSTORE)').args == wire.Select(
        "été", ("CONDSTORE",)
    )
    assert wire.parse(b"a CREATE Sent (USE (\\sent))").args == wire.Create("Sent", ("\\Sent",))
    assert (
        bad(b"a CREATE X (USE (\\Bogus))").response()
        == b"a NO [USEATTR] Unknown special use \\Bogus\r\n"
    )
    assert wire.parse(b'a RENAME "a b" {3}\r\nc/d').args == wire.Rename("a b", "c/d")
    for name in ("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETACL", "MYRIGHTS"):
        assert wire.parse(f"a {name} ~john/INBOX".encode()).args == wire.MailboxArgs("~john/INBOX")
    assert wire.parse(b"a STATUS INBOX (MESSAGES uidnext UNSEEN)").args == wire.Status(
        "INBOX", ("MESSAGES", "UIDNEXT", "UNSEEN")
    )


def test_list_and_lsub() -> None:
    assert wire.parse(b'a LIST "" *').args == wire.ListArgs("", ("*",))
    assert wire.parse(b"a LIST ~john/ %").args == wire.ListArgs("~john/", ("%",))
    assert wire.parse(b'a LSUB "" "INBOX/*"').args == wire.ListArgs("", ("INBOX/*",))
    args = wire.parse(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "&ZeVnLIqe-*") RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))'
    ).args
    assert args == wire.ListArgs(
        "",
        ("INBOX", "日本語*"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        frozenset({"CHILDREN", "SPECIAL-USE", "STATUS"}),
        ("MESSAGES", "UNSEEN"),
        True,
    )
    assert wire.parse(b'a LIST "" % RETURN (SPECIAL-USE)').args.returns == frozenset(
        {"SPECIAL-USE"}
    )
    assert wire.parse(b'a LIST () "" %').args.extended


def test_append() -> None:
    args = wire.parse(
        b'a APPEND Drafts (\\Draft $Label) " 7-Jul-1996 02:44:25 -0700" {5+}\r\nhello'
    ).args
    assert args == wire.Append(
        "Drafts",
        ("\\Draft", "$Label"),
        datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))),
        b"hello",
    )
    assert wire.parse(b"a APPEND INBOX {0+}\r\n\r\n").args == wire.Append("INBOX", (), None, b"")
    assert wire.parse(
        b'a APPEND INBOX "17-Jul-1996 02:44:25 +0000" {1+}\r\nx'
    ).args.date == datetime(1996, 7, 17, 2, 44, 25, tzinfo=UTC)
    assert wire.parse(b"a APPEND INBOX ~{3+}\r\na\x00b").args == wire.Append(
        "INBOX", (), None, b"a\x00b", True
    )


def test_fetch_items() -> None:
    args = wire.parse(
        b'a FETCH 1:*,3 (UID FLAGS BODY.PEEK[HEADER.FIELDS (From "Subject")]<0.100> BODY[1.2.MIME] RFC822.SIZE body[] BINARY[2] BINARY.SIZE[2])'
    ).args
    assert args.seqset == SequenceSet(((1, None), (3, 3)))
    assert args.atts == (
        FetchAtt("UID"),
        FetchAtt("FLAGS"),
        FetchAtt("BODY", Section((), "HEADER.FIELDS", ("FROM", "SUBJECT")), True, (0, 100)),
        FetchAtt("BODY", Section((1, 2), "MIME")),
        FetchAtt("RFC822.SIZE"),
        FetchAtt("BODY", Section()),
        FetchAtt("BINARY", Section((2,))),
        FetchAtt("BINARY.SIZE", Section((2,)), True),
    )
    assert wire.parse(b"a FETCH 1 fast").args.atts == tuple(
        FetchAtt(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
    )
    assert wire.parse(b"a FETCH 1 ALL").args.atts[-1] == FetchAtt("ENVELOPE")
    assert wire.parse(b"a FETCH 1 FULL").args.atts[-1] == FetchAtt("BODY")
    assert wire.parse(b"a FETCH 1 BODY[HEADER.FIELDS.NOT (Received)]").args.atts == (
        FetchAtt("BODY", Section((), "HEADER.FIELDS.NOT", ("RECEIVED",))),
    )
    # the response names the section as it was asked for (issue 12: not "(FROM)")
    twice = wire.parse(b"a FETCH 1 BODY[HEADER.FIELDS (FROM FROM)]").args.atts[0]
    assert str(twice.section) == "HEADER.FIELDS (FROM FROM)"
    assert wire.parse(
        b"a FETCH 2 (RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE BODYSTRUCTURE BODY INTERNALDATE)"
    ).args.atts[0] == FetchAtt("RFC822")
    assert wire.parse(b"a UID FETCH 4:2 BODY.PEEK[3.TEXT]").uid


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"a FETCH 1 (BODY.PEEK)", "Unknown FETCH item BODY.PEEK"),
        (b"a FETCH 1 (FLAGS ALL)", "ALL cannot be used inside a list"),
        (b"a FETCH 1 BOGUS", "Unknown FETCH item BOGUS"),
        (b"a FETCH 1 ()", "Expected FETCH items"),
        (b"a FETCH 1 BODY[0]", "Invalid section part number"),
        (b"a FETCH 1 BODY[01]", "Invalid section part number"),
        (b"a FETCH 1 BODY[MIME]", "Invalid section MIME"),
        (b"a FETCH 1 BODY[1.FOO]", "Invalid section"),
        (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "Expected header field names"),
        (b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]", "Invalid header field name"),
        (b"a FETCH 1 BODY[TEXT", "Expected ']'"),
        (b"a FETCH 1 BODY[]<0.0>", "Invalid partial"),
        (b"a FETCH 1 BODY[]<5>", "Invalid partial"),
        (b"a FETCH 1 BINARY[HEADER]", "BINARY takes part numbers only"),
        (b"a FETCH 1 (FLAGS", "Expected ')'"),
        (b"a FETCH 1 (FLAGS)x", "Unexpected extra arguments"),
    ],
)
def test_bad_fetch(data: bytes, text: str) -> None:
    e = bad(data)
    assert text in e.text and e.tag == "a" and e.status == "BAD"


def test_store() -> None:
    assert wire.parse(b"a STORE 1 +FLAGS.SILENT (\\seen $Foo \\SEEN)").args == wire.Store(
        SequenceSet(((1, 1),)), "add", True, ("\\Seen", "$Foo")
    )
    assert wire.parse(b"a UID STORE 1:* -flags \\Deleted \\Flagged").args == wire.Store(
        SequenceSet(((1, None),)), "remove", False, ("\\Deleted", "\\Flagged")
    )
    assert wire.parse(b"a STORE 2 FLAGS ()").args == wire.Store(
        SequenceSet(((2, 2),)), "set", False, ()
    )
    assert "Unknown STORE item" in bad(b"a STORE 1 XFLAGS (\\Seen)").text
    assert "is not a flag" in bad(b"a STORE 1 FLAGS (\\*)").text
    assert "Unexpected extra arguments" in bad(b"a STORE 1 FLAGS (a)b").text
    assert "Expected a space" in bad(b"a STORE 1 FLAGS \\Seen\\Draft").text


def test_copy_move() -> None:
    assert wire.parse(b"a COPY 1:3 Archive").args == wire.Copy(SequenceSet(((1, 3),)), "Archive")
    cmd = wire.parse(b'a UID MOVE 5 "&AMQ-rger"')
    assert (cmd.name, cmd.uid, cmd.args) == (
        "MOVE",
        True,
        wire.Copy(SequenceSet(((5, 5),)), "Ärger"),
    )


def test_enable_id_acl() -> None:
    assert wire.parse(b"a ENABLE utf8=accept CONDSTORE").args == wire.Enable(
        ("UTF8=ACCEPT", "CONDSTORE")
    )
    assert wire.parse(b"a ID NIL").args == wire.Id(None)
    assert wire.parse(b'a ID ("name" "Thunderbird" "version" NIL)').args == wire.Id(
        (("name", "Thunderbird"), ("version", None))
    )
    assert "RFC 2971" in bad(b"a ID (" + b'"k" "v" ' * 31 + b")").text
    assert wire.parse(b"a SETACL INBOX anyone@ +lrs").args == wire.SetAcl(
        "INBOX", "anyone@", "add", "lrs"
    )
    assert wire.parse(b'a SETACL INBOX "#staff" -wx').args == wire.SetAcl(
        "INBOX", "#staff", "remove", "wx"
    )
    assert wire.parse(b'a SETACL INBOX john ""').args == wire.SetAcl("INBOX", "john", "set", "")
    assert "Unknown rights: Z" in bad(b"a SETACL INBOX john lrZ").text
    assert wire.parse(b"a DELETEACL INBOX -john").args == wire.AclIdentifier("INBOX", "-john")
    assert wire.parse(b"a LISTRIGHTS INBOX john@other.dom").args == wire.AclIdentifier(
        "INBOX", "john@other.dom"
    )


@pytest.mark.parametrize(
    ("data", "tag", "text"),
    [
        (b"", None, "Empty command line"),
        (b"* NOOP", None, "Invalid tag"),
        (b"+ NOOP", None, "Invalid tag"),
        (b"(a NOOP", None, "Invalid tag"),
        (b"a", "a", "Missing command"),
        (b"a BOGUS", "a", "Unknown command BOGUS"),
        (b"a UID LOGIN x y", "a", "UID LOGIN is not a command"),
        (b"a NOOP extra", "a", "Unexpected extra arguments"),
        (b"a LOGIN alice", "a", "Missing arguments"),
        (b"a LOGIN {abc}", "a", "Invalid literal"),
        (b"a LOGIN {5", "a", "Invalid literal"),
        (b'a LOGIN "alice', "a", "Unterminated quoted string"),
        (b'a LOGIN "al\\ice" x', "a", "Invalid character or escape"),
        (b"a LOGIN al\x00ice x", "a", "NUL in command"),
        (b"a LOGIN ~{1+}\r\nx y", "a", "literal8 is only allowed in APPEND"),
        (b"a SELECT Gr\xc3\xbc\xc3\x9fe", "a", "8-bit characters must be modified UTF-7"),
        (b"a STATUS INBOX (MESSAGES BOGUS)", "a", "Unknown status item BOGUS"),
        (b"a STATUS INBOX ()", "a", "Expected status items"),
        (b'a LIST (BOGUS) "" *', "a", "Unknown LIST selection option"),
        (b'a LIST (RECURSIVEMATCH) "" *', "a", "RECURSIVEMATCH needs"),
        (b'a LIST "" * RETURN (BOGUS)', "a", "Unknown LIST return option"),
        (b'a LIST "" * EXTRA', "a", "Expected RETURN"),
        (b"a APPEND INBOX hello", "a", "APPEND needs the message as a literal"),
        (b'a APPEND INBOX "32-Jul-1996 02:44:25 -0700" {1+}\r\nx', "a", "Invalid date-time"),
        (b'a APPEND INBOX "7-Jul-1996 02:44" {1+}\r\nx', "a", "Invalid date-time"),
        (b"a APPEND INBOX (\\Seen {1+}\r\nx", "a", "Expected a flag"),
        (b"a APPEND INBOX (\\Seen\\Draft) {1+}\r\nx", "a", "Expected ')' after the flags"),
    ],
)
def test_bad_commands(data: bytes, tag: str | None, text: str) -> None:
    e = bad(data)
    assert e.tag == tag and text in e.text, e.text
    assert e.response().startswith((tag or "*").encode() + b" BAD ")


# -- sequence sets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        (b"1", ((1, 1),)),
        (b"*", ((None, None),)),
        (b"1:*,3,5:7", ((1, None), (3, 3), (5, 7))),
        (b"7:5", ((7, 5),)),
        (b"4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_sequence_sets(text: bytes, ranges: tuple) -> None:
    assert wire.parse_sequence_set(text) == SequenceSet(ranges)
    assert str(SequenceSet(ranges)) == text.decode()


@pytest.mark.parametrize(
    "text",
    [
        b"0",
        b"0:5",
        b"1:",
        b":1",
        b"a:b",
        b"1,,2",
        b"1,",
        b"1:2:3",
        b"4294967296",
        b"",
        b"01",
        b"$,1",
    ],
)
def test_invalid_sequence_sets(text: bytes) -> None:
    with pytest.raises(ValueError):
        wire.parse_sequence_set(text)


@pytest.mark.parametrize("text", [b"0", b"1:", b"a:b", b"1,,2", b"5x"])
def test_invalid_sequence_sets_are_bad_in_commands(text: bytes) -> None:
    e = bad(b"t FETCH " + text + b" FLAGS")
    assert e.tag == "t" and "sequence set" in e.text


def test_sequence_set_resolution() -> None:
    s = wire.parse_sequence_set("5:*,2,9:8")
    assert s.resolve(10) == [(2, 2), (5, 10)]
    assert s.resolve(3) == [(2, 5), (8, 9)]  # 5:* with 3 messages is 3:5
    assert s.select([1, 2, 4, 6, 9, 20]) == [2, 6, 9, 20]
    assert s.select([], largest=0) == []
    contains = s.matcher(10)
    assert [n for n in range(12) if contains(n)] == [2, 5, 6, 7, 8, 9, 10]
    assert s.highest() == 9
    assert wire.parse_sequence_set("$").saved


# -- search programs ---------------------------------------------------------------


def search_key(text: bytes) -> SearchKey:
    return wire.parse(b"s SEARCH " + text).args.key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (b"ALL", SearchKey("ALL")),
        (b"answered", SearchKey("ANSWERED")),
        (b"BCC x", SearchKey("BCC", ("x",))),
        (b"BEFORE 1-Feb-1994", SearchKey("BEFORE", (date(1994, 2, 1),))),
        (b'ON "01-feb-1994"', SearchKey("ON", (date(1994, 2, 1),))),
        (b"SINCE 29-Feb-2024", SearchKey("SINCE", (date(2024, 2, 29),))),
        (b"SENTBEFORE 1-Jan-2000", SearchKey("SENTBEFORE", (date(2000, 1, 1),))),
        (b"SENTON 1-Jan-2000", SearchKey("SENTON", (date(2000, 1, 1),))),
        (b"SENTSINCE 1-Jan-2000", SearchKey("SENTSINCE", (date(2000, 1, 1),))),
        (b'BODY "hello world"', SearchKey("BODY", ("hello world",))),
        (b"CC x", SearchKey("CC", ("x",))),
        (b"DELETED", SearchKey("DELETED")),
        (b"DRAFT", SearchKey("DRAFT")),
        (b"FLAGGED", SearchKey("FLAGGED")),
        (b"FROM {5+}\r\nalice", SearchKey("FROM", ("alice",))),
        (b'HEADER X-Spam ""', SearchKey("HEADER", ("X-Spam", ""))),
        (b"KEYWORD $Junk", SearchKey("KEYWORD", ("$Junk",))),
        (b"LARGER 100", SearchKey("LARGER", (100,))),
        (b"NEW", SearchKey("NEW")),
        (b"NOT SEEN", SearchKey("NOT", (SearchKey("SEEN"),))),
        (b"OLD", SearchKey("OLD")),
        (
            b"OR SEEN (FLAGGED DELETED)",
            SearchKey(
                "OR",
                (SearchKey("SEEN"), SearchKey("AND", (SearchKey("FLAGGED"), SearchKey("DELETED")))),
            ),
        ),
        (b"RECENT", SearchKey("RECENT")),
        (b"SEEN", SearchKey("SEEN")),
        (b"SMALLER 5", SearchKey("SMALLER", (5,))),
        (b"SUBJECT x", SearchKey("SUBJECT", ("x",))),
        (b"TEXT x", SearchKey("TEXT", ("x",))),
        (b"TO x", SearchKey("TO", ("x",))),
        (b"UID 1:*", SearchKey("UID", (SequenceSet(((1, None),)),))),
        (b"UNANSWERED", SearchKey("UNANSWERED")),
        (b"UNDELETED", SearchKey("UNDELETED")),
        (b"UNDRAFT", SearchKey("UNDRAFT")),
        (b"UNFLAGGED", SearchKey("UNFLAGGED")),
        (b"UNKEYWORD foo", SearchKey("UNKEYWORD", ("foo",))),
        (b"UNSEEN", SearchKey("UNSEEN")),
        (b"2:4,*", SearchKey("SEQ", (SequenceSet(((2, 4), (None, None))),))),
        (b"$", SearchKey("SEQ", (SequenceSet(saved=True),))),
        (b"(SEEN)", SearchKey("SEEN")),
        (b"SEEN  UNDELETED", SearchKey("AND", (SearchKey("SEEN"), SearchKey("UNDELETED")))),
    ],
)
def test_search_keys(text: bytes, key: SearchKey) -> None:
    assert search_key(text) == key


def test_search_charset() -> None:
    args = wire.parse(b'a SEARCH CHARSET utf-8 SUBJECT "Gr\xc3\xbc\xc3\x9fe"').args
    assert args == wire.Search("UTF-8", SearchKey("SUBJECT", ("Grüße",)))
    args = wire.parse(b"a UID SEARCH CHARSET US-ASCII BODY {6+}\r\n\xe6\x97\xa5\xe6\x9c\xac").args
    assert args.charset == "US-ASCII" and args.key == SearchKey("BODY", ("日本",))
    e = bad(b"a SEARCH CHARSET KOI8-R ALL")
    assert (e.status, e.code) == ("NO", "BADCHARSET (US-ASCII UTF-8)")
    assert e.response() == b"a NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset KOI8-R\r\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"", "Missing arguments"),
        (b"BOGUS", "Unknown search key BOGUS"),
        (b"FROM", "Missing arguments"),
        (b"BEFORE 31-Feb-2020", "Invalid date 31-Feb-2020"),
        (b"BEFORE 1-Foo-2020", "Invalid date"),
        (b"BEFORE 2020-01-01", "Invalid date"),
        (b"LARGER x", "Expected a size"),
        (b"LARGER 99999999999", "Invalid a size"),
        (b"OR SEEN", "Missing arguments"),
        (b"()", "Empty search key list"),
        (b"(SEEN", "Expected ')'"),
        (b"UID 0", "Invalid sequence set"),
        (b"HEADER a:b x", "Invalid header field name"),
        (b"CHARSET UTF-8", "Missing arguments"),
        (b"SEEN(FLAGGED)", "Expected a space"),
    ],
)
def test_bad_search(text: bytes, error: str) -> None:
    assert error in bad(b"s SEARCH " + text).text


def test_deeply_nested_search_is_refused_not_a_crash() -> None:
    assert "nested too deeply" in bad(b"s SEARCH " + b"NOT " * 5000 + b"SEEN").text
    assert "nested too deeply" in bad(b"s SEARCH " + b"(" * 5000 + b"SEEN" + b")" * 5000).text
    assert "nested too deeply" in bad(b"s SEARCH " + b"OR SEEN " * 5000 + b"SEEN").text


# -- modified UTF-7 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utf8", "utf7"),
    [
        ("INBOX", "INBOX"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("A&B", "A&-B"),
        ("&", "&-"),
        ("Ärger", "&AMQ-rger"),
        ("été", "&AOk-t&AOk-"),
        ("😀", "&2D3eAA-"),
        ("a/b c", "a/b c"),
        ("", ""),
    ],
)
def test_modified_utf7(utf8: str, utf7: str) -> None:
    assert wire.encode_mailbox(utf8) == utf7
    assert wire.decode_mailbox(utf7) == utf8
    assert wire.decode_mailbox(utf7.encode()) == utf8


@pytest.mark.parametrize(
    "text",
    [
        "&Jjo",  # unterminated
        "&AGE-",  # encodes "a", which must be written as itself
        "&ACA-",  # encodes a space
        "&AOk-&AOk-",  # two runs where one is the valid form
        "&A-",  # length that is no whole UTF-16 unit
        "&AO-",  # leftover bits
        "&AOkA-",  # odd number of octets
        "&2D0-",  # lone high surrogate
        "&Jjo!-",  # not base64
        "&U/BTFw-",  # "/" instead of ","
        "a\x01b",  # control character
        "&AAE-",  # control character, encoded
        "\u00e9",  # raw 8-bit
    ],
)
def test_invalid_modified_utf7(text: str) -> None:
    with pytest.raises(wire.Utf7Error):
        wire.decode_mailbox(text)


def test_modified_utf7_round_trips_random_names() -> None:
    rng = random.Random(3)
    alphabet = "abc&-/ ~*%äöü€日本語😀\u0100\uffff"
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        encoded = wire.encode_mailbox(name)
        assert encoded.isascii()
        assert wire.decode_mailbox(encoded) == name


# -- serialisers ---------------------------------------------------------------------


def test_strings() -> None:
    assert wire.string("hello world") == b'"hello world"'
    assert wire.string("") == b'""'
    assert wire.string('say "hi"') == b'{8}\r\nsay "hi"'
    assert wire.string("back\\slash") == b"{10}\r\nback\\slash"
    assert wire.string("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert wire.string("Grüße") == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert wire.string(b"\xff") == b"{1}\r\n\xff"
    assert wire.string("x" * 2000).startswith(b"{2000}\r\n")
    assert wire.nstring(None) == b"NIL"
    assert wire.nstring("NIL") == b'"NIL"'
    assert wire.astring("INBOX") == b"INBOX"
    assert wire.astring("nil") == b'"nil"'
    assert wire.astring("a b") == b'"a b"'
    assert wire.literal(b"a\x00b", binary=True) == b"~{3}\r\na\x00b"
    assert wire.mailbox("台北") == b'"&U,BTFw-"'
    assert wire.flag_list(["\\Seen", "$Forwarded"]) == b"(\\Seen $Forwarded)"
    assert wire.flag_list([]) == b"()"


def test_response_lines() -> None:
    assert wire.tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert wire.tagged("a1", "NO", "no\r\nway", "TRYCREATE") == b"a1 NO [TRYCREATE] no  way\r\n"
    assert wire.untagged("5 EXISTS") == b"* 5 EXISTS\r\n"
    assert wire.continuation() == b"+ Ready for literal data\r\n"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (837564265.0, b'"17-Jul-1996 00:44:25 +0000"'),
        (
            datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))),
            b'"17-Jul-1996 02:44:25 -0700"',
        ),
        (
            datetime(2024, 3, 5, 9, 8, 7, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            b'" 5-Mar-2024 09:08:07 +0530"',
        ),
        (datetime(2024, 3, 5, 9, 8, 7), b'" 5-Mar-2024 09:08:07 +0000"'),
    ],
)
def test_internal_date(value: float | datetime, text: bytes) -> None:
    assert wire.internal_date(value) == text
    assert wire.parse_date_time(text).timestamp() == (
        value if isinstance(value, float) else value.replace(tzinfo=value.tzinfo or UTC).timestamp()
    )


def test_list_status_search_lines() -> None:
    assert (
        wire.list_line("INBOX", ["\\HasNoChildren"]) == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    )
    assert wire.list_line("台北", (), command="LSUB") == b'* LSUB () "/" "&U,BTFw-"\r\n'
    assert wire.list_line("", ["\\Noselect"], delimiter=None) == b'* LIST (\\Noselect) NIL ""\r\n'
    assert wire.list_line("Sent", ["\\Sent"], extra=b'("CHILDINFO" ("SUBSCRIBED"))').endswith(
        b'"Sent" ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert (
        wire.status_line("INBOX", [("MESSAGES", 3), ("UNSEEN", 1)])
        == b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 1)\r\n'
    )
    assert wire.search_line([2, 5]) == b"* SEARCH 2 5\r\n"
    assert wire.search_line([]) == b"* SEARCH\r\n"
    assert wire.compact_set([7, 1, 2, 3, 9, 10, 3]) == "1:3,7,9:10"
    assert wire.compact_set([]) == ""
    assert wire.parse_sequence_set(wire.compact_set([5, 6, 8])).resolve(8) == [(5, 6), (8, 8)]


def test_idle_done() -> None:
    (done,) = wire.CommandReader().feed(b"done\r\n")
    assert wire.idle_done(done)  # type: ignore[arg-type]
    (other,) = wire.CommandReader().feed(b"a1 NOOP\r\n")
    assert not wire.idle_done(other)  # type: ignore[arg-type]


def test_login_accepts_an_unquoted_percent_user_name() -> None:
    """imaplib sends ``LOGIN user%domain "pw"`` unquoted; the Router's login
    form must reach it (issue 5 point 4)."""
    from waypost.protocols.imap import wire as w

    reader = w.CommandReader(65536, 1 << 20, 1 << 20)
    (event,) = reader.feed(b'a1 LOGIN alice%domain.dom "pw"\r\n')
    args = w.parse_command(event).args
    assert (args.user, args.password) == ("alice%domain.dom", "pw")
