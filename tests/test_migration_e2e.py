"""Migrating a domain account by account (issue 3 point 5, router.md §10 row 5).

``domain.dom`` has moved to Waypost, but only ``alice`` exists here yet;
everyone else still lives on the old server. The domain's Mail to Unknown
reroutes to ``*%domain.dom@otherserver.dom._via``, so mail for a user not
yet created here goes to the old server -- a real Postfix on port 25 of
127.0.0.2, found through the MX record that the test's DNS server gives for
``otherserver.dom`` -- with the envelope and the message exactly as sent.
Once ``bob`` is created here, his mail stays local.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.mailbox import read_mailbox
from tests.support.postfix import PostfixInstance, postfix_missing_reason
from tests.support.server import WaypostServer

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(postfix_missing_reason() is not None, reason=postfix_missing_reason() or ""),
]

OLD_SERVER_IP = "127.0.0.2"
UNTRUSTED = "127.0.0.1"
# Postfix's own trace and delivery fields, written above what it received
POSTFIX_FIELDS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")


@pytest.fixture(scope="module")
def dns() -> Iterator[TestDNSServer]:
    records = {
        "otherserver.dom": {"MX": [(10, "mx.otherserver.dom")]},
        "mx.otherserver.dom": {"A": [OLD_SERVER_IP]},
    }
    with TestDNSServer(records) as server:
        yield server


@pytest.fixture(scope="module")
def old_server() -> Iterator[PostfixInstance]:
    with PostfixInstance(OLD_SERVER_IP, domains=["domain.dom"], hostname="mx.otherserver.dom") as p:
        yield p


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, dns: TestDNSServer, old_server: PostfixInstance
) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("migration") / "var", domain="main.dom").init()
    srv.cli("domain", "add", "domain.dom")
    srv.cli("account", "add", "alice@domain.dom", "--password", "alice-pw-1234")
    srv.cli(
        "domain", "set", "domain.dom",
        "MailToUnknown", "Rerouted to",
        "MailRerouteAddress", "*%domain.dom@otherserver.dom._via",
    )  # fmt: skip
    srv.cli("settings", "set", "DNSServers", dns.address)
    srv.cli("settings", "set", "ClientIPAddresses", "127.0.0.2")
    srv.start()
    yield srv
    srv.stop()


def message(to: str, subject: str) -> bytes:
    """A message whose header a careless relay would change: folded and
    encoded fields, odd spacing, a field name in lower case, 8-bit text."""
    return (
        b"From: Carol Sender <carol@sender.example>\r\n"
        + f"To: {to}\r\n".encode()
        + f"Subject: {subject}\r\n".encode()
        + b"X-Folded: first part\r\n"
        b"\tsecond part,   with  spaces\r\n"
        b"x-lower-case: kept as written\r\n"
        b"Comments: =?utf-8?q?caf=C3=A9?=\r\n"
        b"Message-ID: <" + subject.replace(" ", ".").encode() + b"@sender.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Hello,\r\n"
        b".a line that starts with a dot\r\n"
        b"caf\xc3\xa9\r\n"
    )


def send(server: WaypostServer, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("client.sender.example")
        assert c.sendmail("carol@sender.example", [rcpt], data) == {}


def inbox(server: WaypostServer, account: str) -> list[bytes]:
    return read_mailbox(server.data, account)


def test_existing_account_gets_its_mail_here(server: WaypostServer) -> None:
    send(server, "alice@domain.dom", message("alice@domain.dom", "for alice"))
    stored = server.wait_for(lambda: inbox(server, "alice@domain.dom"), what="alice's INBOX")
    assert b"Subject: for alice\r\n" in stored[0]
    listing = server.cli("mailbox", "show", "alice@domain.dom").stdout
    assert "for alice" in listing


def test_unknown_user_goes_to_the_old_server_unchanged(
    server: WaypostServer, old_server: PostfixInstance, dns: TestDNSServer
) -> None:
    sent = message("bob@domain.dom", "for bob on the old server")
    send(server, "bob@domain.dom", sent)
    rcpt, stored = old_server.wait_for_messages(1)[0]
    assert rcpt == "bob@domain.dom"
    # reached through otherserver.dom's MX, on the standard port
    assert ("otherserver.dom", "MX") in dns.queries
    # Postfix stores LF line ends; everything the client sent follows the
    # trace fields, byte for byte
    expected = sent.replace(b"\r\n", b"\n")
    assert stored.endswith(expected), stored
    prefix = stored[: -len(expected)]
    fields = _fields(prefix)
    assert all(f.lower().startswith(POSTFIX_FIELDS) for f in fields), fields
    received = [f for f in fields if f.lower().startswith(b"received:")]
    assert len(received) == 2  # Postfix's own, then ours
    assert b"(Postfix)" in received[0]
    assert b"main.dom" in received[1]
    assert b"X-Original-To: bob@domain.dom\n" in prefix


def test_once_created_here_the_user_stays_local(
    server: WaypostServer, old_server: PostfixInstance
) -> None:
    before = old_server.count()
    server.cli("account", "add", "bob@domain.dom", "--password", "bob-pw-123456")
    send(server, "bob@domain.dom", message("bob@domain.dom", "for bob here"))
    stored = server.wait_for(lambda: inbox(server, "bob@domain.dom"), what="bob's INBOX")
    assert b"Subject: for bob here\r\n" in stored[0]
    assert old_server.count() == before


def _fields(header: bytes) -> list[bytes]:
    """Header lines joined with their continuation lines."""
    fields: list[bytes] = []
    for line in header.split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields


def test_fields_helper() -> None:
    assert _fields(b"A: 1\nB: 2\n\tx\n") == [b"A: 1", b"B: 2\n\tx"]
