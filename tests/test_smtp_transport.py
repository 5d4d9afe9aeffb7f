"""The SMTP client as the relay's transport (``ClientTransport``), against the
Python SMTP sink on loopback.

The relay sees only ``services/delivery/transport.py``: its Reply (the wire
reply is one), plain parameters, and four exceptions. These tests prove the client keeps that
contract at the boundary, and that the relay acts on it (a failed STARTTLS
handshake is retried in plain text).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from tests.support.smtp_sink import SMTPSink

from waypost.protocols.smtp import wire
from waypost.protocols.smtp.client import ClientSession, ClientTransport
from waypost.services.delivery import transport
from waypost.services.delivery.dns import Resolver
from waypost.services.delivery.outbound import OutboundMessage, OutboundRecipient
from waypost.services.delivery.relay import Relay, RelayContext
from waypost.tls import ensure_certificate, server_context

BODY = b"From: a@here.test\r\nSubject: test\r\n\r\nbody\r\n"


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def connect(port: int, **kw) -> ClientSession:
    options = {"starttls": True, "tls_context": None, "server_hostname": None,
               "data_timeout": 5.0}
    options.update(kw)
    return await ClientTransport().connect("127.0.0.1", port, "client.test", 5.0, **options)


def tls_mismatch(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server that wants TLS 1.3 and a client that stops at 1.2: the
    handshake after STARTTLS fails."""
    server = server_context(*ensure_certificate(tmp_path, "sink.test"))
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    return server, client


def test_send_answers_one_plain_reply_per_recipient_and_passes_parameters() -> None:
    with SMTPSink(rcpt_replies={"no@x.test": wire.Reply(550, "5.1.1", "No such user")}) as sink:

        async def go() -> list[transport.Reply]:
            session = await connect(sink.port)
            try:
                return await session.send(
                    "a@here.test", ["no@x.test", "yes@x.test"], BODY,
                    transport.MailParams(ret="HDRS", envid="e 1"),
                    [transport.RcptParams(), transport.RcptParams(("FAILURE",),
                                                                  ("rfc822", "Y@x.test"))],
                )
            finally:
                await session.quit()

        replies = run(go())
    assert all(isinstance(r, transport.Reply) for r in replies)
    assert [(r.code, r.enhanced) for r in replies] == [(550, "5.1.1"), (250, "2.0.0")]
    assert not replies[0].positive and replies[1].positive
    assert sink.messages[0].rcpts == ["yes@x.test"]
    assert "RET=HDRS" in sink.messages[0].mail_args.split()
    assert "ENVID=e+201" in sink.messages[0].mail_args.split()
    assert sink.messages[0].rcpt_args == ["NOTIFY=FAILURE ORCPT=rfc822;Y@x.test"]


def test_no_connection_is_connect_failed() -> None:
    with pytest.raises(transport.ConnectFailed):
        run(connect(free_port()))


def test_a_refused_greeting_is_session_refused_with_a_plain_reply() -> None:
    greeting = wire.Reply(554, "5.7.1", "Go away")
    with SMTPSink(greeting=greeting) as sink, pytest.raises(transport.SessionRefused) as info:
        run(connect(sink.port))
    assert info.value.stage == "greeting"
    reply = info.value.reply
    assert isinstance(reply, transport.Reply)
    assert (reply.code, reply.enhanced, reply.text) == (554, "5.7.1", "Go away")


def test_a_failed_handshake_is_tls_failed(tmp_path: Path) -> None:
    server, client = tls_mismatch(tmp_path)
    with SMTPSink(tls_context=server) as sink, pytest.raises(transport.TLSFailed):
        run(connect(sink.port, tls_context=client))


def test_a_peer_gone_mid_transaction_is_session_broken() -> None:
    with SMTPSink(drop_on={"DATA"}) as sink:

        async def go() -> None:
            session = await connect(sink.port)
            try:
                await session.send("a@here.test", ["b@x.test"], BODY, transport.MailParams(),
                                   [transport.RcptParams()])
            finally:
                await session.quit()

        with pytest.raises(transport.SessionBroken):
            run(go())


def test_over_streams_speaks_on_an_open_connection() -> None:
    with SMTPSink() as sink:

        async def go() -> list[transport.Reply]:
            reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
            session = await ClientTransport().over_streams(
                reader, writer, "turned.test", 5.0, data_timeout=5.0
            )
            try:
                return await session.send("a@here.test", ["b@x.test"], BODY,
                                          transport.MailParams(), [transport.RcptParams()])
            finally:
                await session.quit()

        assert [r.code for r in run(go())] == [250]
        assert sink.messages[0].helo == "turned.test"


def test_the_relay_retries_a_failed_handshake_in_plain_text(tmp_path: Path) -> None:
    server, client = tls_mismatch(tmp_path)
    ctx = RelayContext(resolver=Resolver(["127.0.0.1"]), helo_name="main.dom", tls_context=client,
                       connect_timeout=3, command_timeout=5, data_timeout=5)
    msg = OutboundMessage("m", "a@here.test", (OutboundRecipient(1, "b@x.test"),), BODY, {})
    with SMTPSink(tls_context=server) as sink:
        (outcome,) = run(Relay(ClientTransport()).deliver(f"127.0.0.1:{sink.port}", [msg], ctx))
    assert (outcome.status, outcome.code) == ("delivered", 250)
    assert sink.sessions == 2 and not sink.messages[0].tls
