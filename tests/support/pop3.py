"""A bare POP3 client for tests and benchmarks: every response exactly as sent.

poplib un-stuffs and splits lines, which hides what the server wrote;
:class:`RawPop3` hands back the status line and the multi-line body
byte for byte (still dot-stuffed, final ``.`` line included), reading
only as far as the end of each response (RFC 1939 §3). Every read has the
socket's timeout.
"""

from __future__ import annotations

import socket


class Pop3Refused(Exception):
    """The server answered ``-ERR`` where ``+OK`` was needed."""


class RawPop3:
    def __init__(self, port: int, timeout: float, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.ok_status()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("POP3 connection closed by the server")
        self.buf += chunk

    def status(self) -> bytes:
        """The next status line, CRLF included, whatever it says."""
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
        return line

    def ok_status(self) -> bytes:
        line = self.status()
        if not line.startswith(b"+OK"):
            raise Pop3Refused(line.decode("utf-8", "replace").strip())
        return line

    def command(self, text: str) -> bytes:
        """Send one command; its status line, whatever it says."""
        self.sock.sendall(text.encode() + b"\r\n")
        return self.status()

    def ok(self, text: str) -> bytes:
        """Send one command that must succeed; its status line."""
        self.sock.sendall(text.encode() + b"\r\n")
        return self.ok_status()

    def login(self, user: str, password: str) -> None:
        self.ok(f"USER {user}")
        self.ok(f"PASS {password}")

    def multi(self, text: str) -> tuple[bytes, bytes]:
        """(status line, body): the body still dot-stuffed, its ``.`` line included."""
        status = self.ok(text)
        searched = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 0
                break
            end = self.buf.find(b"\r\n.\r\n", searched)
            if end >= 0:
                end += 2
                break
            searched = max(0, len(self.buf) - 4)
            self._fill()
        body, self.buf = self.buf[: end + 3], self.buf[end + 3 :]
        return status, body

    def quit(self) -> bytes:
        try:
            return self.command("QUIT")
        finally:
            self.sock.close()
