"""Per-address, per-network and overall connection limits on every listener
(issue 13 point 1), against a real ``waypost serve`` over real sockets.

One server for the module, its limits set low through the CLI: 3 per
address, 5 per /24, 4 per trusted address (``ClientIPAddresses`` is set to
127.0.9.9 alone, so the other 127.0.0.0/8 sources are untrusted), 8 per
listener. Each test uses its own source addresses (``source_address=``), so
a connection another test has just closed can only matter to the overall
count, and the overall test allows for that.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.support.connections import PORTS, TIMEOUT, Conn, Port, admitted, open_conn, unverified
from tests.support.server import WaypostServer

USER = "limited"
PW = "limit-pw-1234"
PER_ADDRESS = 3
PER_NETWORK = 5
PER_TRUSTED = 4
OVERALL = 8
TRUSTED = "127.0.9.9"
HOST = "main.dom"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("limits") / "var", domain=HOST,
                        log_level="INFO").init()
    srv.cli("account", "add", USER, "--password", PW)
    for name, value in (("MaxConnectionsPerAddress", PER_ADDRESS),
                        ("MaxConnectionsPerNetwork", PER_NETWORK),
                        ("MaxConnectionsPerTrustedAddress", PER_TRUSTED),
                        ("MaxConnections", OVERALL),
                        ("ClientIPAddresses", TRUSTED)):
        srv.cli("settings", "set", name, str(value))
    srv.start()
    yield srv
    srv.stop()


def refusal(port: Port, scope: str) -> bytes:
    """The exact first line a refused client reads."""
    text = f"Too many connections{scope}, try later"
    if port.protocol == "smtp":
        return f"421 4.7.0 {HOST} {text}\r\n".encode()  # RFC 5321 §3.8
    if port.protocol == "pop3":
        return f"-ERR [SYS/TEMP] {text}\r\n".encode()  # RFC 3206 §4
    if port.protocol == "imap":
        return f"* BYE [UNAVAILABLE] {text}\r\n".encode()  # RFC 5530 §3
    return b"HTTP/1.1 503 Service Unavailable\r\n"


ADDRESS = " from your address"
NETWORK = " from your network"
SERVER = ""


def expect_refused(server: WaypostServer, port: Port, source: str, scope: str) -> None:
    conn = open_conn(server.port(port.setting), port, source)
    try:
        assert conn.first == refusal(port, scope), (port.name, source, conn.first)
        rest = conn.rest()
        if port.protocol == "http":
            head, _, body = rest.partition(b"\r\n\r\n")
            assert b"Retry-After: 60" in head.split(b"\r\n"), head  # RFC 9110 §10.2.3
            assert f"Too many connections{scope}, try later".encode() in body
        else:
            assert rest == b"", rest  # closed after the one line
    finally:
        conn.close()


def open_admitted(server: WaypostServer, port: Port, source: str, scope: str,
                  within: float = 60.0) -> Conn:
    """A connection the server admits. A slot is freed when the server has
    seen a close, which a client cannot wait for, so each refused attempt
    (the exact refusal, a positive signal) is followed by another, bounded
    in number and time."""
    deadline = time.monotonic() + within
    for _ in range(2000):
        conn = open_conn(server.port(port.setting), port, source)
        if admitted(conn, port):
            return conn
        assert conn.first == refusal(port, scope), (port.name, source, conn.first)
        conn.close()
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"{port.name}: no slot for {source} within {within} s")


def open_many(server: WaypostServer, port: Port, sources: list[str]) -> list[Conn]:
    conns: list[Conn] = []
    try:
        for source in sources:
            conns.append(open_conn(server.port(port.setting), port, source))
            assert admitted(conns[-1], port), (port.name, source, conns[-1].first)
    except BaseException:
        close_all(conns)
        raise
    return conns


def close_all(conns: list[Conn]) -> None:
    for conn in conns:
        conn.close()


# -- logging in from another address -------------------------------------------------------


class POP3From(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, TIMEOUT)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        if isinstance(self, POP3SFrom):
            return unverified().wrap_socket(sock, server_hostname=self.host)
        return sock


class POP3SFrom(POP3From):
    pass


class IMAPFrom(imaplib.IMAP4):
    def __init__(self, port: int, source: str, tls: bool) -> None:
        self.source = source
        self.tls = tls
        super().__init__("127.0.0.1", port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        return unverified().wrap_socket(sock, server_hostname=self.host) if self.tls else sock


def log_in(server: WaypostServer, port: Port, source: str) -> None:
    """A normal greeting and a successful login from ``source``."""
    number = server.port(port.setting)
    if port.protocol == "smtp":
        cls = smtplib.SMTP_SSL if port.tls else smtplib.SMTP
        extra = {"context": unverified()} if port.tls else {}
        with cls("127.0.0.1", number, timeout=TIMEOUT, source_address=(source, 0),
                 **extra) as smtp:  # type: ignore[arg-type]
            assert smtp.ehlo()[0] == 250
            assert smtp.login(USER, PW)[0] == 235
    elif port.protocol == "pop3":
        pop = (POP3SFrom if port.tls else POP3From)(number, source)
        assert pop.getwelcome().startswith(b"+OK")
        pop.user(USER)
        assert pop.pass_(PW).startswith(b"+OK")
        pop.quit()
    elif port.protocol == "imap":
        imap = IMAPFrom(number, source, port.tls)
        assert imap.login(USER, PW)[0] == "OK"
        imap.logout()
    else:
        transport = httpx.HTTPTransport(local_address=source, verify=False)
        scheme = "https" if port.tls else "http"
        with httpx.Client(base_url=f"{scheme}://127.0.0.1:{number}", verify=False,
                          transport=transport, timeout=TIMEOUT) as web:
            page = web.get("/")
            assert page.status_code == 200
            token = re.search(r'name="csrfToken"[^>]*value="([^"]+)"', page.text)
            assert token, page.text[:2000]
            answer = web.post("/login", data={"Username": USER, "Password": PW,
                                              "csrfToken": token.group(1)})
            assert answer.status_code == 303, answer.text[:500]
            assert "/Session/" in answer.headers["location"]


# -- the limits ----------------------------------------------------------------------------


def test_the_limits_are_settings(server: WaypostServer) -> None:
    shown = server.cli("settings", "show").stdout
    for name, value in (("MaxConnectionsPerAddress", PER_ADDRESS),
                        ("MaxConnectionsPerNetwork", PER_NETWORK),
                        ("MaxConnectionsPerTrustedAddress", PER_TRUSTED),
                        ("MaxConnections", OVERALL)):
        assert re.search(rf"^{name} +{value} ", shown, re.M), shown


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.name)
def test_one_address_cannot_shut_out_another(server: WaypostServer, port: Port) -> None:
    flood = "127.0.0.2"
    conns = open_many(server, port, [flood] * PER_ADDRESS)
    try:
        expect_refused(server, port, flood, ADDRESS)
        log_in(server, port, "127.0.0.3")  # same /24, another address: served
        conns.pop(0).close()
        conns.append(open_admitted(server, port, flood, ADDRESS))  # the slot is free again
        expect_refused(server, port, flood, ADDRESS)
    finally:
        close_all(conns)


@pytest.mark.parametrize("port", [p for p in PORTS if p.tls], ids=lambda p: p.name)
def test_connections_that_never_start_tls_count_from_the_accept(
        server: WaypostServer, port: Port) -> None:
    """The flood moved to an implicit-TLS port: sockets that never send a
    ClientHello take their own address's slots (counted at accept, not after
    a handshake that never comes), and nobody else's."""
    flood = "127.0.8.2"
    number = server.port(port.setting)
    silent = [socket.create_connection(("127.0.0.1", number), TIMEOUT, source_address=(flood, 0))
              for _ in range(PER_ADDRESS)]
    conns: list[Conn] = []
    try:
        expect_refused(server, port, flood, ADDRESS)  # accepted in order: after the silent ones
        log_in(server, port, "127.0.8.3")
        silent.pop().close()
        conns.append(open_admitted(server, port, flood, ADDRESS))
        expect_refused(server, port, flood, ADDRESS)
    finally:
        close_all(conns)
        for sock in silent:
            sock.close()


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.name)
def test_one_network_cannot_shut_out_another(server: WaypostServer, port: Port) -> None:
    # 3 + 2 connections from two addresses of 127.0.5.0/24 fill it.
    conns = open_many(server, port, ["127.0.5.1"] * 3 + ["127.0.5.2"] * 2)
    try:
        expect_refused(server, port, "127.0.5.3", NETWORK)
        extra = open_many(server, port, ["127.0.6.1"])  # another /24
        close_all(extra)
        conns.pop().close()  # one of 127.0.5.2's
        conns.append(open_admitted(server, port, "127.0.5.3", NETWORK))
    finally:
        close_all(conns)


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.name)
def test_a_trusted_address_has_its_own_limit_and_leaves_its_network_alone(
        server: WaypostServer, port: Port) -> None:
    conns = open_many(server, port, [TRUSTED] * PER_TRUSTED)  # more than PER_ADDRESS
    try:
        expect_refused(server, port, TRUSTED, ADDRESS)
        # Not counted in 127.0.9.0/24: its neighbours still get a full /24's worth.
        conns += open_many(server, port, ["127.0.9.10"] * PER_ADDRESS)
    finally:
        close_all(conns)


@pytest.mark.parametrize("port", PORTS, ids=lambda p: p.name)
def test_the_overall_limit_per_listener(server: WaypostServer, port: Port) -> None:
    # One address per /24, so only the overall limit can refuse.
    sources = iter(f"127.0.{n}.1" for n in range(30, 200))
    conns: list[Conn] = []
    try:
        for _ in range(OVERALL):  # connections other tests just closed may linger
            conns.append(open_admitted(server, port, next(sources), SERVER))
        expect_refused(server, port, next(sources), SERVER)
        conns.pop().close()
        conns.append(open_admitted(server, port, next(sources), SERVER))
    finally:
        close_all(conns)


def test_refusals_are_logged_once_per_address(server: WaypostServer) -> None:
    port = PORTS[0]
    source = "127.0.7.7"
    conns = open_many(server, port, [source] * PER_ADDRESS)
    try:
        for _ in range(5):
            expect_refused(server, port, source, ADDRESS)
    finally:
        close_all(conns)
    line = (f"SMTP: refused {source}: over the address connection limit ({PER_ADDRESS}); "
            "1 refused since the last line about it")
    server.wait_for(lambda: line in server.logs(), what="the refusal log line")
    # Each refusal was read, so each was logged before it was written, if at all.
    assert server.logs().count(f"refused {source}:") == 1
