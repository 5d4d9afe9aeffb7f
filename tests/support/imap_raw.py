"""A raw IMAP connection for tests that compare the server's exact lines
(ESEARCH, SORT, THREAD): send ``tag command``, read lines with literals
inlined, up to the tagged one. Every read has a timeout."""

from __future__ import annotations

import re
import socket

TIMEOUT = 15
_LITERAL = re.compile(rb"\{(\d+)\}$")


class RawImap:
    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""
        self.greeting = self.line()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection; unread: {self.buf!r}")
        self.buf += data

    def line(self) -> bytes:
        """One response line without CRLF, a literal's data inlined after CRLF."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n", 1)
            out += head
            size = _LITERAL.search(head)
            if size is None:
                return out
            n = int(size.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def cmd(self, tag: str, command: str | bytes) -> list[bytes]:
        """Send ``tag command``: the untagged lines and the tagged one (last)."""
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(tag.encode() + b" " + data + b"\r\n")
        lines = [self.line()]
        while not lines[-1].startswith(tag.encode() + b" "):
            lines.append(self.line())
        return lines

    def login(self, user: str, password: str) -> None:
        done = self.cmd("L", f'LOGIN "{user}" "{password}"')[-1]
        assert done.startswith(b"L OK"), done

    def close(self) -> None:
        self.sock.close()


def append_command(mailbox: str, message: bytes, flags: str = "") -> bytes:
    """APPEND with a LITERAL+ literal (RFC 7888)."""
    return b"APPEND %s (%s) {%d+}\r\n%s" % (mailbox.encode(), flags.encode(), len(message), message)
