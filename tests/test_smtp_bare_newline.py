"""Bare CR / bare LF and NUL in SMTP input (issue 13 point 3).

A message with a bare CR or LF from a client outside ClientIPAddresses is
refused after the end of data with ``554 5.5.2`` and never queued (SMTP
smuggling starts that way); a Client IP Address, or the setting
SMTPForbidBareNewline NO, keeps the old behaviour (accepted, rewritten as
CRLF). NUL is refused from everyone. Commands may end in a bare LF (as
Postfix's default). Raw sockets throughout: the bytes are exactly the test's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.mailbox import read_mailbox
from tests.support.server import WaypostServer
from tests.support.smtp_raw import raw

from waypost.protocols.smtp import wire

TRUSTED = "127.0.0.1"  # the only Client IP Address in these tests
UNTRUSTED = "127.0.0.2"
RCPT = "postmaster@main.dom"
ENVELOPE = (b"EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
            b"RCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("barelf") / "var").init()
    srv.cli("settings", "set", "ClientIPAddresses", TRUSTED)
    srv.start()
    yield srv
    srv.stop()


def tag(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def stored(server: WaypostServer) -> list[bytes]:
    return read_mailbox(server.data, RCPT)


def deliver_marker(server: WaypostServer, source: str) -> None:
    """A clean message sent after the refused ones, on a new connection; once it is
    in the mailbox, anything queued before it has had its chance too."""
    marker = tag("marker")
    replies = raw(server.smtp, [ENVELOPE, f"Subject: {marker}\r\n\r\nok\r\n.\r\n".encode(),
                                b"QUIT\r\n"], source)
    assert replies[-2].startswith("250 2.0.0 OK queued"), replies
    server.wait_for(lambda: any(marker.encode() in m for m in stored(server)), what=marker)


# (ending that would end DATA on a lax server, what the refusal names)
SMUGGLING = [
    (b"\n.\n", "<LF>"),
    (b"\n.\r\n", "<LF>"),
    (b"\r\n.\n", "<LF>"),
    (b"\r.\r", "<CR>"),
    (b"\r.\r\n", "<CR>"),
    (b"\r\n.\r", "<CR>"),
    (b"\n.\r", "<CR> and <LF>"),
]


@pytest.mark.parametrize(("ending", "kind"), SMUGGLING, ids=[repr(e) for e, _ in SMUGGLING])
def test_smuggling_from_an_untrusted_client_is_refused_and_not_queued(
        server: WaypostServer, ending: bytes, kind: str) -> None:
    subject = tag("smuggle")
    payload = (
        ENVELOPE + f"Subject: {subject}\r\n\r\nbody".encode() + ending
        + b"MAIL FROM:<evil@sender.example>\r\nRCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n"
        + f"Subject: {subject}-SMUGGLED\r\n\r\nsmuggled\r\n".encode()
        + b"\r\n.\r\n"
    )
    replies = raw(server.smtp, [payload, b"NOOP\r\n", b"QUIT\r\n"], UNTRUSTED)
    assert f"554 5.5.2 Error: bare {kind} received" in replies, replies
    assert not [r for r in replies if "queued" in r], replies
    assert replies[-2:] == ["250 2.0.0 OK", "221 2.0.0 main.dom closing connection"], replies
    deliver_marker(server, UNTRUSTED)
    assert not [m for m in stored(server) if subject.encode() in m]
    assert f"refused: Error: bare {kind} received" in server.logs()


def test_bare_lf_inside_a_line_is_refused_and_the_session_goes_on(
        server: WaypostServer) -> None:
    subject = tag("lf-body")
    body = f"Subject: {subject}\r\n\r\nfirst\nsecond\r\n.\r\n".encode()
    clean = tag("after")
    replies = raw(server.smtp, [
        ENVELOPE, body,
        b"MAIL FROM:<a@sender.example>\r\n", b"RCPT TO:<" + RCPT.encode() + b">\r\n",
        b"DATA\r\n", f"Subject: {clean}\r\n\r\nok\r\n.\r\n".encode(), b"QUIT\r\n",
    ], UNTRUSTED)
    assert "554 5.5.2 Error: bare <LF> received" in replies, replies
    assert replies[-2].startswith("250 2.0.0 OK queued"), replies
    server.wait_for(lambda: any(clean.encode() in m for m in stored(server)), what=clean)
    assert not [m for m in stored(server) if subject.encode() in m]


def test_a_client_ip_address_keeps_the_old_behaviour(server: WaypostServer) -> None:
    subject = tag("trusted")
    payload = ENVELOPE + f"Subject: {subject}\r\n\r\none\ntwo\rthree\r\n.\r\n".encode()
    replies = raw(server.smtp, [payload, b"QUIT\r\n"], TRUSTED)
    assert replies[-2].startswith("250 2.0.0 OK queued"), replies
    message = server.wait_for(
        lambda: next((m for m in stored(server) if subject.encode() in m), None), what=subject)
    assert message.endswith(b"\r\n\r\none\r\ntwo\r\nthree\r\n")


def test_the_setting_restores_accept_and_rewrite(server: WaypostServer) -> None:
    server.cli("settings", "set", "SMTPForbidBareNewline", "NO")
    try:
        subject = tag("setting-off")
        payload = ENVELOPE + f"Subject: {subject}\r\n\r\none\ntwo\r\n.\r\n".encode()
        replies = raw(server.smtp, [payload, b"QUIT\r\n"], UNTRUSTED)
        assert replies[-2].startswith("250 2.0.0 OK queued"), replies
        message = server.wait_for(
            lambda: next((m for m in stored(server) if subject.encode() in m), None),
            what=subject)
        assert message.endswith(b"\r\n\r\none\r\ntwo\r\n")
    finally:
        server.cli("settings", "set", "SMTPForbidBareNewline", "YES")
    replies = raw(server.smtp, [ENVELOPE, b"x\ny\r\n.\r\n", b"QUIT\r\n"], UNTRUSTED)
    assert "554 5.5.2 Error: bare <LF> received" in replies, replies


@pytest.mark.parametrize("source", [UNTRUSTED, TRUSTED])
def test_nul_is_refused_from_everyone(server: WaypostServer, source: str) -> None:
    subject = tag("nul")
    payload = ENVELOPE + f"Subject: {subject}\r\n\r\nbefore\0after\r\n.\r\n".encode()
    replies = raw(server.smtp, [payload, b"QUIT\r\n"], source)
    assert "554 5.6.0 Error: NUL character received in message content" in replies, replies
    deliver_marker(server, source)
    assert not [m for m in stored(server) if subject.encode() in m]


def test_commands_may_end_in_a_bare_lf_as_postfix_allows(server: WaypostServer) -> None:
    subject = tag("lf-commands")
    replies = raw(server.smtp, [
        b"EHLO client.example\n", b"MAIL FROM:<a@sender.example>\n",
        b"RCPT TO:<" + RCPT.encode() + b">\n", b"DATA\n",
        f"Subject: {subject}\r\n\r\nok\r\n.\r\n".encode(), b"QUIT\n",
    ], UNTRUSTED)
    assert replies[-2].startswith("250 2.0.0 OK queued"), replies
    assert replies[-1].startswith("221 2.0.0"), replies


def test_a_bare_cr_inside_a_command_is_a_syntax_error(server: WaypostServer) -> None:
    replies = raw(server.smtp, [b"EHLO client.example\r\n", b"NOOP\rRSET\r\n", b"QUIT\r\n"],
                  UNTRUSTED)
    assert "500 5.5.2 Invalid characters in command" in replies, replies


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 17))
def test_reader_counts_every_nul_and_bare_line_end(content: bytes, step: int) -> None:
    """The counters the refusal rests on, for any body fed in any chunking."""
    body = content + b"\r\n"
    lines = body.split(b"\r\n")
    stream = b"\r\n".join(b"." + x if x.startswith(b".") else x for x in lines) + b".\r\n"
    reader = wire.DataReader()
    done = False
    for i in range(0, len(stream), step):
        done = reader.feed(stream[i:i + step])
    assert done and reader.leftover == b""
    crlf = body.count(b"\r\n")
    assert reader.nul == body.count(b"\0")
    assert reader.bare_lf == body.count(b"\n") - crlf
    assert reader.bare_cr == body.count(b"\r") - crlf
