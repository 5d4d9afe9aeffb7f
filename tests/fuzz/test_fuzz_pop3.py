"""Fuzz targets for the POP3 wire (``protocols/pop3/wire.py`` and
``stuffing.py``): command lines and their arguments, SASL PLAIN, multi-line
responses (dot-stuffing) and TOP.

Properties: any command line parses or is refused with :class:`Pop3Error`
(one ``-ERR`` line), never another exception, and what parses re-parses
unchanged; message numbers are strict decimals from 1; a PLAIN message
parses or is refused, and what parses re-encodes to the same triple; a
multi-line response does not depend on the chunk size and reads back (with
SMTP's DATA reader, the same unstuffing rules) as the message with CRLF line
ends; TOP's answer does not depend on how the message is cut and is a prefix
of the whole answer.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, cut, mutants, seed_ids, seeds, text_mutants

from waypost.protocols.pop3.stuffing import TopCutter
from waypost.protocols.pop3.wire import (
    Pop3Error,
    multiline,
    parse_command,
    parse_count,
    parse_number,
    parse_plain,
)
from waypost.protocols.smtp.wire import DataReader

COMMANDS = seeds("pop3/commands.lines")
SASL = [s.decode() for s in seeds("pop3/sasl.lines")]
MESSAGES = seeds("pop3/messages.lines")
TOKENS = [" ", "  ", "1", "0", "-", "+", "99999999999", "USER ", "PASS ", "TOP ", "LIST ",
          "\r\n", "\n", "\r", "\x00", "\xff", "é", "x" * 250]


def check_error(exc: Pop3Error) -> None:
    line = exc.response.to_bytes()
    assert line.startswith(b"-ERR") and line.endswith(b"\r\n") and line.count(b"\n") == 1


def check_command(line: bytes) -> None:
    try:
        cmd = parse_command(line)
    except Pop3Error as exc:
        check_error(exc)
        return
    assert cmd.verb.isascii() and cmd.verb.isalpha() and cmd.verb == cmd.verb.upper()
    again = f"{cmd.verb} {cmd.arg}" if cmd.arg or line.rstrip(b"\r\n").endswith(b" ") else cmd.verb
    end = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
    assert parse_command(again.encode() + end) == cmd
    for least, most in ((0, 0), (1, 1), (0, 1), (2, 2)):
        try:
            args = cmd.args(least, most, "X")
        except Pop3Error as exc:
            check_error(exc)
            continue
        assert least <= len(args) <= most and all(args)
        for arg in args:
            check_number(arg)


def check_number(text: str) -> None:
    try:
        number = parse_number(text)
    except Pop3Error as exc:
        check_error(exc)
    else:
        assert number >= 1 and str(number) == text.lstrip("0")
    try:
        count = parse_count(text)
    except Pop3Error as exc:
        check_error(exc)
    else:
        assert count >= 0 and int(text) == count


@pytest.mark.parametrize("line", COMMANDS, ids=seed_ids(COMMANDS))
def test_command_seeds(line: bytes) -> None:
    check_command(line)


@TARGET
@given(mutants(COMMANDS, TOKENS))
def test_commands(line: bytes) -> None:
    check_command(line)


def check_plain(text: str) -> None:
    try:
        authzid, login, password = parse_plain(text)
    except Pop3Error as exc:
        check_error(exc)
        return
    assert login
    raw = "\0".join((authzid, login, password)).encode()
    assert parse_plain(base64.b64encode(raw).decode()) == (authzid, login, password)


@pytest.mark.parametrize("text", SASL, ids=seed_ids(SASL))
def test_plain_seeds(text: str) -> None:
    check_plain(text)


@TARGET
@given(text_mutants(SASL, ["=", "A", "/", "+", "\0", " "]))
def test_plain_messages(text: str) -> None:
    check_plain(text)


@TARGET
@given(st.text(max_size=20), st.text(min_size=1, max_size=20), st.text(max_size=40))
def test_plain_round_trips(authzid: str, login: str, password: str) -> None:
    raw = "\0".join((authzid, login, password)).encode()
    if raw.count(b"\0") == 2:
        check_plain(base64.b64encode(raw).decode())


def expected_body(message: bytes) -> bytes:
    body = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def check_multiline(message: bytes, chunk: int) -> None:
    whole = b"".join(multiline(message))
    assert b"".join(multiline(message, chunk)) == whole
    assert whole.endswith(b".\r\n")
    reader = DataReader()
    reader.feed(whole)
    assert reader.done and reader.leftover == b""
    assert reader.body == expected_body(message)


@pytest.mark.parametrize("message", MESSAGES, ids=seed_ids(MESSAGES))
def test_multiline_seeds(message: bytes) -> None:
    for chunk in (1, 2, 3, 7):
        check_multiline(message, chunk)


@TARGET
@given(mutants(MESSAGES, [".", "\r\n", "\n", "\r", "\r\n.\r\n", ".."]), st.integers(1, 64))
def test_multiline_responses(message: bytes, chunk: int) -> None:
    check_multiline(message, chunk)


@TARGET
@given(mutants(MESSAGES, [".", "\r\n", "\n", "\r", "\r\n\r\n", "\n\n"]), st.integers(0, 5),
       st.data())
def test_top_cuts_anywhere(message: bytes, lines: int, data: st.DataObject) -> None:
    chunks = cut(message, data)
    whole = TopCutter(lines).feed(message)
    cutter = TopCutter(lines)
    assert b"".join(cutter.feed(c) for c in chunks) == whole
    assert message.startswith(whole)
    assert TopCutter(lines + 1).feed(message).startswith(whole)
