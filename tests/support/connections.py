"""Raw client connections from a chosen loopback address, for limit tests.

Every listener is reached the same way: a TCP socket bound to a source
address (``127.0.0.N``), TLS where the port is implicit TLS, then either
the first line the server sends (SMTP, POP3, IMAP greet first) or, for
HTTP, the status line of the answer to one ``GET /``. Every read has a
timeout and every loop a bound.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

TIMEOUT = 15.0


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Port:
    """One listener: its name, ``...Port`` setting, protocol and TLS."""

    name: str
    setting: str
    protocol: str  # smtp, pop3, imap or http
    tls: bool


PORTS = (
    Port("SMTP", "SMTPPort", "smtp", False),
    Port("Submission", "SubmissionPort", "smtp", False),
    Port("SMTPS", "SMTPSPort", "smtp", True),
    Port("POP3", "POP3Port", "pop3", False),
    Port("POP3S", "POP3SPort", "pop3", True),
    Port("IMAP", "IMAPPort", "imap", False),
    Port("IMAPS", "IMAPSPort", "imap", True),
    Port("WebUser", "WebUserPort", "http", False),
    Port("WebUserS", "WebUserSPort", "http", True),
)


class Conn:
    """One open connection and what the server said first."""

    def __init__(self, port: int, source: str, *, tls: bool, http: bool) -> None:
        raw = socket.create_connection(("127.0.0.1", port), TIMEOUT,
                                       source_address=(source, 0))
        self.sock: socket.socket = (
            unverified().wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        )
        self.buffer = b""
        if http:
            self.sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.first = self.line()

    def line(self) -> bytes:
        """The next line, CRLF included (b"" at end of stream)."""
        for _ in range(1000):
            if b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                return line + b"\n"
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += chunk
        raise AssertionError("no line in 1000 reads")

    def rest(self) -> bytes:
        """Everything up to the server's close."""
        data = [self.buffer]
        self.buffer = b""
        for _ in range(1000):
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"".join(data)
            data.append(chunk)
        raise AssertionError("the server never closed")

    def close(self) -> None:
        self.sock.close()


def open_conn(server_port: int, port: Port, source: str) -> Conn:
    return Conn(server_port, source, tls=port.tls, http=port.protocol == "http")


def admitted(conn: Conn, port: Port) -> bool:
    """Did the server greet (or answer) normally?"""
    first = conn.first
    if port.protocol == "smtp":
        return first.startswith(b"220 ")
    if port.protocol == "pop3":
        return first.startswith(b"+OK")
    if port.protocol == "imap":
        return first.startswith(b"* OK")
    return first.startswith(b"HTTP/1.1 ") and not first.startswith(b"HTTP/1.1 503")
