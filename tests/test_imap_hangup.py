"""A client that hangs up in the middle of a long reply ends its session
quietly (issue 13): no traceback in the server log, a DEBUG line at most,
and the server goes on serving. IMAP FETCH over plain TCP and TLS, POP3
RETR, and SMTP with a pipeline of replies, each cut off by a close that
leaves unread data (the kernel answers with RST) or by an explicit RST."""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl
import struct
from collections.abc import Iterator

import pytest
from tests.support.server import WaypostServer

from waypost.tls import client_context

USER, PASSWORD = "hang@main.dom", "hang-up-pw-1234"
MESSAGES, LINES = 24, 5000  # 24 messages of about 400 KB: a reply far larger than any buffer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("hangup") / "var").init()
    srv.cli("account", "add", USER, "--password", PASSWORD)
    srv.start()
    try:  # stopped even when filling the mailbox fails
        body = b"".join(b"%05d the quick brown fox jumps over the lazy dog again and again\r\n"
                        % i for i in range(LINES))
        with imaplib.IMAP4("127.0.0.1", srv.port("IMAPPort"), timeout=60) as client:
            client.login(USER, PASSWORD)
            for n in range(MESSAGES):
                message = f"Subject: big {n}\r\nFrom: a@b.example\r\n\r\n".encode() + body
                status, _ = client.append("INBOX", None, None, message)
                assert status == "OK"
        yield srv
    finally:
        srv.stop()


def connect(port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the server outruns us
    if tls:
        return client_context(verify=False).wrap_socket(sock, server_hostname="localhost")
    return sock


def read_until(sock: socket.socket, marker: bytes, at_least: int = 0) -> bytes:
    data = b""
    while marker not in data or len(data) < at_least:
        part = sock.recv(65536)
        assert part, data[-300:]
        data += part
    return data


def hang_up(sock: socket.socket, rst: bool) -> None:
    if rst:  # SO_LINGER 0: close sends RST at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(sock, ssl.SSLSocket):
        raw = sock.detach()  # no close_notify: the TCP connection just goes
        socket.socket(fileno=raw).close() if isinstance(raw, int) else raw.close()
    else:
        sock.close()


def quiet_end(server: WaypostServer, gone: str, start: int) -> None:
    """Wait for the session's end (its DEBUG line) in the log written since
    ``start``; then no traceback, no error line there."""
    def since() -> str:
        return server.logs()[start:]
    server.wait_for(lambda: gone in since() or "Traceback" in since(), timeout=60, what=gone)
    logs = since()
    assert "Traceback" not in logs, logs[-3000:]
    assert " ERROR " not in logs and " WARNING " not in logs, logs[-3000:]


@pytest.mark.parametrize("when", ["mid-reply", "at-once"])
@pytest.mark.parametrize("rst", [False, True], ids=["close", "rst"])
@pytest.mark.parametrize("tls", [False, True], ids=["imap", "imaps"])
def test_imap_fetch_cut_off_ends_quietly(server: WaypostServer, tls: bool, rst: bool,
                                         when: str) -> None:
    """``mid-reply``: the server is mostly waiting for the socket to drain;
    ``at-once``: it is mostly reading messages off the loop when the client
    goes, and meets the closed transport at its next write."""
    start = len(server.logs())
    sock = connect(server.port("IMAPSPort" if tls else "IMAPPort"), tls)
    read_until(sock, b"\r\n")
    sock.sendall(f'L LOGIN "{USER}" "{PASSWORD}"\r\nS SELECT INBOX\r\n'.encode())
    read_until(sock, b"S OK")
    sock.sendall(b"F FETCH 1:* (BODY.PEEK[])\r\n")
    if when == "mid-reply":
        read_until(sock, b"* 1 FETCH", at_least=100_000)
    hang_up(sock, rst)
    quiet_end(server, "IMAP client 127.0.0.1 went away", start)
    with imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30) as again:
        again.login(USER, PASSWORD)
        assert again.select("INBOX") == ("OK", [str(MESSAGES).encode()])


@pytest.mark.parametrize("tls", [False, True], ids=["pop3", "pop3s"])
def test_pop3_retr_cut_off_ends_quietly(server: WaypostServer, tls: bool) -> None:
    start = len(server.logs())
    sock = connect(server.port("POP3SPort" if tls else "POP3Port"), tls)
    read_until(sock, b"\r\n")
    sock.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    read_until(sock, b" messages (")
    sock.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, MESSAGES + 1)))
    read_until(sock, b"+OK", at_least=100_000)
    hang_up(sock, rst=True)
    quiet_end(server, "POP3 client 127.0.0.1 went away", start)
    again = poplib.POP3("127.0.0.1", server.port("POP3Port"), timeout=30)
    try:
        again.user(USER)
        again.pass_(PASSWORD)
        assert again.stat()[0] == MESSAGES
    finally:
        again.quit()


def test_smtp_pipeline_cut_off_ends_quietly(server: WaypostServer) -> None:
    start = len(server.logs())
    sock = connect(server.smtp, tls=False)
    read_until(sock, b"\r\n")
    sock.sendall(b"EHLO hang.test\r\n" + b"NOOP\r\n" * 200_000)  # 200k replies queued up
    read_until(sock, b"250 2.0.0 OK", at_least=100_000)
    hang_up(sock, rst=True)
    quiet_end(server, "client 127.0.0.1 went away", start)
