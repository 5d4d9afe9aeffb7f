"""A raw IMAP connection for tests: send bytes, read response lines with
their literals inlined; every read has a timeout, so nothing hangs."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from tests.support.server import WaypostServer

PW = "imap-pw-1234"
"""The password the IMAP tests give their accounts."""
TIMEOUT = 15


class Raw:
    """A raw IMAP connection: send bytes, read lines (literals inlined)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout, source_address=(source, 0)
        )
        self.buf = b""
        self.greeting = self.line()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def line(self) -> bytes:
        """One response line with its literals inlined; b"" at EOF."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    return out + self.buf
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return out
            size = int(m.group(1))
            while len(self.buf) < size:
                if not self._fill():
                    raise AssertionError("EOF inside a literal")
            out += b"\r\n" + self.buf[:size]
            self.buf = self.buf[size:]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            if not line:
                raise AssertionError(f"connection closed before {tag!r}: {lines}")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, tag: str, text: str | bytes) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag.encode())

    def login(self, user: str, password: str = PW) -> None:
        assert self.cmd("L", f'LOGIN "{user}" "{password}"')[-1].startswith(b"L OK")

    def eof(self, timeout: float = 10) -> bool:
        """The server closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


def append_cmd(mailbox: str, message: bytes = b"Subject: x\r\n\r\nbody\r\n") -> bytes:
    """APPEND with a LITERAL+ literal (the caller adds the final CRLF)."""
    return b"APPEND %s {%d+}\r\n" % (mailbox.encode(), len(message)) + message



# -- CONDSTORE / QRESYNC test modules ---------------------------------------------


def serve(
    factory: pytest.TempPathFactory, domain: str, users: tuple[str, ...]
) -> Iterator[WaypostServer]:
    """A server for one test module, with these accounts (also used by the
    QRESYNC and keyword tests)."""
    srv = WaypostServer(factory.mktemp("imap-" + domain) / "var").init()
    srv.cli("domain", "add", domain)
    for name in users:
        srv.cli("account", "add", f"{name}@{domain}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


def connect(server: WaypostServer, login: str) -> Raw:
    raw = Raw(server.port("IMAPPort"))
    raw.login(login)
    return raw


def ok(lines: list[bytes], tag: str) -> list[bytes]:
    assert lines[-1].startswith(tag.encode() + b" OK"), lines
    return lines[:-1]


def highest(lines: list[bytes]) -> int:
    found = [re.search(rb"\[HIGHESTMODSEQ (\d+)\]", line) for line in lines]
    values = [int(m.group(1)) for m in found if m]
    assert len(values) == 1, lines
    return values[0]


def modseqs(lines: list[bytes]) -> dict[int, int]:
    """UID -> MODSEQ of the FETCH responses."""
    out = {}
    for line in lines:
        m = re.match(rb"\* \d+ FETCH \(.*?UID (\d+).*?MODSEQ \((\d+)\)", line) or re.match(
            rb"\* \d+ FETCH \(.*?MODSEQ \((\d+)\).*?UID (\d+)", line
        )
        if m and b"UID" in line[: line.index(b"MODSEQ")]:
            out[int(m.group(1))] = int(m.group(2))
        elif m:
            out[int(m.group(2))] = int(m.group(1))
    return out

