"""The How To's relaying recipes, end to end (issue 3 point 6).

A real Waypost relays mail from an untrusted client (plain SMTP from
127.0.0.1, which is not a Client IP Address here) to real receivers on
loopback: a private Postfix on 127.0.0.3:25 for the MX recipe, and
recording SMTP sinks on other 127.0.0.x addresses, port 25, for the rest
-- so that a host found through MX or A is reached on the standard port, as
in production. MX and A records come from the test's DNS server.

Router Table under test (router.md §6.1, §8)::

    Relay:friend.com = friend.com._via                          MX of friend.com
    Relay:friend2.com = friend2.com@firewall.friend2.com._via   another host, envelope kept
    Relay:iplit.com = iplit.com@[127.0.0.5]                     an IP literal, no DNS
    Relay:iphost.com = iphost.com@127.0.0.5._via                an IP host, no DNS
    Mail:target.domain = target.domain@relay.domain.25._via     explicit port: A only, MX bypassed
    Relay:Mail:target2.domain = target2.domain@relay.domain.25._via
    other-port = 127.0.0.1.PORT._via                            a sibling server on another port
    Relay: client57.com = client57.com@other-port

Then what happens after a refusal: a 5xx bounces to the (local) sender as
a DSN, a 4xx is retried after ``waypost queue flush``, and a message from
the null sender is never bounced.
"""

from __future__ import annotations

import email
import smtplib
import socket
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.mailbox import read_mailbox
from tests.support.postfix import PostfixInstance, postfix_missing_reason
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

from waypost.protocols.smtp.wire import Reply

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(postfix_missing_reason() is not None, reason=postfix_missing_reason() or ""),
]

UNTRUSTED = "127.0.0.1"
TRUSTED = "127.0.0.2"  # the only Client IP Address
SENDER = "sender@main.dom"  # a local account, so bounces can be read back
NOWHERE = "127.0.0.9"  # nothing listens here: mail sent there never arrives

RECORDS = {
    "friend.com": {"MX": [(10, "mx.friend.com")]},
    "mx.friend.com": {"A": ["127.0.0.3"]},
    "friend2.com": {"MX": [(10, "mx.friend2.com")]},
    "mx.friend2.com": {"A": [NOWHERE]},
    "firewall.friend2.com": {"A": ["127.0.0.4"]},
    "iplit.com": {"MX": [(10, "mx.friend2.com")]},
    "iphost.com": {"MX": [(10, "mx.friend2.com")]},
    "target.domain": {"MX": [(10, "mx.elsewhere.test")]},
    "target2.domain": {"MX": [(10, "mx.elsewhere.test")]},
    "relay.domain": {"A": ["127.0.0.6"], "MX": [(10, "mx.elsewhere.test")]},
    "mx.elsewhere.test": {"A": ["127.0.0.7"]},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receivers:
    """Every receiving host of the module, by the name the test uses."""

    def __init__(self) -> None:
        self.friend = PostfixInstance("127.0.0.3", domains=["friend.com"], hostname="mx.friend.com")
        self.firewall = SMTPSink("127.0.0.4", 25, hostname="firewall.friend2.com")
        self.iplit = SMTPSink("127.0.0.5", 25, hostname="iplit-host")
        self.relay_domain = SMTPSink("127.0.0.6", 25, hostname="relay.domain")
        self.elsewhere = SMTPSink("127.0.0.7", 25, hostname="mx.elsewhere.test")
        self.other_port = SMTPSink("127.0.0.1", free_port(), hostname="sibling")
        self.sinks = [self.firewall, self.iplit, self.relay_domain, self.elsewhere, self.other_port]

    def __enter__(self) -> Receivers:
        started: list[SMTPSink] = []
        try:
            for sink in self.sinks:
                started.append(sink.start())
            self.friend.start()
        except BaseException:
            for sink in started:
                sink.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.friend.stop()
        for sink in self.sinks:
            sink.stop()


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    with Receivers() as r:
        yield r


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receivers: Receivers
) -> Iterator[WaypostServer]:
    with TestDNSServer(RECORDS) as dns:
        srv = WaypostServer(tmp_path_factory.mktemp("recipes") / "var", domain="main.dom").init()
        srv.cli("account", "add", SENDER, "--password", "sender-pw-1234")
        srv.cli("settings", "set", "DNSServers", dns.address)
        srv.cli("settings", "set", "ClientIPAddresses", TRUSTED)
        table = "\n".join(
            [
                "Relay:friend.com = friend.com._via",
                "Relay:friend2.com = friend2.com@firewall.friend2.com._via",
                "Relay:iplit.com = iplit.com@[127.0.0.5]",
                "Relay:iphost.com = iphost.com@127.0.0.5._via",
                "Mail:target.domain = target.domain@relay.domain.25._via",
                "Relay:Mail:target2.domain = target2.domain@relay.domain.25._via",
                f"other-port = 127.0.0.1.{receivers.other_port.port}._via",
                "Relay: client57.com = client57.com@other-port",
                "",
            ]
        )
        srv.cli("router", "set", "-", input=table)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def body(rcpt: str, subject: str) -> bytes:
    return (
        f"From: Sender <{SENDER}>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@main.dom>\r\n\r\nHello {rcpt}.\r\n"
    ).encode()


def send(
    server: WaypostServer, rcpt: str, subject: str, *, source: str = UNTRUSTED, sender: str = SENDER
) -> bytes:
    data = body(rcpt, subject)
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("client.example")
        assert c.sendmail(sender, [rcpt], data) == {}
    return data


def arrived(sink: SMTPSink, subject: str) -> list:
    return [m for m in sink.messages if f"Subject: {subject}\r\n".encode() in m.data]


def wait_arrival(server: WaypostServer, sink: SMTPSink, subject: str):
    return server.wait_for(lambda: arrived(sink, subject), what=f"{subject!r} at {sink.hostname}")[
        0
    ]


# -- the recipes ---------------------------------------------------------------------


def test_relay_record_through_the_domains_mx(server: WaypostServer, receivers: Receivers) -> None:
    sent = send(server, "bob@friend.com", "recipe mx")
    got = [
        (rcpt, data)
        for rcpt, data in receivers.friend.wait_for_messages(1)
        if b"Subject: recipe mx\n" in data
    ]
    assert [rcpt for rcpt, _ in got] == ["bob@friend.com"]
    assert got[0][1].endswith(sent.replace(b"\r\n", b"\n"))
    assert b"by mx.friend.com (Postfix)" in got[0][1]


def test_relay_record_via_a_firewall_host(server: WaypostServer, receivers: Receivers) -> None:
    send(server, "bob@friend2.com", "recipe firewall")
    msg = wait_arrival(server, receivers.firewall, "recipe firewall")
    assert msg.rcpts == ["bob@friend2.com"]  # envelope kept, host from the record
    assert msg.mail_from == SENDER


@pytest.mark.parametrize(
    "domain",
    ["iplit.com", "iphost.com"],
)
def test_ip_address_record(server: WaypostServer, receivers: Receivers, domain: str) -> None:
    subject = f"recipe ip {domain}"
    send(server, f"carol@{domain}", subject)
    msg = wait_arrival(server, receivers.iplit, subject)
    assert msg.rcpts == [f"carol@{domain}"]


def test_explicit_port_bypasses_the_mx(server: WaypostServer, receivers: Receivers) -> None:
    """``relay.domain.25._via``: the A record of relay.domain on port 25,
    though both target.domain and relay.domain have MX records pointing at
    another host. A plain ``Mail:`` record relays for trusted clients."""
    send(server, "dave@target.domain", "recipe port 25", source=TRUSTED)
    msg = wait_arrival(server, receivers.relay_domain, "recipe port 25")
    assert msg.rcpts == ["dave@target.domain"]
    send(server, "erin@target2.domain", "recipe port 25 relay")
    msg = wait_arrival(server, receivers.relay_domain, "recipe port 25 relay")
    assert msg.rcpts == ["erin@target2.domain"]
    assert receivers.elsewhere.messages == []


def test_relay_to_another_port_through_a_named_record(
    server: WaypostServer, receivers: Receivers
) -> None:
    send(server, "frank@client57.com", "recipe other port")
    msg = wait_arrival(server, receivers.other_port, "recipe other port")
    assert msg.rcpts == ["frank@client57.com"]


@pytest.mark.parametrize("rcpt", ["x@target.domain", "x@unlisted.example"])
def test_untrusted_relay_without_relay_prefix_is_refused(server: WaypostServer, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30, source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("client.example")
        c.mail(SENDER)
        code, text = c.rcpt(rcpt)
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)


# -- after a refusal -------------------------------------------------------------------


def bounces(server: WaypostServer, about: str) -> list[bytes]:
    return [data for data in read_mailbox(server.data, SENDER) if about.encode() in data]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_permanent_refusal_bounces_to_the_local_sender(
    server: WaypostServer, receivers: Receivers
) -> None:
    receivers.firewall.rcpt_replies["gone@friend2.com"] = Reply(550, "5.1.1", "No such user")
    sent = send(server, "gone@friend2.com", "to a gone user")
    [raw] = server.wait_for(lambda: bounces(server, "gone@friend2.com"), what="the DSN")
    assert sent in raw  # the original, byte for byte
    dsn = parse(raw)
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@main.dom"
    assert dsn["To"].addresses[0].addr_spec == SENDER
    assert dsn.get_content_type() == "multipart/report"
    human, status, original = dsn.iter_parts()
    assert "550 5.1.1 No such user" in " ".join(human.get_content().split())
    rcpt = status.get_payload()[1]
    assert rcpt["Final-Recipient"] == "rfc822; gone@friend2.com"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; firewall.friend2.com"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload(0)["Subject"] == "to a gone user"


def queue_text(server: WaypostServer) -> str:
    return server.cli("queue", "list").stdout


def test_temporary_refusal_is_retried_after_flush(
    server: WaypostServer, receivers: Receivers
) -> None:
    sink = receivers.firewall
    sink.rcpt_replies["later@friend2.com"] = Reply(451, "4.2.0", "try again later")
    send(server, "later@friend2.com", "to a busy mailbox")
    server.wait_for(
        lambda: "deferred" in queue_text(server) and "later@friend2.com" in queue_text(server),
        what="the deferral",
    )
    assert arrived(sink, "to a busy mailbox") == []
    del sink.rcpt_replies["later@friend2.com"]
    server.cli("queue", "flush")
    msg = wait_arrival(server, sink, "to a busy mailbox")
    assert msg.rcpts == ["later@friend2.com"]
    server.wait_for(lambda: "later@friend2.com" not in queue_text(server), what="an empty queue")
    assert bounces(server, "later@friend2.com") == []


def test_a_bounce_is_never_bounced(server: WaypostServer, receivers: Receivers) -> None:
    sink = receivers.firewall
    sink.rcpt_replies["gone2@friend2.com"] = Reply(550, "5.1.1", "No such user")
    before = [len(read_mailbox(server.data, a)) for a in (SENDER, "postmaster@main.dom")]
    send(server, "gone2@friend2.com", "from the null sender", sender="")
    server.wait_for(
        lambda: any("gone2@friend2.com" in line for _, _, line in sink.commands),
        what="the delivery attempt",
    )
    server.wait_for(lambda: "gone2@friend2.com" not in queue_text(server), what="an empty queue")
    # nothing was queued in its place (a DSN is queued in the same commit
    # as the failure it reports), and no mailbox grew
    assert "the queue is empty" in queue_text(server)
    after = [len(read_mailbox(server.data, a)) for a in (SENDER, "postmaster@main.dom")]
    assert after == before
