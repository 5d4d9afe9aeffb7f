"""A byte-exact IMAP client for tests that assert the server's exact lines
(8-bit mailbox names, response codes): commands go out as given, answers come
back as lines with their literals inlined. Every read has a timeout."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer

TIMEOUT = 15
_LITERAL = re.compile(rb"\{(\d+)\}$")


class ImapLines:
    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.pending = b""
        self.greeting = self.read_line()

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"server closed the connection; unread: {self.pending!r}")
        self.pending += data

    def read_line(self) -> bytes:
        """One response line without CRLF, a literal's data inlined after CRLF."""
        line = b""
        while True:
            while b"\r\n" not in self.pending:
                self._more()
            head, self.pending = self.pending.split(b"\r\n", 1)
            line += head
            size = _LITERAL.search(head)
            if size is None:
                return line
            while len(self.pending) < int(size.group(1)):
                self._more()
            n = int(size.group(1))
            line += b"\r\n" + self.pending[:n]
            self.pending = self.pending[n:]

    def run(self, tag: str, command: str | bytes) -> list[bytes]:
        """Send ``tag command``; the untagged lines and the tagged one (last)."""
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(tag.encode() + b" " + data + b"\r\n")
        lines = [self.read_line()]
        while not lines[-1].startswith(tag.encode() + b" "):
            lines.append(self.read_line())
        return lines

    def ok(self, tag: str, command: str | bytes) -> list[bytes]:
        """:meth:`run`, asserting a tagged OK; the untagged lines."""
        lines = self.run(tag, command)
        assert lines[-1].startswith(tag.encode() + b" OK"), lines
        return lines[:-1]

    def close(self) -> None:
        self.sock.close()


def start_server(
    data: Path, domain: str, users: Iterable[str], password: str
) -> WaypostServer:
    """A started ``waypost serve`` with ``users`` in ``domain``."""
    srv = WaypostServer(data).init()
    srv.cli("domain", "add", domain)
    for name in users:
        srv.cli("account", "add", f"{name}@{domain}", "--password", password)
    srv.start()
    return srv


def server_fixture(
    domain: str, users: Iterable[str], password: str
) -> Callable[[pytest.TempPathFactory], Iterator[WaypostServer]]:
    """A module-scoped ``server`` fixture around :func:`start_server`."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
        data = tmp_path_factory.mktemp(domain.split(".")[0]) / "var"
        srv = start_server(data, domain, users, password)
        yield srv
        srv.stop()

    return server


def login(port: int, login: str, password: str, *, enable: str | None = None) -> ImapLines:
    """A logged-in connection; ``enable``: one capability to ENABLE, asserted."""
    imap = ImapLines(port)
    imap.ok("L", f'LOGIN "{login}" "{password}"')
    if enable is not None:
        assert imap.ok("E", f"ENABLE {enable}") == [b"* ENABLED " + enable.upper().encode()]
    return imap
