"""Calls through Waypost's SIP registrar and proxy, end to end with sipp
(issue 14 point 6): real ``waypost serve``, real sipp phones on loopback,
DNS answers from the test's own server.

* two phones register with digest, one calls the other (INVITE/180/200/
  ACK/BYE, the ACK and BYE along Waypost's Record-Route);
* a user with two registrations: both ring, the one not answering is
  CANCELled (487);
* ``Signal:friend.com = friend.com@sip.friend.com.PORT._via``: the A record
  of sip.friend.com, although the DNS serves SRV records pointing elsewhere;
* a plain ``Relay: friend.com = friend.com@friend.com._via`` follows SRV;
* a local user calling out is challenged (407) first;
* an untrusted INVITE to a remote domain gets 403;
* MESSAGE between two registered users.

sipp (3.6) answers only the first digest challenge and only MD5, so the
server offers MD5 alone here (``SIPDigestAlgorithms``); SHA-256 is proved by
``test_sip_register_wire.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.server import WaypostServer
from tests.support.sip_ua import SipUA
from tests.support.sipp import Sipp, SippResult, free_port, require_sipp

pytestmark = pytest.mark.peer

DOMAIN = "domain.dom"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


@pytest.fixture(scope="module")
def dns() -> Iterator[TestDNSServer]:
    with TestDNSServer({}) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           dns: TestDNSServer) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sipcalls") / "var", domain="main.dom").init()
    srv.cli("domain", "add", DOMAIN)
    for user, password in PASSWORDS.items():
        # --odmr: keep a reversible secret, which SIP digest needs
        srv.cli("account", "add", f"{user}@{DOMAIN}", "--password", password, "--odmr")
    for name, value in (("SIPDigestAlgorithms", "MD5"), ("DNSServers", dns.address),
                        ("SIPDNSTimeout", "3"),
                        # 127.0.0.2 is a stranger: relaying is refused to it
                        ("ClientIPAddresses", "127.0.0.1")):
        srv.cli("settings", "set", name, value)
    srv.start()
    yield srv
    srv.stop()


def proxy(server: WaypostServer) -> str:
    return f"127.0.0.1:{server.port('SIPPort')}"


def register(tmp: Path, server: WaypostServer, user: str, port: int) -> SippResult:
    """``user`` registers the phone that will listen on ``port``."""
    return Sipp(tmp, "register.xml", remote=proxy(server), port=port, service=user,
                auth_user=user, auth_password=PASSWORDS[user], auth_uri=DOMAIN, calls=1,
                keys={"domain": DOMAIN, "expires": "600"}, timeout=15).run()


def unregister_all(server: WaypostServer, user: str) -> None:
    server.cli("sip", "unregister", f"{user}@{DOMAIN}", check=False)


def routes(server: WaypostServer, table: str) -> None:
    server.cli("router", "set", "-", input=table)


def trace(tmp: Path, name: str) -> tuple[str, ...]:
    return ("-trace_msg", "-message_file", str(tmp / f"{name}.msg"))


def test_two_phones_register_with_digest_and_one_calls_the_other(
        tmp_path: Path, server: WaypostServer) -> None:
    alice_port, bob_port = free_port(), free_port()
    for user, port in (("bob", bob_port), ("alice", alice_port)):
        done = register(tmp_path, server, user, port)
        assert done.ok, done.report()
    listed = server.cli("sip", "registrations").stdout
    assert f"127.0.0.1:{bob_port}" in listed and f"127.0.0.1:{alice_port}" in listed
    try:
        with Sipp(tmp_path, "call_uas.xml", port=bob_port, timeout=30) as bob:
            call = Sipp(tmp_path, "call_uac.xml", remote=proxy(server), port=alice_port,
                        service="bob", keys={"domain": DOMAIN, "caller": f"alice@{DOMAIN}"},
                        calls=5, rate=10, limit=2, timeout=30,
                        extra=trace(tmp_path, "alice")).run()
            assert call.ok, call.report()
            assert (call.successful, call.failed) == (5, 0)
        assert bob.result is not None and bob.result.successful == 5, bob.result.report()
        sent = (tmp_path / "alice.msg").read_text(errors="replace")
        # the 200 carried Waypost's Record-Route, and the BYE went along it to bob's phone
        assert f"Record-Route: <sip:127.0.0.1:{server.port('SIPPort')};lr" in sent
        bye = sent.split("BYE sip:", 1)[1].split("\n\n", 1)[0]
        assert f"127.0.0.1:{bob_port}" in bye.splitlines()[0]
        assert f"Route: <sip:127.0.0.1:{server.port('SIPPort')};lr" in bye
    finally:
        unregister_all(server, "alice")
        unregister_all(server, "bob")


def test_a_user_with_two_phones_rings_both_and_the_other_is_cancelled(
        tmp_path: Path, server: WaypostServer) -> None:
    desk, soft = free_port(), free_port()
    for port in (desk, soft):
        done = register(tmp_path, server, "bob", port)
        assert done.ok, done.report()
    try:
        with Sipp(tmp_path, "ring_cancel_uas.xml", port=soft, timeout=30) as ringing, \
                Sipp(tmp_path, "call_uas.xml", port=desk, timeout=30) as answering:
            call = Sipp(tmp_path, "call_uac.xml", remote=proxy(server), service="bob",
                        keys={"domain": DOMAIN, "caller": "carol@127.0.0.1"},
                        calls=3, rate=2, limit=1, timeout=30).run()
            assert call.ok, call.report()
        assert answering.result is not None and answering.result.successful == 3, \
            answering.result.report()
        # every call rang the soft phone too, and it was CANCELled (it answered 487)
        assert ringing.result is not None and ringing.result.successful == 3, \
            ringing.result.report()
    finally:
        unregister_all(server, "bob")


def test_signal_via_record_with_a_port_uses_the_a_record_not_srv(
        tmp_path: Path, server: WaypostServer, dns: TestDNSServer) -> None:
    """How To: writing the port makes Waypost skip SRV. The SRV records
    point at a trap phone that must never ring."""
    with Sipp(tmp_path, "call_uas.xml", timeout=30) as friend, \
            Sipp(tmp_path, "call_uas.xml", timeout=30) as trap:
        dns.set("sip.friend.com", "A", ["127.0.0.1"])
        dns.set("trap.friend.com", "A", ["127.0.0.1"])
        for name in ("_sip._udp.sip.friend.com", "_sip._udp.friend.com"):
            dns.set(name, "SRV", [(0, 0, trap.port, "trap.friend.com")])
        routes(server, f"Signal:friend.com = friend.com@sip.friend.com.{friend.port}._via\n")
        # a local user calling out: challenged (407) first, then relayed
        call = Sipp(tmp_path, "call_uac_auth.xml", remote=proxy(server), service="bob",
                    keys={"domain": "friend.com", "caller": f"alice@{DOMAIN}"},
                    auth_user="alice", auth_password=PASSWORDS["alice"],
                    auth_uri="bob@friend.com", calls=2, rate=1, limit=1, timeout=30,
                    extra=trace(tmp_path, "out")).run()
        assert call.ok, call.report()
    assert friend.result is not None and friend.result.successful == 2, friend.result.report()
    assert trap.result is not None and trap.result.created == 0, trap.result.report()
    sent = (tmp_path / "out.msg").read_text(errors="replace")
    assert "SIP/2.0 407 " in sent and "Proxy-Authorization: Digest" in sent


def test_a_plain_relay_record_follows_the_srv_record(
        tmp_path: Path, server: WaypostServer, dns: TestDNSServer) -> None:
    with Sipp(tmp_path, "call_uas.xml", timeout=30) as friend:
        dns.set("_sip._udp.friend.com", "SRV", [(0, 0, friend.port, "sipsrv.friend.com")])
        dns.set("sipsrv.friend.com", "A", ["127.0.0.1"])
        dns.set("friend.com", "A", ["127.0.0.1"])  # port 5060: nobody there
        routes(server, "Relay: friend.com = friend.com@friend.com._via\n")
        call = Sipp(tmp_path, "call_uac.xml", remote=proxy(server), service="bob",
                    keys={"domain": "friend.com", "caller": "carol@elsewhere.example"},
                    calls=2, rate=1, limit=1, timeout=30).run()
        assert call.ok, call.report()
    assert friend.result is not None and friend.result.successful == 2, friend.result.report()


def test_an_untrusted_invite_to_a_remote_domain_gets_403(
        tmp_path: Path, server: WaypostServer, dns: TestDNSServer) -> None:
    """The relaying rule of mail (router.md §8) for signals: a stranger
    (outside ClientIPAddresses, not authenticated) may not send to a remote
    domain; the same request from a Client IP Address is relayed."""
    with Sipp(tmp_path, "message_uas.xml", timeout=30) as far:
        dns.set("far.example", "A", ["127.0.0.1"])
        routes(server, f"Signal:far.example = far.example@far.example.{far.port}._via\n")
        with SipUA(server.port("SIPPort"), local="127.0.0.2") as stranger:
            for method in ("INVITE", "MESSAGE"):
                answer = stranger.ask(stranger.request(method, "sip:bob@far.example",
                                                       from_="sip:mallory@far.example"))
                assert (answer.status, answer.reason) == (403, "Forbidden"), method
        with SipUA(server.port("SIPPort"), local="127.0.0.1", timeout=10) as client:
            answer = client.ask(client.request("MESSAGE", "sip:bob@far.example",
                                               from_="sip:carol@far.example",
                                               extra=(("Content-Type", "text/plain"),),
                                               body=b"hello"))
            assert answer.status == 200
    assert far.result is not None and far.result.successful == 1, far.result.report()


def test_message_between_two_registered_users(tmp_path: Path, server: WaypostServer) -> None:
    bob_port = free_port()
    done = register(tmp_path, server, "bob", bob_port)
    assert done.ok, done.report()
    try:
        with Sipp(tmp_path, "message_uas.xml", port=bob_port, timeout=30) as bob:
            sent = Sipp(tmp_path, "message_uac.xml", remote=proxy(server), service="bob",
                        keys={"domain": DOMAIN, "caller": f"alice@{DOMAIN}"},
                        calls=3, rate=5, timeout=20).run()
            assert sent.ok, sent.report()
        assert bob.result is not None and bob.result.successful == 3, bob.result.report()
    finally:
        unregister_all(server, "bob")
