"""The sipp runner (``tests/support/sipp.py``) against sipp itself: a UAC
talking straight to a UAS on loopback, so what the runner reports can be
checked against what both ends saw, before any test relies on it to judge
Waypost."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from tests.support.sipp import Sipp, free_port, port_is_free, require_sipp, write_users

pytestmark = pytest.mark.peer


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


def test_twenty_calls_uac_to_uas_are_counted_successful_at_both_ends(tmp_path: Path) -> None:
    with Sipp(tmp_path, "call_uas.xml", timeout=30) as uas:
        result = Sipp(tmp_path, "call_uac.xml", remote=uas.address, calls=20, rate=200,
                      limit=10, timeout=20).run()
        assert result.ok, result.report()
        assert (result.successful, result.failed, result.created) == (20, 0, 20)
        assert result.elapsed > 0 and result.calls_per_second > 0
        assert result.stats["SuccessfulCall(C)"] == "20"
    answered = uas.result
    assert answered is not None
    assert answered.successful == 20 and answered.failed == 0, answered.report()


def test_a_scenario_that_gets_the_wrong_answer_reports_every_call_failed(tmp_path: Path) -> None:
    # call_uac_auth.xml demands a 407 first; a plain UAS answers 180/200.
    with Sipp(tmp_path, "call_uas.xml") as uas:
        result = Sipp(tmp_path, "call_uac_auth.xml", remote=uas.address, calls=5, rate=100,
                      timeout=10).run()
    assert not result.ok
    assert result.returncode == 1
    assert (result.successful, result.failed) == (0, 5), result.report()
    assert result.why() == "unexpected 180 Ringing", result.report()


def test_calls_never_answered_end_failed_at_the_timeout_bound(tmp_path: Path) -> None:
    # ring_cancel_uas.xml rings forever unless CANCELled: no final response.
    with Sipp(tmp_path, "ring_cancel_uas.xml") as uas:
        started = time.monotonic()
        result = Sipp(tmp_path, "call_uac.xml", remote=uas.address, calls=2, rate=100,
                      timeout=2).run()
        took = time.monotonic() - started
    assert not result.ok and result.successful == 0, result.report()
    assert took < 15


def test_a_ringing_call_cancelled_by_the_caller_ends_with_487(tmp_path: Path) -> None:
    with Sipp(tmp_path, "ring_cancel_uas.xml") as uas:
        result = Sipp(tmp_path, "cancel_uac.xml", remote=uas.address, calls=5, rate=100,
                      timeout=10).run()
        assert result.ok, result.report()
        assert result.successful == 5
    assert uas.result is not None and uas.result.successful == 5, uas.result


def test_message_is_delivered_and_answered_200(tmp_path: Path) -> None:
    with Sipp(tmp_path, "message_uas.xml") as uas:
        result = Sipp(tmp_path, "message_uac.xml", remote=uas.address, calls=3, rate=100,
                      timeout=10).run()
        assert result.ok, result.report()
    assert uas.result is not None and uas.result.successful == 3, uas.result


def test_calls_over_tcp(tmp_path: Path) -> None:
    with Sipp(tmp_path, "call_uas.xml", transport="t1") as uas:
        result = Sipp(tmp_path, "call_uac.xml", remote=uas.address, transport="t1", calls=5,
                      rate=100, timeout=10).run()
        assert result.ok, result.report()
        assert result.successful == 5


def test_injection_file_and_keys_reach_the_messages(tmp_path: Path) -> None:
    """Each REGISTER of register_users.xml names the next -inf user and the
    -key domain: a plain UDP socket plays the registrar and reads them."""
    users = write_users(tmp_path / "users.csv", [("u1", "p1"), ("u2", "p2")])
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", free_port()))
    registrar.settimeout(5)
    port = registrar.getsockname()[1]
    uac = Sipp(tmp_path, "register_users.xml", remote=f"127.0.0.1:{port}", calls=2, rate=100,
               inf=users, keys={"domain": "example.test"}, limit=1, timeout=10)
    seen = []
    with registrar:
        uac.start()
        try:
            for _ in range(2):
                seen.append(_answer(registrar, "200 OK").split("\r\n")[2])  # the From line
        finally:
            result = uac.wait(timeout=20)
    assert [line.split(";")[0] for line in seen] == [
        "From: <sip:u1@example.test>", "From: <sip:u2@example.test>"]
    assert result.ok, result.report()


def _reply(server: socket.socket, request: str, peer: tuple[str, int], status: str,
           *extra: str) -> None:
    head = request.split("\r\n\r\n")[0].split("\r\n")
    keep = [h for h in head[1:] if h.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    reply = f"SIP/2.0 {status}\r\n" + "".join(
        h + (";tag=r" if h.startswith("To") else "") + "\r\n" for h in keep)
    reply += "".join(f"{h}\r\n" for h in extra) + "Content-Length: 0\r\n\r\n"
    server.sendto(reply.encode(), peer)


def _answer(registrar: socket.socket, status: str, *extra: str) -> str:
    """Receive one request on ``registrar`` and answer it; the request's text."""
    data, peer = registrar.recvfrom(65535)
    text = data.decode()
    _reply(registrar, text, peer, status, *extra)
    return text


CHALLENGE = 'WWW-Authenticate: Digest realm="example.test", nonce="n1", qop="auth"'


def test_a_late_copy_of_the_challenge_does_not_fail_the_register(tmp_path: Path) -> None:
    """The server answered a retransmission of the first REGISTER: its 401
    arrives after the second REGISTER was sent and answered 100; sipp lets
    it pass (a late copy of a challenge to an INVITE it does not: see
    call_uac_auth.xml)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as registrar:
        registrar.bind(("127.0.0.1", free_port()))
        registrar.settimeout(5)
        uac = Sipp(tmp_path, "register.xml", remote=f"127.0.0.1:{registrar.getsockname()[1]}",
                   service="u1", auth_user="u1", auth_password="p1", auth_uri="example.test",
                   keys={"domain": "example.test"}, calls=1, timeout=10).start()
        try:
            data, peer = registrar.recvfrom(65535)
            first = data.decode()
            _reply(registrar, first, peer, "401 Unauthorized", CHALLENGE)
            data, peer = registrar.recvfrom(65535)
            second = data.decode()
            assert "CSeq: 2 REGISTER" in second
            _reply(registrar, second, peer, "100 Trying")  # sipp's last message now
            _reply(registrar, first, peer, "401 Unauthorized", CHALLENGE)  # the late copy
            _reply(registrar, second, peer, "200 OK")
        finally:
            result = uac.wait(timeout=20)
    assert result.ok, result.report()


def test_a_challenge_offering_sha256_first_is_named_as_the_reason(tmp_path: Path) -> None:
    """Debian's sipp 3.6 answers only the first challenge, and only MD5: a
    401 listing SHA-256 first (RFC 8760 §2.4) fails, and says why."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as registrar:
        registrar.bind(("127.0.0.1", free_port()))
        registrar.settimeout(5)
        uac = Sipp(tmp_path, "register.xml", remote=f"127.0.0.1:{registrar.getsockname()[1]}",
                   service="u1", auth_user="u1", auth_password="p1", auth_uri="example.test",
                   keys={"domain": "example.test"}, calls=1, timeout=5).start()
        try:
            _answer(registrar, "401 Unauthorized",
                    'WWW-Authenticate: Digest realm="example.test", nonce="n1", '
                    'algorithm=SHA-256, qop="auth"',
                    'WWW-Authenticate: Digest realm="example.test", nonce="n1", '
                    'algorithm=MD5, qop="auth"')
        finally:
            result = uac.wait(timeout=20)
    assert not result.ok
    assert "only MD5" in result.why(), result.report()


def test_digest_answers_name_the_auth_uri_given(tmp_path: Path) -> None:
    """-auth_uri: the digest uri is the Request-URI, not sipp's remote address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as registrar:
        registrar.bind(("127.0.0.1", free_port()))
        registrar.settimeout(5)
        uac = Sipp(tmp_path, "register.xml", remote=f"127.0.0.1:{registrar.getsockname()[1]}",
                   service="u1", auth_user="u1", auth_password="p1", auth_uri="example.test",
                   keys={"domain": "example.test"}, calls=1, timeout=10).start()
        try:
            _answer(registrar, "401 Unauthorized", CHALLENGE)
            second = _answer(registrar, "200 OK")
        finally:
            result = uac.wait(timeout=20)
    assert second.startswith("REGISTER sip:example.test SIP/2.0")
    authorization = next(line for line in second.split("\r\n")
                         if line.startswith("Authorization:"))
    assert 'uri="sip:example.test"' in authorization
    assert 'username="u1"' in authorization
    assert result.ok, result.report()


def test_free_ports_are_free_for_udp_and_tcp() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        assert not port_is_free(port)
