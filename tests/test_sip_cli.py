"""``waypost sip registrations|unregister`` through the real ``waypost``
command, over a data directory made by ``waypost init``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.signals.registrar import Contact, RegisterRequest, register

DESK = "sip:alice@192.0.2.7:5062"
SOFT = "sip:alice@192.0.2.8:5070;transport=tcp"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sipcli") / "var", domain="main.dom").init()
    srv.cli("domain", "add", "domain.dom")
    srv.cli("account", "add", "alice@domain.dom")
    srv.cli("alias", "add", "ali@domain.dom", "alice@domain.dom")
    yield srv


def add(data: Path, *contacts: Contact, cseq: int, expires: int = 3600,
        address: str = "192.0.2.7") -> None:
    svc = open_services(data)
    try:
        out = register(svc, RegisterRequest(
            to="sip:alice@domain.dom", call_id="cli-test", cseq=cseq, contacts=contacts,
            account="alice@domain.dom", expires=expires, transport="UDP",
            address=address, port=5062, user_agent="Linphone/5.2"))
        assert out.status == 200, out
    finally:
        svc.close()


def test_registrations_empty_then_listed_by_any_name(server: WaypostServer) -> None:
    assert server.cli("sip", "registrations").stdout.strip() == "no registrations"
    assert server.cli("sip", "registrations", "ali@domain.dom").stdout.strip() == (
        "no registrations of ali@domain.dom")
    add(server.data, Contact(DESK, q="0.5"), Contact(SOFT, expires=600), cseq=1)
    out = server.cli("sip", "registrations").stdout.splitlines()
    assert out[0].split() == ["account", "contact", "expires", "in", "q", "source", "user",
                              "agent"]
    soft, desk = (line.split() for line in out[1:])
    assert soft[:2] == ["alice@domain.dom", SOFT] and soft[3:] == [
        "-", "UDP", "192.0.2.7:5062", "Linphone/5.2"]
    assert desk[:2] == ["alice@domain.dom", DESK] and desk[3] == "0.5"
    assert desk[2].startswith(("59m", "1h00m")) and soft[2].startswith(("9m", "10m"))
    assert server.cli("sip", "registrations", "ali%domain.dom").stdout == "\n".join(out) + "\n"
    server.cli("sip", "unregister", "alice@domain.dom")
    add(server.data, Contact("sip:alice@[2001:db8::7]:5062"), cseq=2, address="2001:db8::7")
    assert "UDP [2001:db8::7]:5062" in server.cli("sip", "registrations").stdout
    server.cli("sip", "unregister", "alice@domain.dom")


def test_unregister_one_contact_then_all(server: WaypostServer) -> None:
    add(server.data, Contact(DESK), Contact(SOFT), cseq=int(time.time()))
    out = server.cli("sip", "unregister", "ali@domain.dom", "SIP:alice@192.0.2.7:5062")
    assert out.stdout.strip() == "1 registration(s) removed"
    listed = server.cli("sip", "registrations", "alice@domain.dom").stdout
    assert SOFT in listed and DESK not in listed
    missing = server.cli("sip", "unregister", "alice@domain.dom", DESK, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"error: {DESK} is not registered for alice@domain.dom")
    assert server.cli("sip", "unregister", "alice@domain.dom").stdout.strip() == (
        "1 registration(s) removed")
    assert server.cli("sip", "registrations").stdout.strip() == "no registrations"


def test_unknown_accounts_are_one_error_line(server: WaypostServer) -> None:
    for args in (("registrations", "nobody@domain.dom"), ("unregister", "nobody@domain.dom")):
        out = server.cli("sip", *args, check=False)
        assert (out.returncode, out.stderr.strip()) == (1, "error: no account nobody@domain.dom")
