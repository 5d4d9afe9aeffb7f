"""POP3 tests over a real ``waypost serve``: accounts, raw IMAP APPEND of
exact bytes, a logged-in raw POP3 session, and TOP as RFC 1939 defines it,
shared by the streaming and the body-cache test modules."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import BinaryIO

import pytest
from tests.support.pop3 import RawPop3
from tests.support.server import WaypostServer

PW = "stream-pw-1234"
DOMAIN = "stream.dom"
TIMEOUT = 60


def serve(factory: pytest.TempPathFactory, accounts: list[str]) -> Iterator[WaypostServer]:
    """A server for one test module, with ``accounts`` in :data:`DOMAIN`."""
    srv = WaypostServer(factory.mktemp("pop3stream") / "var", log_level="INFO").init()
    srv.cli("domain", "add", DOMAIN)
    for name in accounts:
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


def top_reference(message: bytes, lines: int) -> bytes:
    """TOP line by line: up to and including the first empty line, then ``lines`` more."""
    parts = re.findall(rb"[^\n]*\n|[^\n]+$", message)
    out, header = [], True
    for part in parts:
        if header:
            out.append(part)
            header = part not in (b"\n", b"\r\n")
        elif lines > 0:
            out.append(part)
            lines -= 1
        else:
            break
    return b"".join(out)


def _tagged(f: BinaryIO, tag: bytes) -> bytes:
    for _ in range(10000):
        line = f.readline()
        if not line:
            raise AssertionError("IMAP connection closed")
        if line.startswith(tag + b" "):
            assert line.startswith(tag + b" OK"), line
            return line
    raise AssertionError("no tagged response")


def append(server: WaypostServer, account: str, messages: list[bytes]) -> None:
    """Store ``messages`` exactly as given (raw IMAP APPEND with literals)."""
    with socket.create_connection(("127.0.0.1", server.port("IMAPPort")), TIMEOUT) as sock:
        f: BinaryIO = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(b'a LOGIN "%s@%s" "%s"\r\n' % (account.encode(), DOMAIN.encode(), PW.encode()))
        _tagged(f, b"a")
        for i, message in enumerate(messages):
            tag = b"b%d" % i
            sock.sendall(tag + b" APPEND INBOX {%d}\r\n" % len(message))
            assert f.readline().startswith(b"+")
            sock.sendall(message + b"\r\n")
            _tagged(f, tag)
        sock.sendall(b"z LOGOUT\r\n")


class Pop(RawPop3):
    """A raw POP3 session of ``account``, logged in."""

    def __init__(self, server: WaypostServer, account: str) -> None:
        super().__init__(server.port("POP3Port"), TIMEOUT)
        self.login(f"{account}@{DOMAIN}", PW)

