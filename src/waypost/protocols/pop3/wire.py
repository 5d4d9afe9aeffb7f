"""POP3 wire format, pure: no sockets, no clocks, no storage.

The session hands bytes in and gets bytes (or a :class:`Pop3Error` carrying
the exact ``-ERR`` line) back, so every parsing rule is testable on its own:

* command lines: at most 255 octets with the CRLF (RFC 2449 §4), printable
  text only, keyword and arguments separated by single spaces; message
  numbers and line counts are strict decimals, so ``-1``, ``+1``, ``1.0``
  or ``99999999999`` are refused instead of half-understood;
* responses: ``+OK`` / ``-ERR`` with the RFC 2449 / RFC 3206 response codes
  (``[AUTH]``, ``[IN-USE]``, ``[SYS/TEMP]``, ...);
* multi-line responses: CRLF line ends, dot-stuffing and the final
  ``.`` (:mod:`~waypost.protocols.pop3.stuffing`, which works on chunks
  cut anywhere, so a large message is streamed, never held whole);
* TOP: the header plus the first *n* body lines, also for broken messages
  (no blank line: all header; a blank first line: no header);
* SASL PLAIN (RFC 4616) and the APOP digest (RFC 1939 §7).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from waypost.protocols import lines
from waypost.protocols.pop3.stuffing import DotStuffer, TopCutter

MAX_COMMAND = 255
"""Longest command line in octets, CRLF included (RFC 2449 §4)."""

MAX_SASL_LINE = 8192
"""Longest SASL continuation line. RFC 5034 limits only the AUTH command
line itself; a client answering ``+ `` may need more (long passwords in
base64), but not unboundedly more."""

CRLF = b"\r\n"
MULTILINE_END = b".\r\n"
CHUNK = 65536
"""Multi-line responses are produced in pieces of about this many octets."""

# RFC 2449 §6 (IN-USE, LOGIN-DELAY) and RFC 3206 (SYS/TEMP, SYS/PERM, AUTH).
IN_USE = "IN-USE"
LOGIN_DELAY = "LOGIN-DELAY"
SYS_TEMP = "SYS/TEMP"
SYS_PERM = "SYS/PERM"
AUTH = "AUTH"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYWORD = re.compile(r"[A-Za-z]{1,40}")
_NUMBER = re.compile(r"[0-9]{1,9}")
_CODE = re.compile(r"[A-Z][A-Z0-9-]*(?:/[A-Z][A-Z0-9-]*)*")


# --------------------------------------------------------------------------
# Responses


@dataclass(frozen=True, slots=True)
class Response:
    """One status line. ``code`` is an RFC 2449 response code without the
    brackets (``"IN-USE"``), or ``""``."""

    ok: bool
    text: str = ""
    code: str = ""

    def __post_init__(self) -> None:
        if self.code and not _CODE.fullmatch(self.code):
            raise ValueError(f"bad response code {self.code!r}")

    def to_bytes(self) -> bytes:
        status = "+OK" if self.ok else "-ERR"
        parts = [status]
        if self.code:
            parts.append(f"[{self.code}]")
        # A status line is one line, whatever the text held.
        text = _CONTROL.sub(" ", self.text).strip()
        if text:
            parts.append(text)
        return " ".join(parts).encode("utf-8", "replace") + CRLF


def ok(text: str = "", code: str = "") -> Response:
    return Response(True, text, code)


def err(text: str, code: str = "") -> Response:
    return Response(False, text, code)


class Pop3Error(Exception):
    """A client error; ``response`` is the ``-ERR`` line to send."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.response = err(text, code)


# --------------------------------------------------------------------------
# Commands


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a RETR ~1 us of setattr calls
class Command:
    """``verb`` upper-cased; ``arg`` is everything after the first space,
    kept as sent (PASS may contain spaces, RFC 1939 §7)."""

    verb: str
    arg: str = ""

    def args(self, least: int, most: int, usage: str) -> list[str]:
        """The arguments, between ``least`` and ``most`` of them, separated by
        single spaces; anything else is an error naming ``usage``."""
        arg = self.arg.rstrip(" ")  # a trailing space is harmless
        if not arg:
            parts: list[str] = []
        else:
            parts = arg.split(" ")
            if "" in parts:
                raise Pop3Error(f"Syntax: {usage} (arguments separated by single spaces)")
        if len(parts) < least:
            raise Pop3Error(f"Missing argument; syntax: {usage}")
        if len(parts) > most:
            raise Pop3Error(f"Too many arguments; syntax: {usage}")
        return parts


def strip_eol(line: bytes) -> bytes:
    """The line without its CRLF (or the bare LF many clients send)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def decode_line(line: bytes) -> str:
    """A command or SASL line as text: UTF-8 (passwords may be), no controls."""
    try:
        text = strip_eol(line).decode("utf-8")
    except UnicodeDecodeError:
        raise Pop3Error("Invalid characters in command (not UTF-8)") from None
    if _CONTROL.search(text):
        raise Pop3Error("Invalid characters in command (control characters)")
    return text


def parse_command(line: bytes) -> Command:
    """Split one command line (terminator included or not)."""
    if len(line) > MAX_COMMAND:
        raise Pop3Error(f"Command line too long ({MAX_COMMAND} octets at most)")
    text = decode_line(line)
    if not text.strip():
        raise Pop3Error("Empty command")
    verb, _, arg = text.partition(" ")
    if not _KEYWORD.fullmatch(verb):
        raise Pop3Error("Syntax error: a command starts with a keyword")
    return Command(verb.upper(), arg)


def parse_number(text: str, what: str = "message number") -> int:
    """A message number: decimal, 1 or more."""
    number = int(text) if _NUMBER.fullmatch(text) else 0
    if number < 1:
        raise Pop3Error(f"Invalid {what} {text[:20]!r}: expected a number from 1")
    return number


def parse_count(text: str) -> int:
    """TOP's line count: decimal, 0 or more."""
    if not _NUMBER.fullmatch(text):
        raise Pop3Error(f"Invalid line count {text[:20]!r}: expected a number from 0")
    return int(text)


class LineBuffer(lines.LineBuffer):
    """POP3 command lines (RFC 2449: 255 octets by default)."""

    def __init__(self, limit: int = MAX_COMMAND) -> None:
        super().__init__(limit)


# --------------------------------------------------------------------------
# Multi-line responses


def multiline(data: bytes, chunk: int = CHUNK) -> Iterator[bytes]:
    """The body of a multi-line response: ``data`` with CRLF line ends,
    dot-stuffed, ending in CRLF and the terminating ``.`` line, in pieces of
    about ``chunk`` octets (the caller writes and drains between them).
    The stuffing is :class:`~waypost.protocols.pop3.stuffing.DotStuffer`'s."""
    stuffer = DotStuffer()
    view = memoryview(data)
    for pos in range(0, len(data), chunk):
        yield stuffer.feed(bytes(view[pos : pos + chunk]))
    yield stuffer.end()


def multiline_lines(lines: Iterable[str]) -> bytes:
    """A short multi-line response from text lines (CAPA, LIST, UIDL)."""
    body = b"".join(line.encode("utf-8") + CRLF for line in lines)
    return b"".join(multiline(body))


def top(message: bytes, lines: int) -> bytes:
    """The header, the blank line after it and the first ``lines`` body lines
    (see :class:`~waypost.protocols.pop3.stuffing.TopCutter`)."""
    return TopCutter(lines).feed(message)


# --------------------------------------------------------------------------
# SASL PLAIN and APOP


def decode_base64(text: str) -> bytes:
    """Strict base64 (RFC 5034 §4); ``=`` alone is the empty response."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Pop3Error("Invalid base64 data") from None


def parse_plain(text: str) -> tuple[str, str, str]:
    """(authzid, login, password) from a base64 SASL PLAIN message (RFC 4616)."""
    raw = decode_base64(text)
    parts = raw.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        raise Pop3Error("Invalid PLAIN message: expected authzid NUL login NUL password")
    try:
        authzid, login, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise Pop3Error("Invalid PLAIN message: not UTF-8") from None
    return authzid, login, password


def apop_timestamp(pid: int, unique: str, hostname: str) -> str:
    """The greeting's ``<...>`` token (RFC 1939 §7). It must never repeat,
    also across restarts (a repeated one would let a recorded APOP login be
    replayed): ``unique`` is a clock and random part from the caller."""
    return f"<{pid}.{unique}@{hostname}>"


def apop_digest(timestamp: str, secret: str) -> str:
    return hashlib.md5((timestamp + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def is_md5_hex(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{32}", text) is not None


def apop_matches(timestamp: str, secret: str, digest: str) -> bool:
    return hmac.compare_digest(apop_digest(timestamp, secret), digest.lower())
