"""The SMTP relay (smtp.md §2.1) against a loopback DNS server and SMTP sinks.

MX and A answers come from ``TestDNSServer``; the receivers are the Python
``SMTPSink`` on 127.0.0.1 and a free port, reached through
``RelayContext.default_port`` (the DefaultRemoteSMTPPort setting) for MX/A
targets and through an explicit port otherwise.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.smtp_sink import DEFAULT_EXTENSIONS, SMTPSink

from waypost.protocols.smtp.client import ClientTransport
from waypost.protocols.smtp.wire import Reply
from waypost.services.delivery.dns import Resolver
from waypost.services.delivery.outbound import OutboundMessage, OutboundRecipient, Outcome
from waypost.services.delivery.relay import Relay, RelayContext

# The relay over the real SMTP client, as server.py wires it.
RELAY = Relay(ClientTransport())
deliver = RELAY.deliver
deliver_over = RELAY.deliver_over

BODY = b"From: a@here.test\r\nTo: bob@there.test\r\nSubject: hi\r\n\r\nbody\r\n"


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def message(
    mid: str,
    *rcpts: str,
    mail_from: str = "a@here.test",
    params=None,
    first_key: int = 1,
    **rcpt_kw,
) -> OutboundMessage:
    return OutboundMessage(
        id=mid,
        mail_from=mail_from,
        recipients=tuple(
            OutboundRecipient(first_key + i, r, **rcpt_kw) for i, r in enumerate(rcpts)
        ),
        body=BODY,
        params=dict(params or {}),
    )


@pytest.fixture
def dns() -> Iterator[TestDNSServer]:
    with TestDNSServer() as server:
        yield server


def context(dns: TestDNSServer, port: int, **kw) -> RelayContext:
    return RelayContext(
        resolver=Resolver([dns.address], timeout=2),
        helo_name="main.dom",
        default_port=port,
        connect_timeout=3,
        command_timeout=5,
        data_timeout=5,
        **kw,
    )


def statuses(outcomes: list[Outcome]) -> dict[int, str]:
    return {o.key: o.status for o in outcomes}


# -- target resolution -------------------------------------------------------


def test_domain_goes_to_its_mx_and_messages_share_one_connection(dns: TestDNSServer) -> None:
    dns.load({"there.test": {"MX": [(10, "mx.there.test")]}, "mx.there.test": {"A": ["127.0.0.1"]}})
    with SMTPSink() as sink:
        msgs = [message("m1", "bob@there.test"), message("m2", "carol@there.test", first_key=2)]
        out = run(deliver("there.test", msgs, context(dns, sink.port)))
        assert [(o.key, o.status, o.code, o.remote) for o in out] == [
            (1, "delivered", 250, "mx.there.test"),
            (2, "delivered", 250, "mx.there.test"),
        ]
        assert [m.rcpts for m in sink.messages] == [["bob@there.test"], ["carol@there.test"]]
        assert sink.sessions == 1
        assert sink.messages[0].data == BODY
        assert sink.messages[0].helo == "main.dom"
        assert any(line.upper() == "RSET" for _, _, line in sink.commands)


def test_no_mx_means_the_domains_own_address(dns: TestDNSServer) -> None:
    dns.load({"there.test": {"A": ["127.0.0.1"]}})
    with SMTPSink() as sink:
        out = run(deliver("there.test", [message("m", "bob@there.test")], context(dns, sink.port)))
        assert out[0].status == "delivered" and out[0].remote == "there.test"


def test_host_with_port_uses_the_a_record_only(dns: TestDNSServer) -> None:
    """``relay.domain.PORT._via`` -> queue ``relay.domain:PORT``: the MX
    pointing elsewhere is not consulted, and the port is the one given."""
    dns.load(
        {
            "relay.test": {"MX": [(10, "elsewhere.test")], "A": ["127.0.0.1"]},
            "elsewhere.test": {"A": ["127.0.0.9"]},
        }
    )
    with SMTPSink() as sink:
        ctx = context(dns, free_port())  # the default port is wrong on purpose
        out = run(deliver(f"relay.test:{sink.port}", [message("m", "x@client.test")], ctx))
        assert out[0].status == "delivered"
        assert sink.messages[0].rcpts == ["x@client.test"]
        assert ("relay.test", "MX") not in dns.queries


@pytest.mark.parametrize("form", ["[127.0.0.1]:{port}", "127.0.0.1:{port}"])
def test_ip_queue_needs_no_dns(dns: TestDNSServer, form: str) -> None:
    with SMTPSink() as sink:
        queue = form.format(port=sink.port)
        out = run(deliver(queue, [message("m", "x@client.test")], context(dns, free_port())))
        assert out[0].status == "delivered" and out[0].remote == "127.0.0.1"
        assert dns.queries == []


def test_ip_literal_without_port_uses_the_default_port(dns: TestDNSServer) -> None:
    with SMTPSink() as sink:
        out = run(deliver("[127.0.0.1]", [message("m", "x@y.test")], context(dns, sink.port)))
        assert out[0].status == "delivered"


def test_unreachable_mx_falls_back_to_the_next(dns: TestDNSServer) -> None:
    dns.load(
        {
            "there.test": {"MX": [(10, "down.there.test"), (20, "up.there.test")]},
            "down.there.test": {"A": ["127.0.0.7"]},  # nothing listens there
            "up.there.test": {"A": ["127.0.0.1"]},
        }
    )
    with SMTPSink() as sink:
        out = run(deliver("there.test", [message("m", "bob@there.test")], context(dns, sink.port)))
        assert out[0].status == "delivered" and out[0].remote == "up.there.test"


def test_every_target_down_defers_with_the_last_error(dns: TestDNSServer) -> None:
    dns.load(
        {
            "there.test": {"MX": [(10, "a.there.test"), (20, "b.there.test")]},
            "a.there.test": {"A": ["127.0.0.7"]},
            "b.there.test": {"A": ["127.0.0.8"]},
        }
    )
    msgs = [message("m", "bob@there.test", "carol@there.test")]
    out = run(deliver("there.test", msgs, context(dns, free_port())))
    assert statuses(out) == {1: "deferred", 2: "deferred"}
    assert "b.there.test[127.0.0.8]" in out[0].text and out[0].enhanced.startswith("4.")


def two_mx(dns: TestDNSServer) -> None:
    dns.load(
        {
            "there.test": {"MX": [(10, "a.there.test"), (20, "b.there.test")]},
            "a.there.test": {"A": ["127.0.0.1"]},
            "b.there.test": {"A": ["127.0.0.2"]},
        }
    )


@pytest.mark.parametrize(
    "trouble",
    [
        {"greeting": Reply(554, "5.3.2", "go away")},
        {"data_reply": Reply(421, "4.3.2", "shutting down")},
        {"drop_on": ["DATA"]},
    ],
)
def test_a_host_that_fails_the_session_passes_the_mail_on(dns: TestDNSServer, trouble) -> None:
    """A refused greeting, a 421 or a dropped connection is the host's
    trouble, not the recipient's: the next MX gets the message."""
    two_mx(dns)
    with SMTPSink(**trouble) as bad, SMTPSink(host="127.0.0.2", port=bad.port) as good:
        msgs = [message("m1", "bob@there.test"), message("m2", "carol@there.test", first_key=2)]
        out = run(deliver("there.test", msgs, context(dns, bad.port)))
        assert [(o.status, o.remote) for o in out] == [("delivered", "b.there.test")] * 2
        assert [m.rcpts for m in good.messages] == [["bob@there.test"], ["carol@there.test"]]
        assert bad.messages == []


def test_every_host_refusing_defers_with_the_last_reply(dns: TestDNSServer) -> None:
    two_mx(dns)
    greeting = Reply(554, "5.3.2", "go away")
    with (
        SMTPSink(greeting=greeting) as a,
        SMTPSink(host="127.0.0.2", port=a.port, greeting=Reply(421, "", "busy")),
    ):
        out = run(deliver("there.test", [message("m", "bob@there.test")], context(dns, a.port)))
        assert out[0].status == "deferred" and "busy" in out[0].text
        assert out[0].remote == "b.there.test"


def test_permanent_dns_errors_fail_with_their_codes(dns: TestDNSServer) -> None:
    dns.load(
        {
            "nullmx.test": {"MX": [(0, ".")]},
            "loop.test": {"MX": [(10, "mx.main.dom")]},
            "mx.main.dom": {"A": ["127.0.0.1"]},
        }
    )
    ctx = context(dns, free_port(), self_names=frozenset({"mx.main.dom"}))
    for queue, enhanced in [
        ("nowhere.test", "5.1.2"),
        ("nullmx.test", "5.1.10"),
        ("loop.test", "5.4.6"),
    ]:
        out = run(deliver(queue, [message("m", f"x@{queue}")], ctx))
        assert (out[0].status, out[0].enhanced) == ("failed", enhanced), queue


def test_mx_loop_through_our_own_ip(dns: TestDNSServer) -> None:
    dns.load({"loop.test": {"MX": [(10, "mx.loop.test")]}, "mx.loop.test": {"A": ["127.0.0.4"]}})
    ctx = context(dns, free_port(), self_ips=frozenset({"127.0.0.4"}))
    out = run(deliver("loop.test", [message("m", "x@loop.test")], ctx))
    assert (out[0].status, out[0].enhanced) == ("failed", "5.4.6")


def test_temporary_dns_errors_defer(dns: TestDNSServer) -> None:
    dns.load({"broken.test": {"RCODE": "SERVFAIL"}})
    out = run(deliver("broken.test", [message("m", "x@broken.test")], context(dns, free_port())))
    assert out[0].status == "deferred" and out[0].enhanced.startswith("4.")


# -- per-recipient answers ----------------------------------------------------------


def test_each_recipient_gets_its_own_answer(dns: TestDNSServer) -> None:
    replies = {
        "gone@there.test": Reply(550, "5.1.1", "No such user"),
        "busy@there.test": Reply(452, "4.2.2", "Mailbox full"),
    }
    with SMTPSink(rcpt_replies=replies) as sink:
        msgs = [message("m", "ok@there.test", "gone@there.test", "busy@there.test")]
        out = run(deliver(f"127.0.0.1:{sink.port}", msgs, context(dns, 0)))
        got = {o.key: (o.status, o.code, o.enhanced, o.text) for o in out}
        assert got[1][0] == "delivered"
        assert got[2] == ("failed", 550, "5.1.1", "No such user")
        assert got[3] == ("deferred", 452, "4.2.2", "Mailbox full")
        assert sink.messages[0].rcpts == ["ok@there.test"]


def test_data_refusal_applies_to_every_accepted_recipient(dns: TestDNSServer) -> None:
    with SMTPSink(data_reply=Reply(554, "5.6.0", "Content rejected")) as sink:
        msgs = [message("m", "a@there.test", "b@there.test")]
        out = run(deliver(f"127.0.0.1:{sink.port}", msgs, context(dns, 0)))
        assert [(o.status, o.code) for o in out] == [("failed", 554), ("failed", 554)]


def test_null_sender_is_sent_as_empty_path(dns: TestDNSServer) -> None:
    with SMTPSink() as sink:
        out = run(
            deliver(
                f"127.0.0.1:{sink.port}",
                [message("m", "x@there.test", mail_from="")],
                context(dns, 0),
            )
        )
        assert out[0].status == "delivered" and sink.messages[0].mail_from == ""


# -- parameters --------------------------------------------------------------------


PARAMS = {"SIZE": "70", "BODY": "8BITMIME", "RET": "HDRS", "ENVID": "env+2B1", "QueueID": "Q1"}


def test_dsn_parameters_pass_when_offered(dns: TestDNSServer) -> None:
    with SMTPSink() as sink:
        msg = message(
            "m", "x@there.test", params=PARAMS, notify=("FAILURE", "DELAY"), orcpt="X@There.test"
        )
        out = run(deliver(f"127.0.0.1:{sink.port}", [msg], context(dns, 0)))
        assert out[0].status == "delivered"
        args = sink.messages[0].mail_args.split()
        assert f"SIZE={len(BODY)}" in args and "BODY=8BITMIME" in args
        assert "RET=HDRS" in args and "ENVID=env+2B2B1" in args
        assert not any(a.upper().startswith("QUEUEID") for a in args)
        assert sink.messages[0].rcpt_args[0] == "NOTIFY=FAILURE,DELAY ORCPT=rfc822;X@There.test"


def test_parameters_left_out_when_not_offered(dns: TestDNSServer) -> None:
    plain = [e for e in DEFAULT_EXTENSIONS if e not in ("DSN", "SIZE 10240000", "8BITMIME")]
    with SMTPSink(extensions=plain) as sink:
        msg = message("m", "x@there.test", params=PARAMS, notify=("NEVER",), orcpt="x@there.test")
        out = run(deliver(f"127.0.0.1:{sink.port}", [msg], context(dns, 0)))
        assert out[0].status == "delivered"
        assert sink.messages[0].mail_args == "" and sink.messages[0].rcpt_args == [""]


def test_smtputf8_message_fails_where_not_offered(dns: TestDNSServer) -> None:
    plain = [e for e in DEFAULT_EXTENSIONS if e != "SMTPUTF8"]
    with SMTPSink(extensions=plain) as sink:
        msg = message("m", "jörg@there.test", params={"SMTPUTF8": "YES"})
        out = run(deliver(f"127.0.0.1:{sink.port}", [msg], context(dns, 0)))
        assert (out[0].status, out[0].enhanced) == ("failed", "5.6.7")


# -- ATRN turn-around ----------------------------------------------------------------


def test_deliver_over_an_open_connection(dns: TestDNSServer) -> None:
    with SMTPSink() as sink:

        async def go() -> list[Outcome]:
            reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
            msgs = [message("m1", "a@cust.test"), message("m2", "b@cust.test", first_key=2)]
            return await deliver_over(
                reader, writer, msgs, "main.dom", remote="cust.test", timeout=5
            )

        out = run(go())
        assert [(o.key, o.status, o.remote) for o in out] == [
            (1, "delivered", "cust.test"),
            (2, "delivered", "cust.test"),
        ]
        assert sink.sessions == 1 and len(sink.messages) == 2
        assert any(line.upper() == "QUIT" for _, _, line in sink.commands)


# -- configuration -------------------------------------------------------------------


def test_relay_context_from_the_server_settings(tmp_path) -> None:
    from waypost.services.container import open_services
    from waypost.services.delivery.relay import make_relay_context

    services = open_services(tmp_path / "var", create=True)
    try:
        services.directory.init_server("main.dom")
        services.directory.create_domain("domain.dom")
        services.directory.add_domain_alias("domain.dom", "alias.dom")
        services.set_setting("DNSServers", "127.0.0.1:5353")
        services.set_setting("DefaultRemoteSMTPPort", "2525")
        services.set_setting("ServerIPAddresses", "127.0.0.4, 192.0.2.10")
        ctx = make_relay_context(services)
    finally:
        services.close()
    assert ctx.helo_name == "main.dom"
    assert ctx.default_port == 2525
    assert {"main.dom", "domain.dom", "alias.dom"} <= ctx.self_names
    assert ctx.self_ips == frozenset({"127.0.0.4", "192.0.2.10"})
    assert ctx.tls_context is not None and ctx.starttls


def test_mx_walk_with_the_servers_own_names(dns: TestDNSServer) -> None:
    """An MX list naming us cuts the walk: only better-preference hosts remain."""
    dns.load(
        {
            "backup.test": {"MX": [(10, "primary.backup.test"), (20, "main.dom")]},
            "primary.backup.test": {"A": ["127.0.0.1"]},
            "main.dom": {"A": ["127.0.0.4"]},
        }
    )
    with SMTPSink() as sink:
        ctx = context(dns, sink.port, self_names=frozenset({"main.dom"}))
        out = run(deliver("backup.test", [message("m", "x@backup.test")], ctx))
        assert (out[0].status, out[0].remote) == ("delivered", "primary.backup.test")
