"""Fuzz targets for the SMTP wire (``protocols/smtp/wire.py``): command
lines, MAIL and RCPT paths and parameters, replies, xtext and the DATA reader.

Properties: every input parses or is refused with :class:`CommandError`
(a 5xx reply; :class:`ReplySyntaxError` for replies), never another
exception; what parses re-serialises to an equal parse (commands, MAIL and
RCPT with their parameters, replies, xtext); the DATA reader's result does
not depend on how the input is cut into chunks, and reads back exactly what
``dot_stuff`` wrote.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, cut, mutants, seed_ids, seeds, text_mutants

from waypost.protocols.smtp.wire import (
    DATA_END,
    CommandError,
    DataReader,
    LineBuffer,
    ReplySyntaxError,
    dot_stuff,
    parse_command,
    parse_mail,
    parse_rcpt,
    parse_reply,
    xtext_decode,
    xtext_encode,
)
from waypost.services.router.address import AddressError, parse_address

EXTENSIONS = ("SIZE", "8BITMIME", "SMTPUTF8", "DSN", "AUTH")
TOKENS = ["<", ">", "@", ":", ",", '"', "\\", " ", "=", "+", "+2B", "[", "]", "IPv6:", "::1",
          "FROM:", "TO:", "SIZE=", "BODY=", "RET=", "ENVID=", "AUTH=", "NOTIFY=", "ORCPT=",
          "rfc822;", "SMTPUTF8", "\r\n", "\n", "\r", "\x00", "é", "\xff", "%", "!", ".", "9" * 21]

COMMANDS = seeds("smtp/commands.lines")
MAILS = [s.decode("utf-8", "replace") for s in seeds("smtp/mail.lines")]
RCPTS = [s.decode("utf-8", "replace") for s in seeds("smtp/rcpt.lines")]
REPLIES = seeds("smtp/replies.lines")
BODIES = seeds("smtp/data.lines")


def refused_properly(exc: CommandError) -> None:
    assert 500 <= exc.reply.code <= 599
    assert exc.reply.enhanced.startswith("5.")


# -- command lines ---------------------------------------------------------------


def check_command(line: bytes) -> None:
    try:
        cmd = parse_command(line)
    except CommandError as exc:
        assert exc.reply.code == 500
        return
    assert cmd.verb.isascii() and cmd.verb.isalnum() and cmd.verb == cmd.verb.upper()
    assert cmd.arg == cmd.arg.rstrip()
    assert all((ch >= " " and ch != "\x7f") or ch == "\t" for ch in cmd.arg)  # tab tolerated
    again = f"{cmd.verb} {cmd.arg}\r\n" if cmd.arg else f"{cmd.verb}\r\n"
    assert parse_command(again.encode("utf-8")) == cmd


@pytest.mark.parametrize("line", COMMANDS, ids=seed_ids(COMMANDS))
def test_command_seeds(line: bytes) -> None:
    check_command(line)


@TARGET
@given(mutants(COMMANDS, TOKENS))
def test_command_lines(line: bytes) -> None:
    check_command(line)


@TARGET
@given(st.lists(mutants(COMMANDS, TOKENS), max_size=6), st.data())
def test_line_buffer_cuts_anywhere(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(lines)
    whole = LineBuffer()
    whole.feed(stream)
    pieces = LineBuffer()

    def drain(buf: LineBuffer) -> list[bytes | str]:
        out: list[bytes | str] = []
        for _ in range(len(stream) + 2):
            try:
                line = buf.next_line()
            except CommandError:
                out.append("too long")
                continue
            if line is None:
                break
            out.append(line)
        return out

    got: list[bytes | str] = []
    for chunk in cut(stream, data):
        pieces.feed(chunk)
        got += drain(pieces)
    assert got == drain(whole)


# -- MAIL and RCPT ---------------------------------------------------------------


def check_mail(arg: str) -> None:
    try:
        mail = parse_mail(arg)
    except CommandError as exc:
        refused_properly(exc)
        return
    params = " ".join(mail.params.to_args(EXTENSIONS))
    again = parse_mail(f"FROM:<{mail.address}> {params}".rstrip())
    assert again == mail
    if mail.address:
        try:
            parse_address(mail.address)
        except AddressError:
            pass


def check_rcpt(arg: str, smtputf8: bool) -> None:
    try:
        rcpt = parse_rcpt(arg, smtputf8)
    except CommandError as exc:
        refused_properly(exc)
        return
    assert rcpt.address
    assert smtputf8 or rcpt.address.isascii()
    params = " ".join(rcpt.params.to_args(EXTENSIONS))
    assert parse_rcpt(f"TO:<{rcpt.address}> {params}".rstrip(), smtputf8) == rcpt
    try:
        parse_address(rcpt.address)
    except AddressError:
        pass


@pytest.mark.parametrize("arg", MAILS, ids=seed_ids(MAILS))
def test_mail_seeds(arg: str) -> None:
    check_mail(arg)


@TARGET
@given(text_mutants(MAILS, TOKENS))
def test_mail_arguments(arg: str) -> None:
    check_mail(arg)


@pytest.mark.parametrize("arg", RCPTS, ids=seed_ids(RCPTS))
def test_rcpt_seeds(arg: str) -> None:
    check_rcpt(arg, False)
    check_rcpt(arg, True)


@TARGET
@given(text_mutants(RCPTS, TOKENS), st.booleans())
def test_rcpt_arguments(arg: str, smtputf8: bool) -> None:
    check_rcpt(arg, smtputf8)


@TARGET
@given(st.text())
def test_xtext_round_trips(value: str) -> None:
    encoded = xtext_encode(value)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert xtext_decode(encoded) == value


@TARGET
@given(text_mutants(["a+2Bb", "+C3+A9", "+ZZ", "plain", "+", "+4", "+ff+fe"], ["+", "+2B", "="]))
def test_xtext_decodes_or_refuses(text: str) -> None:
    try:
        value = xtext_decode(text)
    except (ValueError, UnicodeDecodeError):
        return
    assert xtext_decode(xtext_encode(value)) == value


# -- replies ---------------------------------------------------------------------


def check_reply(data: bytes) -> None:
    lines = data.splitlines(keepends=True)
    try:
        reply = parse_reply(lines)
    except ReplySyntaxError:
        return
    assert 200 <= reply.code <= 599
    again = parse_reply(reply.to_bytes().splitlines(keepends=True))
    assert (again.code, again.enhanced) == (reply.code, reply.enhanced)
    assert again.lines == [line.rstrip(" ") for line in reply.lines]


@pytest.mark.parametrize("data", REPLIES, ids=seed_ids(REPLIES))
def test_reply_seeds(data: bytes) -> None:
    check_reply(data)


@TARGET
@given(mutants(REPLIES, ["250", "-", " ", "2.1.0 ", "5.7.1", "\r\n", "\n", "\r", "\xff"]))
def test_replies(data: bytes) -> None:
    check_reply(data)


# -- DATA ------------------------------------------------------------------------


def read_data(chunks: list[bytes], **kw: int | bool) -> DataReader:
    reader = DataReader(**kw)  # type: ignore[arg-type]
    for chunk in chunks:
        reader.feed(chunk)
    return reader


def summary(reader: DataReader) -> tuple[object, ...]:
    return (reader.done, reader.body, reader.leftover, reader.size, reader.bare_lf,
            reader.bare_cr, reader.oversized)


@TARGET
@given(mutants(BODIES, [".", "\r\n", "\n", "\r", "\r\n.\r\n", "..", "x" * 50]), st.data(),
       st.booleans())
def test_data_reader_cuts_anywhere(stream: bytes, data: st.DataObject, normalize: bool) -> None:
    chunks = cut(stream, data)
    limits = {"normalize": normalize, "flush_at": 16, "max_size": 10_000}
    whole = read_data([stream], **limits)
    pieces = read_data(chunks, **limits)
    assert whole.done == (stream.startswith(b".\r\n") or b"\r\n.\r\n" in stream)
    assert pieces.done == whole.done
    if not whole.done:  # what is still buffered differs; ending the data flushes it
        whole.feed(b"\r\n.\r\n")
        pieces.feed(b"\r\n.\r\n")
    assert summary(pieces) == summary(whole)


@pytest.mark.parametrize("body", BODIES, ids=seed_ids(BODIES))
def test_data_seeds_survive_dot_stuffing(body: bytes) -> None:
    check_stuffing(body)


@TARGET
@given(mutants(BODIES, [".", "\r\n", "\n", "\r", "\r\n.\r\n", ".."]))
def test_dot_stuffed_bodies_read_back(body: bytes) -> None:
    check_stuffing(body)


def check_stuffing(body: bytes) -> None:
    """What the client writes, the server reads: no early end (smuggling),
    nothing after the terminator, the body with CRLF line ends."""
    reader = read_data([dot_stuff(body) + DATA_END], normalize=True)
    assert reader.done and reader.leftover == b""
    want = dot_stuff(body).replace(b"\r\n.", b"\r\n")
    if want.startswith(b"."):
        want = want[1:]
    assert reader.body == want
    assert not reader.has_bare_newlines
