"""POP3 wire format, the maildrop snapshot and the login guard, without sockets."""

from __future__ import annotations

import base64

import pytest

from waypost.protocols.pop3 import wire
from waypost.protocols.pop3.wire import Pop3Error

# -- responses ---------------------------------------------------------------


def test_responses_with_and_without_codes() -> None:
    assert wire.ok("2 320").to_bytes() == b"+OK 2 320\r\n"
    assert wire.ok().to_bytes() == b"+OK\r\n"
    assert wire.err("in use", wire.IN_USE).to_bytes() == b"-ERR [IN-USE] in use\r\n"
    assert wire.err("x", wire.SYS_TEMP).to_bytes() == b"-ERR [SYS/TEMP] x\r\n"
    # A status line stays one line whatever its text holds.
    assert wire.err("a\r\nb").to_bytes() == b"-ERR a  b\r\n"
    with pytest.raises(ValueError):
        wire.err("x", "bad code")


# -- commands ------------------------------------------------------------------


def test_parse_command() -> None:
    assert wire.parse_command(b"stat\r\n") == wire.Command("STAT", "")
    assert wire.parse_command(b"RETR 1\n") == wire.Command("RETR", "1")
    assert wire.parse_command(b"PASS with space s\r\n").arg == "with space s"
    assert wire.parse_command(b"PASS p\xc3\xa4ss\r\n").arg == "päss"


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"\r\n", "Empty command"),
        (b"   \r\n", "Empty command"),
        (b"1RETR\r\n", "keyword"),
        (b"RE-TR 1\r\n", "keyword"),
        (b"RETR\x001\r\n", "control"),
        (b"USER \xff\xfe\r\n", "UTF-8"),
        (b"USER " + b"a" * 260 + b"\r\n", "too long"),
    ],
)
def test_bad_command_lines(line: bytes, text: str) -> None:
    with pytest.raises(Pop3Error) as info:
        wire.parse_command(line)
    assert text in info.value.response.text
    assert info.value.response.to_bytes().startswith(b"-ERR ")


def test_line_of_exactly_255_octets_is_accepted() -> None:
    line = b"USER " + b"a" * (255 - 7) + b"\r\n"
    assert len(line) == 255
    assert wire.parse_command(line).verb == "USER"


def test_argument_counts() -> None:
    assert wire.Command("LIST", "").args(0, 1, "LIST [n]") == []
    assert wire.Command("LIST", "3").args(0, 1, "LIST [n]") == ["3"]
    assert wire.Command("LIST", "3 ").args(0, 1, "LIST [n]") == ["3"]
    assert wire.Command("TOP", "1 0").args(2, 2, "TOP n lines") == ["1", "0"]
    for arg, text in [
        ("", "Missing"),
        ("1", "Missing"),
        ("1 2 3", "Too many"),
        ("1  2", "single spaces"),
    ]:
        with pytest.raises(Pop3Error, match=text):
            wire.Command("TOP", arg).args(2, 2, "TOP n lines")


@pytest.mark.parametrize("text", ["0", "-1", "+1", "1.0", "x", "", " 1", "0x1", "1234567890", "١"])
def test_bad_message_numbers(text: str) -> None:
    with pytest.raises(Pop3Error, match="Invalid message number"):
        wire.parse_number(text)


def test_numbers_and_counts() -> None:
    assert wire.parse_number("1") == 1
    assert wire.parse_number("007") == 7
    assert wire.parse_count("0") == 0
    with pytest.raises(Pop3Error, match="line count"):
        wire.parse_count("-1")


def test_line_buffer_swallows_an_overlong_line_and_stays_in_step() -> None:
    buf = wire.LineBuffer(10)
    buf.feed(b"NOOP\r\n" + b"x" * 30)
    assert buf.next_line() == b"NOOP\r\n"
    assert buf.next_line() is None  # discarding, nothing buffered any more
    assert len(buf) == 0
    buf.feed(b"yyy\r\nSTAT\r\n")
    assert buf.next_line() is wire.LineBuffer.TOO_LONG
    assert buf.next_line() == b"STAT\r\n"
    buf.feed(b"a" * 12 + b"\r\n")
    assert buf.next_line() is wire.LineBuffer.TOO_LONG
    buf.feed(b"a" * 12 + b"\r\n")
    assert buf.next_line(100) == b"a" * 12 + b"\r\n"  # a larger limit for SASL lines


# -- multi-line responses ------------------------------------------------------


def test_multiline_dot_stuffing_and_line_ends() -> None:
    data = b".leading\r\nmid\n..two\r\n.\r\nend"
    out = b"".join(wire.multiline(data))
    assert out == b"..leading\r\nmid\r\n...two\r\n..\r\nend\r\n.\r\n"
    assert b"".join(wire.multiline(b"")) == b".\r\n"
    assert b"".join(wire.multiline(b"a\r\n")) == b"a\r\n.\r\n"


def test_multiline_in_chunks_is_the_same_as_at_once() -> None:
    data = b"".join(b".line %d\n" % i if i % 3 else b"line %d\r\n" % i for i in range(5000))
    whole = b"".join(wire.multiline(data, chunk=10**9))
    pieces = list(wire.multiline(data, chunk=100))
    assert len(pieces) > 100
    assert b"".join(pieces) == whole
    assert whole.count(b"\r\n..line") == len([i for i in range(5000) if i % 3])
    # Undo it as a client does: the original lines come back.
    lines = whole.split(b"\r\n")[:-2]
    assert [ln[1:] if ln.startswith(b"..") else ln for ln in lines] == data.replace(
        b"\r\n", b"\n"
    ).split(b"\n")[:-1]


def test_multiline_lines() -> None:
    assert wire.multiline_lines(["TOP", "UIDL"]) == b"TOP\r\nUIDL\r\n.\r\n"
    assert wire.multiline_lines([]) == b".\r\n"


# -- TOP -------------------------------------------------------------------------


MESSAGE = b"From: a\r\nSubject: s\r\n\r\nl1\r\nl2\r\nl3\r\n"


@pytest.mark.parametrize(
    ("message", "lines", "expected"),
    [
        (MESSAGE, 0, b"From: a\r\nSubject: s\r\n\r\n"),
        (MESSAGE, 2, b"From: a\r\nSubject: s\r\n\r\nl1\r\nl2\r\n"),
        (MESSAGE, 99, MESSAGE),
        (b"From: a\r\nSubject: s\r\n", 5, b"From: a\r\nSubject: s\r\n"),  # no body at all
        (b"From: a\r\nno blank line and no end", 1, b"From: a\r\nno blank line and no end"),
        (b"\r\nbody only\r\nmore\r\n", 1, b"\r\nbody only\r\n"),  # empty header
        (b"A: 1\n\nbody\nmore\n", 1, b"A: 1\n\nbody\n"),  # bare LF
        (b"A: 1\r\n\nbody\r\n", 0, b"A: 1\r\n\n"),  # mixed
        (b"", 3, b""),
        (b"A: 1\r\n\r\nlast line without end", 5, b"A: 1\r\n\r\nlast line without end"),
    ],
)
def test_top(message: bytes, lines: int, expected: bytes) -> None:
    assert wire.top(message, lines) == expected


# -- SASL PLAIN and APOP ---------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_parse_plain() -> None:
    assert wire.parse_plain(b64(b"\0alice\0pw")) == ("", "alice", "pw")
    assert wire.parse_plain(b64(b"alice\0alice\0p w")) == ("alice", "alice", "p w")
    assert wire.parse_plain(b64("\0ä\0ö".encode())) == ("", "ä", "ö")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "base64"),
        ("YWJ", "base64"),
        ("YW Jj", "base64"),
        ("=", "PLAIN"),
        (b64(b"alice\0pw"), "PLAIN"),
        (b64(b"\0\0pw"), "PLAIN"),
        (b64(b"\0a\0b\0c"), "PLAIN"),
        (b64(b"\0\xff\0pw"), "UTF-8"),
    ],
)
def test_bad_plain(text: str, message: str) -> None:
    with pytest.raises(Pop3Error, match=message):
        wire.parse_plain(text)


def test_apop_digest_rfc1939_example() -> None:
    stamp = "<1896.697170952@dbc.mtview.ca.us>"
    digest = "c4c9334bac560ecc979e58001b3e22fb"
    assert wire.apop_digest(stamp, "tanstaaf") == digest
    assert wire.apop_matches(stamp, "tanstaaf", digest.upper())
    assert not wire.apop_matches(stamp, "other", digest)
    assert wire.apop_timestamp(1, "2.3", "h.dom") == "<1.2.3@h.dom>"
    assert wire.is_md5_hex(digest) and wire.is_md5_hex(digest.upper())
    assert not wire.is_md5_hex(digest[:-1]) and not wire.is_md5_hex("g" * 32)
