"""Bad SIP input against a real server (issue 14 point 7): malformed start
lines and headers answered 400/505 with the request's headers, huge
header sections and bodies 513/413 (limits are settings), a lying or
missing Content-Length on TCP closing the stream, spoofed identities and
a flood of 10,000 REGISTERs with bad passwords, which the login guard
slows and locks out for that address only. The server keeps answering
throughout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from tests.support.server import WaypostServer
from tests.support.sip_ua import SipUA

from waypost.protocols.sip.wire import SipResponse, new_branch, parse_message

ALICE = "alice@domain.dom"
JOHN = "john@domain.dom"
PASSWORD = "alice-secret-1"

GOOD = (b"OPTIONS sip:domain.dom SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKgood;rport\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:x@domain.dom>;tag=1\r\nTo: <sip:domain.dom>\r\n"
        b"Call-ID: bad-input@test\r\nCSeq: 1 OPTIONS\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sipbad") / "var", domain="main.dom",
                        log_level="INFO").init()
    srv.cli("domain", "add", "domain.dom")
    srv.cli("account", "add", ALICE, "--password", PASSWORD, "--odmr")
    srv.cli("account", "add", JOHN, "--password", "john-secret-1", "--odmr")
    for name, value in (("SIPMaxHeaderSize", "4K"), ("SIPMaxBodySize", "8K"),
                        ("SIPIdleTimeout", "3"), ("LoginFailureMaxDelay", "1")):
        srv.cli("settings", "set", name, value)
    srv.start()
    yield srv
    srv.stop()


def udp_raw(server: WaypostServer, data: bytes, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", server.port("SIPPort")))
        return sock.recvfrom(70_000)[0]


def udp_exchange(server: WaypostServer, data: bytes, timeout: float = 5) -> SipResponse:
    answer = parse_message(udp_raw(server, data, timeout))
    assert isinstance(answer, SipResponse)
    return answer


def tcp_conversation(server: WaypostServer, data: bytes, timeout: float = 6) -> bytes:
    """Everything the server sends back until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port("SIPPort")), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    raise AssertionError(f"connection still open; got {b''.join(chunks)!r}")


def still_answers(server: WaypostServer) -> None:
    fresh = GOOD.replace(b"z9hG4bKgood", new_branch().encode())
    assert udp_exchange(server, fresh + b"\r\n").status == 200


@pytest.mark.parametrize(("start", "status"), [
    (b"OPTIONS  sip:domain.dom SIP/2.0", 400),
    (b"OPTIONS <sip:domain.dom> SIP/2.0", 400),
    (b"OPTIONS sip:domain.dom SIP/7.0", 505),
    (b"OPTIONS sip:domain.dom?x=y SIP/2.0", 400),
])
def test_malformed_start_lines_are_answered_with_the_requests_headers(
        server: WaypostServer, start: bytes, status: int) -> None:
    data = start + GOOD[GOOD.index(b"\r\n"):] + b"\r\n"
    answer = udp_exchange(server, data)
    assert answer.status == status
    assert answer.call_id == "bad-input@test" and str(answer.cseq) == "1 OPTIONS"
    assert answer.top_via.branch == "z9hG4bKgood" and answer.top_via.rport is not None
    still_answers(server)


@pytest.mark.parametrize("header", [
    b"CSeq: 1 INVITE\r\n", b"Max-Forwards: 256\r\n", b"Via: SIP/2.0/UDP\r\n",
    b"Bad Header Name: x\r\n", b"To: <sip:b@c>\r\n", b"X: \x01\r\n",
])
def test_malformed_headers_get_400(server: WaypostServer, header: bytes) -> None:
    """(The 400 echoes the request's Via, From, To, Call-ID and CSeq fields as
    they came, a duplicated CSeq too, so it is read as raw bytes.)"""
    assert udp_raw(server, GOOD + header + b"\r\n").startswith(b"SIP/2.0 400 ")


def test_a_datagram_without_via_or_not_sip_is_dropped_and_the_server_goes_on(
        server: WaypostServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for junk in (b"\x00" * 100, b"hello\r\n\r\n", GOOD.replace(b"Via", b"Xia") + b"\r\n",
                     b"SIP/2.0 200 OK\r\n\r\n"):
            sock.sendto(junk, ("127.0.0.1", server.port("SIPPort")))
        with pytest.raises(TimeoutError):
            sock.recvfrom(70_000)
    still_answers(server)


def test_huge_header_section_gets_513_over_udp_and_tcp(server: WaypostServer) -> None:
    big = GOOD + b"X-Filler: " + b"a" * 5000 + b"\r\n"
    assert udp_exchange(server, big + b"\r\n").status == 513
    # on a stream the framer stops reading at the limit (wire.StreamFramer): the
    # header section is never parsed, so there is no Via to answer along; closed
    answer = tcp_conversation(server, big.replace(b"UDP", b"TCP") + b"Content-Length: 0\r\n\r\n")
    assert answer == b""
    many = GOOD + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    assert udp_exchange(server, many + b"\r\n").status == 513


def test_huge_body_gets_413_and_the_stream_is_closed(server: WaypostServer) -> None:
    body = b"b" * 9000
    answer = udp_exchange(server, GOOD + b"Content-Length: 9000\r\n\r\n" + body)
    assert answer.status == 413
    tcp = GOOD.replace(b"UDP", b"TCP") + b"Content-Length: 9000\r\n\r\n" + body
    assert tcp_conversation(server, tcp).startswith(b"SIP/2.0 413 ")
    still_answers(server)


def test_missing_content_length_on_tcp_is_400_and_closes(server: WaypostServer) -> None:
    out = tcp_conversation(server, GOOD.replace(b"UDP", b"TCP") + b"\r\n")
    assert out.startswith(b"SIP/2.0 400 ")


def test_a_short_lying_content_length_on_tcp_loses_the_framing_and_closes(
        server: WaypostServer) -> None:
    """Content-Length 2 before an 11-byte body: the first request is answered
    with a 2-byte body; the rest is no message, and the stream is closed."""
    message = GOOD.replace(b"UDP", b"TCP") + b"Content-Length: 2\r\n\r\nhello world\r\n\r\n"
    out = tcp_conversation(server, message)
    assert out.startswith(b"SIP/2.0 200 ") and out.count(b"SIP/2.0 ") == 1


def test_a_long_lying_content_length_on_tcp_waits_then_the_idle_timeout_closes(
        server: WaypostServer) -> None:
    message = GOOD.replace(b"UDP", b"TCP") + b"Content-Length: 500\r\n\r\nshort"
    start = time.monotonic()
    assert tcp_conversation(server, message, timeout=10) == b""
    assert time.monotonic() - start >= 2.5  # SIPIdleTimeout 3
    still_answers(server)


def test_registering_another_account_with_own_credentials_is_forbidden(
        server: WaypostServer) -> None:
    """The digest proves alice; a To naming john (a spoofed identity) is 403."""
    with SipUA(server.port("SIPPort"), timeout=10) as phone:
        first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{JOHN}",
                              extra=(("Contact", phone.contact("john")),))
        challenge = phone.ask(first)
        assert challenge.status == 401
        signed = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{JOHN}", extra=(
            ("Contact", phone.contact("john")),
            ("Authorization", phone.authorization(challenge, first, "alice", PASSWORD))))
        assert phone.ask(signed).status == 403


def test_ten_thousand_bad_registers_are_bounded_and_lock_out_only_their_address(
        server: WaypostServer) -> None:
    port = server.port("SIPPort")
    with SipUA(port, timeout=10) as attacker:
        attacker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        contact = (("Contact", attacker.contact("alice")),)
        first = attacker.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}", extra=contact)
        challenge = attacker.ask(first)
        floods = []
        for nc in range(1, 10_001):
            auth = attacker.authorization(challenge, first, "alice", "wrong", nc=nc)
            floods.append(attacker.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                           cseq=first.cseq.number, extra=(
                                               *contact, ("Authorization", auth))).to_bytes())
        counts: dict[int, int] = {}

        def drain() -> None:
            attacker.sock.setblocking(False)
            try:
                while True:
                    answer = parse_message(attacker.sock.recv(70_000))
                    assert isinstance(answer, SipResponse)
                    counts[answer.status] = counts.get(answer.status, 0) + 1
            except BlockingIOError:
                pass
            finally:
                attacker.sock.setblocking(True)

        start = time.monotonic()
        for at in range(0, len(floods), 50):
            for data in floods[at:at + 50]:
                attacker.send(data)
            time.sleep(0.01)
            drain()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(counts.values()) < 10_000:
            try:
                answer = attacker.response(timeout=5)
            except TimeoutError:
                break
            counts[answer.status] = counts.get(answer.status, 0) + 1
        elapsed = time.monotonic() - start
        assert set(counts) <= {401, 503}, counts
        # UDP under a flood loses some datagrams; most are answered, none with a 200
        assert sum(counts.values()) >= 5_000, counts
        assert counts.get(503, 0) > 0  # SIPMaxTransactionsPerAddress held the flood
        assert counts.get(200, 0) == 0
        assert elapsed < 90
        # the flooding address is locked out: even the right password is refused
        assert attacker.register(ALICE, PASSWORD).status in (401, 503)
    still_answers(server)
    # another client address is not locked out (slowed at most)
    with SipUA(port, local="127.0.0.2", timeout=20) as phone:
        assert phone.register(ALICE, PASSWORD).status == 200
        phone.register(ALICE, PASSWORD, contact="*", expires=0)
    log = server.logs()
    assert log.count("sip password verification for 'alice@domain.dom' from 127.0.0.1") <= 10
