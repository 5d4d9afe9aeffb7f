"""The registrar on the wire (issue 14 point 2) against a real ``waypost
serve`` over UDP, TCP and TLS: the digest challenge (realm = domain,
SHA-256 then MD5), bindings in the 200, retransmissions absorbed, nonce
counts never reused, registrations kept across a restart and listed by
``waypost sip registrations``; and what the core answers itself (OPTIONS,
483, 481; the rest is the proxy's: 480 for a user without a phone)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from tests.support.server import WaypostServer
from tests.support.sip_ua import SipUA, challenge_params

ALICE = "alice@domain.dom"
PASSWORD = "alice-secret-1"


def make_server(data) -> WaypostServer:  # type: ignore[no-untyped-def]
    srv = WaypostServer(data, domain="main.dom").init()
    srv.cli("domain", "add", "domain.dom")
    srv.cli("account", "add", ALICE, "--password", PASSWORD, "--odmr")
    srv.cli("alias", "add", "ali@domain.dom", ALICE)
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = make_server(tmp_path_factory.mktemp("sipwire") / "var").start()
    yield srv
    srv.stop()


def ua(server: WaypostServer, transport: str = "udp", **kw) -> SipUA:  # type: ignore[no-untyped-def]
    port = server.port("SIPTLSPort" if transport == "tls" else "SIPPort")
    return SipUA(port, transport=transport, **kw)


def test_serve_prints_the_sip_udp_tcp_and_tls_listeners(server: WaypostServer) -> None:
    lines = {line.split()[0]: line.split()[1] for line in server.banner.splitlines()
             if line.strip().startswith("SIP/")}
    assert lines == {"SIP/UDP": f"127.0.0.1:{server.port('SIPPort')}",
                     "SIP/TCP": f"127.0.0.1:{server.port('SIPPort')}",
                     "SIP/TLS": f"127.0.0.1:{server.port('SIPTLSPort')}"}
    assert server.port("SIPTLSPort") == 5061 + server.offset


def test_register_is_challenged_with_realm_domain_sha256_first_then_md5(
        server: WaypostServer) -> None:
    with ua(server) as phone:
        first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                              extra=(("Contact", phone.contact("alice")),))
        answer = phone.ask(first)
        assert (answer.status, answer.reason) == (401, "Unauthorized")
        offers = [challenge_params(v) for v in answer.headers.fields("WWW-Authenticate")]
        assert [o["algorithm"] for o in offers] == ["SHA-256", "MD5"]
        assert {o["realm"] for o in offers} == {"domain.dom"}
        assert all(o["qop"] == "auth" for o in offers)


@pytest.mark.parametrize(("transport", "algorithm"), [
    ("udp", "SHA-256"), ("udp", "MD5"), ("tcp", "SHA-256"), ("tcp", "MD5"), ("tls", "SHA-256")])
def test_register_binds_the_contact_over_each_transport_and_algorithm(
        server: WaypostServer, transport: str, algorithm: str) -> None:
    with ua(server, transport) as phone:
        contact = phone.contact("alice")
        ok = phone.register(ALICE, PASSWORD, contact=contact, expires=600, algorithm=algorithm)
        assert (ok.status, ok.reason) == (200, "OK"), ok.to_bytes()
        mine = [c for c in ok.headers.values("Contact") if c.startswith(contact)]
        assert len(mine) == 1 and ";expires=" in mine[0]
        assert 590 <= int(mine[0].rpartition("expires=")[2].split(";")[0]) <= 600
        assert ok.headers.get("Date", ).endswith("GMT")  # type: ignore[union-attr]
        listed = server.cli("sip", "registrations", ALICE).stdout
        assert contact.strip("<>") in listed and f"{transport.upper()} 127.0.0.1:" in listed
        gone = phone.register(ALICE, PASSWORD, contact=contact, expires=0)
        assert gone.status == 200
        assert contact.strip("<>") not in server.cli("sip", "registrations").stdout


def test_an_alias_registers_on_the_account(server: WaypostServer) -> None:
    with ua(server) as phone:
        ok = phone.register("ali@domain.dom", PASSWORD, username="alice",
                            contact=phone.contact("ali"))
        assert ok.status == 200
        assert phone.contact("ali").strip("<>") in server.cli(
            "sip", "registrations", ALICE).stdout
        assert phone.register("ali@domain.dom", PASSWORD, username="alice",
                              contact="*", expires=0).status == 200


def test_retransmitted_register_gets_the_same_answer_without_a_second_registrar_run(
        server: WaypostServer) -> None:
    """A second run with the same Call-ID and CSeq would be a 500 (RFC 3261
    §10.3 step 7), and a new To tag and Date: the answer must be the same bytes."""
    with ua(server) as phone:
        headers = (("Contact", phone.contact("alice")), ("Expires", "600"))
        first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}", extra=headers)
        challenge = phone.ask(first)
        signed = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}", extra=(
            *headers, ("Authorization", phone.authorization(challenge, first, "alice",
                                                            PASSWORD))))
        once = phone.ask(signed)
        twice = phone.ask(signed)
        assert once.status == 200
        assert twice.to_bytes() == once.to_bytes()
        phone.register(ALICE, PASSWORD, contact="*", expires=0)


def test_a_replayed_nonce_count_is_challenged_again(server: WaypostServer) -> None:
    with ua(server) as phone:
        headers = (("Contact", phone.contact("alice")),)
        first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}", extra=headers)
        challenge = phone.ask(first)
        auth = phone.authorization(challenge, first, "alice", PASSWORD, nc=1)
        ok = phone.ask(phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                     extra=(*headers, ("Authorization", auth))))
        assert ok.status == 200
        # the same credentials in a new transaction (a captured request replayed)
        replay = phone.ask(phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                         extra=(*headers, ("Authorization", auth))))
        assert replay.status == 401
        phone.register(ALICE, PASSWORD, contact="*", expires=0)


def test_wrong_password_and_unknown_domain(server: WaypostServer) -> None:
    with ua(server) as phone:
        assert phone.register(ALICE, "wrong").status == 401
        assert phone.register("alice@elsewhere.example", PASSWORD).status in (404, 501)
        # an unknown name in our domain is challenged like a known one
        assert phone.ask(phone.request("REGISTER", "sip:domain.dom",
                                       to="sip:nobody@domain.dom")).status == 401


def test_too_brief_expiry_gets_423_with_min_expires(server: WaypostServer) -> None:
    with ua(server) as phone:
        answer = phone.register(ALICE, PASSWORD, expires=10)
        assert (answer.status, answer.headers.get("Min-Expires")) == (423, "60")


def test_options_to_the_server_gets_200_with_allow_accept_supported(
        server: WaypostServer) -> None:
    for target in ("sip:domain.dom", f"sip:127.0.0.1:{server.port('SIPPort')}"):
        with ua(server, "tcp") as phone:
            answer = phone.ask(phone.request("OPTIONS", target, max_forwards=0))
            assert answer.status == 200
            assert "REGISTER" in (answer.headers.get("Allow") or "")
            assert answer.headers.get("Accept") == "application/sdp"
            assert "Supported" in answer.headers


def test_what_the_core_refuses_before_the_proxy(server: WaypostServer) -> None:
    with ua(server) as phone:
        assert phone.ask(phone.request("INVITE", f"sip:{ALICE}", max_forwards=0)).status == 483
        assert phone.ask(phone.request("CANCEL", f"sip:{ALICE}")).status == 481
        # what the core does not answer goes to the proxy: alice has no phone now
        invite = phone.ask(phone.request("INVITE", f"sip:{ALICE}"))
        assert invite.status == 480
        options = phone.ask(phone.request("OPTIONS", f"sip:{ALICE}"))
        assert options.status == 480  # a user's OPTIONS is the proxy's to forward


def test_registrations_survive_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(tmp_path / "var").start()
    try:
        with ua(srv, "tcp") as phone:
            contact = phone.contact("alice")
            assert phone.register(ALICE, PASSWORD, contact=contact, expires=3600).status == 200
        srv.stop()
        assert contact.strip("<>") in srv.cli("sip", "registrations", "ali@domain.dom").stdout
        srv.start()
        with ua(srv) as phone:
            query = phone.register(ALICE, PASSWORD, contact="", expires=None)
            # a REGISTER without Contact asks for the bindings (§10.2.3)
            assert query.status == 200
            assert [c.partition(">")[0] + ">" for c in query.headers.values("Contact")] == [contact]
    finally:
        srv.stop()


def test_an_expired_nonce_gets_a_new_challenge_with_stale_true(server: WaypostServer) -> None:
    import time

    server.cli("settings", "set", "SIPNonceLifetime", "1")
    try:
        with ua(server) as phone:
            headers = (("Contact", phone.contact("alice")),)
            first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                  extra=headers)
            challenge = phone.ask(first)
            time.sleep(2.2)
            late = phone.ask(phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                           extra=(*headers, ("Authorization", phone.authorization(
                                               challenge, first, "alice", PASSWORD)))))
            assert late.status == 401
            offers = [challenge_params(v) for v in late.headers.fields("WWW-Authenticate")]
            assert offers and all(o.get("stale") == "true" for o in offers)
            assert {o["nonce"] for o in offers} != {
                challenge_params(challenge.headers.fields("WWW-Authenticate")[0])["nonce"]}
    finally:
        server.cli("settings", "set", "SIPNonceLifetime", "default")


def test_sip_digest_algorithms_setting_orders_and_limits_the_challenge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``SIPDigestAlgorithms``: sipp and many phones read only the first
    challenge and know only MD5; with ``MD5`` alone nothing else is offered
    and a SHA-256 answer is challenged again instead of accepted."""
    srv = make_server(tmp_path / "var")
    srv.cli("settings", "set", "SIPDigestAlgorithms", "md5")
    assert "MD5" in srv.cli("settings", "show", "SIPDigestAlgorithms").stdout
    assert srv.cli("settings", "set", "SIPDigestAlgorithms", "SHA-1", check=False).returncode
    srv.start()
    try:
        with ua(srv) as phone:
            answer = phone.ask(phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                             extra=(("Contact", phone.contact("alice")),)))
            offers = [challenge_params(v) for v in answer.headers.fields("WWW-Authenticate")]
            assert [o["algorithm"] for o in offers] == ["MD5"]
            # a right SHA-256 answer to the MD5 nonce: not accepted, challenged again
            first = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}",
                                  extra=(("Contact", phone.contact("alice")),))
            challenge = phone.ask(first)
            forged = copy.deepcopy(challenge)
            forged.headers.remove("WWW-Authenticate")
            for value in challenge.headers.fields("WWW-Authenticate"):
                forged.headers.add("WWW-Authenticate", value.replace("MD5", "SHA-256"))
            auth = phone.authorization(forged, first, "alice", PASSWORD, algorithm="SHA-256")
            second = phone.request("REGISTER", "sip:domain.dom", to=f"sip:{ALICE}", extra=(
                ("Contact", phone.contact("alice")), ("Authorization", auth)))
            again = phone.ask(second)
            assert again.status == 401
            assert [challenge_params(v)["algorithm"]
                    for v in again.headers.fields("WWW-Authenticate")] == ["MD5"]
            assert phone.register(ALICE, PASSWORD, algorithm="MD5").status == 200
    finally:
        srv.stop()
