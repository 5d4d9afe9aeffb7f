"""Fuzz targets for the sessions behind the parsers: mutated IMAP commands
(logged in, INBOX selected), SMTP commands (after EHLO) and POP3 commands
(logged in) sent to a real ``waypost serve`` over sockets, seeded with the
wire corpora.

Property: every command gets a well-formed answer (IMAP: untagged, ``+`` or
tagged lines, the tagged one ``OK``/``NO``/``BAD``, never ``NO
[SERVERBUG]``; SMTP: replies that parse, never ``451 4.3.0``; POP3:
``+OK``/``-ERR`` lines and whole multi-line answers, never ``[SYS/TEMP]``), and the
server logs no traceback. A command that leaves the connection waiting
(IDLE, AUTHENTICATE, STARTTLS, LOGOUT) is answered and the client
reconnects; IMAP literals are sent as complete LITERAL+ literals, so APPEND
and CATENATE are fuzzed too. The wire parsers have their own targets
(``test_fuzz_imap.py``, ``test_fuzz_smtp.py``); these check that the
sessions turn every parse error into the protocol's own answer.
"""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from tests.support.fuzz import TARGET, mutants, seeds
from tests.support.imap_raw import RawImap
from tests.support.server import WaypostServer

from waypost.protocols.smtp.wire import parse_reply_line
from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "session-fuzz-1"
USER = "alice@main.dom"
TIMEOUT = 20
IMAP_COMMANDS = [line.partition(b" ")[2] for line in seeds("imap/commands.lines")]
SMTP_COMMANDS = [line.rstrip(b"\r\n") for line in seeds("smtp/commands.lines")]
POP3_COMMANDS = [line.rstrip(b"\r\n") for line in seeds("pop3/commands.lines")]
TOKENS = [" ", "(", ")", "[", "]", "<", ">", '"', "\\", "*", ":", ",", "$", "0", "1",
          "4294967296", "{3}", "{3+}", "NIL", "UID ", "\x00", "\xff", "é", "@", "="]
_LITERAL_AT_END = re.compile(rb"~?\{\d*\+?\}$")
_tags = itertools.count(1)


@dataclass
class World:
    server: WaypostServer
    log_seen: int = 0
    conns: dict[str, object] = field(default_factory=dict)

    def new_log(self) -> str:
        """What the server logged since the last call."""
        with open(self.server.log, "rb") as f:
            f.seek(self.log_seen)
            data = f.read()
        self.log_seen += len(data)
        return data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("sessionfuzz") / "var"
    server = WaypostServer(data, log_level="INFO").init()
    svc = open_services(data)
    try:
        svc.directory.create_account("alice", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        access = MailAccess(svc)
        access.ensure_inbox(USER)
        for data_ in seeds("mime")[:12]:
            access.append(USER, "INBOX", data_ or b"\r\n")
    finally:
        svc.close()
    server.start()
    try:
        yield World(server)
    finally:
        server.stop()


def one_line(data: bytes) -> bytes:
    """A single command line that leaves no literal open (the server would wait)."""
    line = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return line + b" x" if _LITERAL_AT_END.search(line) else line


_LITERAL = re.compile(rb"(~?)\{(\d{1,5})\+?\}$")


def with_literals(data: bytes) -> bytes:
    """One IMAP command whose literals are all LITERAL+ (RFC 7888) and
    complete, so the server never waits for us: line ends elsewhere become
    spaces, short literal data is padded, and the command ends in CRLF."""
    out = bytearray()
    pos = 0
    for _ in range(len(data) + 1):
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        line = data[pos:end].rstrip(b"\r").replace(b"\r", b" ")
        m = _LITERAL.search(line)
        if m is None or newline < 0:
            rest = data[end:].replace(b"\r", b" ").replace(b"\n", b" ")
            return bytes(out + one_line(line + rest))
        size = int(m.group(2))
        literal = data[newline + 1 : newline + 1 + size].ljust(size, b"x")
        out += line[: m.start()] + b"%s{%d+}\r\n" % (m.group(1), size) + literal
        pos = newline + 1 + size
    return bytes(out)


def no_traceback(world: World) -> None:
    log = world.new_log()
    assert "Traceback" not in log, log[-3000:]


# -- IMAP ------------------------------------------------------------------------


def imap(world: World) -> RawImap:
    conn = world.conns.get("imap")
    if conn is None:
        conn = RawImap(world.server.port("IMAPPort"), TIMEOUT)
        conn.login(USER, PASSWORD)
        assert conn.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
        world.conns["imap"] = conn
    assert isinstance(conn, RawImap)
    return conn


def imap_exchange(world: World, payload: bytes) -> None:
    conn = imap(world)
    tag = f"fz{next(_tags)}".encode()
    try:
        conn.sock.sendall(tag + b" " + with_literals(payload) + b"\r\n")
        for _ in range(100_000):
            line = conn.line()
            assert b"SERVERBUG" not in line, line
            assert line[:1] in (b"*", b"+") or line.startswith(tag + b" "), line
            if line.startswith(tag + b" "):
                assert line.split(b" ")[1] in (b"OK", b"NO", b"BAD"), line
                return
            if line.startswith((b"+", b"* BYE")):
                break  # IDLE, AUTHENTICATE or LOGOUT: start afresh
    except ConnectionError:
        pass  # STARTTLS (we speak no TLS), LOGOUT, too many errors
    forget(world, "imap")


@TARGET
@given(mutants(IMAP_COMMANDS, TOKENS))
def test_imap_session(world: World, payload: bytes) -> None:
    imap_exchange(world, payload)
    no_traceback(world)


# -- SMTP ------------------------------------------------------------------------


class Lines:
    """A line-based client connection (SMTP, POP3) with a read timeout."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def forget(world: World, name: str) -> None:
    """Close a connection that is done with; the next example opens another."""
    conn = world.conns.pop(name)
    conn.close()  # type: ignore[attr-defined]


class Smtp(Lines):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        assert self.reply()[0] == 220
        self.sock.sendall(b"EHLO fuzz.example\r\n")
        assert self.reply()[0] == 250

    def reply(self) -> tuple[int, list[str]]:
        texts: list[str] = []
        for _ in range(1000):
            line = self.file.readline(2000)
            if not line:
                raise ConnectionError("closed")
            code, last, text = parse_reply_line(line)
            texts.append(text)
            if last:
                return code, texts
        raise AssertionError("endless reply")


def smtp_exchange(world: World, payload: bytes) -> None:
    conn = world.conns.get("smtp")
    if conn is None:
        conn = world.conns["smtp"] = Smtp(world.server.smtp)
    assert isinstance(conn, Smtp)
    line = one_line(payload)
    if line.upper().startswith(b"BDAT"):
        line = b"X" + line  # a chunk of n octets would follow
    try:
        conn.sock.sendall(line + b"\r\n")
        code, texts = conn.reply()
        if code == 354:  # DATA: an empty message ends it
            conn.sock.sendall(b".\r\n")
            code, texts = conn.reply()
        elif code == 334:  # AUTH: cancel (RFC 4954 §4)
            conn.sock.sendall(b"*\r\n")
            code, texts = conn.reply()
        assert not (code == 451 and texts[0].startswith("4.3.0")), texts
        if code not in (221, 421) and not line.upper().startswith(b"STARTTLS"):
            return
    except (ConnectionError, OSError):
        pass  # QUIT, STARTTLS, too many errors: start afresh
    forget(world, "smtp")


@TARGET
@given(mutants(SMTP_COMMANDS, TOKENS))
def test_smtp_session(world: World, payload: bytes) -> None:
    smtp_exchange(world, payload)
    no_traceback(world)


# -- POP3 ------------------------------------------------------------------------


class Pop3(Lines):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        assert self.line().startswith(b"+OK")
        for command in (f"USER {USER}", f"PASS {PASSWORD}"):
            self.sock.sendall(command.encode() + b"\r\n")
            assert self.line().startswith(b"+OK")

    def line(self) -> bytes:
        line = self.file.readline(100_000)
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"closed or cut: {line[:80]!r}")
        return line


def multiline(command: bytes) -> bool:
    """Whether +OK to this command starts a multi-line answer (RFC 1939, 2449)."""
    verb, _, arg = command.partition(b" ")
    verb = verb.upper()
    return verb in (b"CAPA", b"RETR", b"TOP") or (verb in (b"LIST", b"UIDL")
                                                  and not arg.strip(b" "))


def pop3_exchange(world: World, payload: bytes) -> None:
    conn = world.conns.get("pop3")
    if conn is None:
        conn = world.conns["pop3"] = Pop3(world.server.port("POP3Port"))
    assert isinstance(conn, Pop3)
    line = one_line(payload)
    if line.upper().startswith((b"DELE", b"QUIT")):
        line = b"X" + line  # keep the messages and the session for the next examples
    try:
        conn.sock.sendall(line + b"\r\n")
        status = conn.line()
        if status.startswith(b"+ "):  # AUTH: cancel (RFC 5034 §4)
            conn.sock.sendall(b"*\r\n")
            status = conn.line()
        assert status.startswith((b"+OK", b"-ERR")) and b"SYS/TEMP" not in status, status
        if status.startswith(b"+OK") and multiline(line):
            for _ in range(1_000_000):
                if conn.line() == b".\r\n":
                    break
        if not line.upper().startswith(b"STLS"):
            return
    except ConnectionError:
        pass  # STLS, too many errors: start afresh
    forget(world, "pop3")


@TARGET
@given(mutants(POP3_COMMANDS, TOKENS))
def test_pop3_session(world: World, payload: bytes) -> None:
    pop3_exchange(world, payload)
    no_traceback(world)
