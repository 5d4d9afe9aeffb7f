"""The SMTP server over real sockets: extensions, trust, relaying, bad input."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import smtp_raw
from tests.support.server import WaypostServer

UNTRUSTED = "127.0.0.1"
TRUSTED = "127.0.0.2"  # the only Client IP Address in these tests
ALICE_PW = "alice-pw-1234"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("smtp") / "var").init()
    srv.cli("domain", "add", "domain.dom")
    srv.cli("account", "add", "alice@domain.dom", "--password", ALICE_PW)
    srv.cli("settings", "set", "ClientIPAddresses", TRUSTED)
    srv.cli("settings", "set", "MaxMessageSize", "200K")
    srv.cli("settings", "set", "MaxRecipients", "5")
    srv.cli("settings", "set", "SMTPIdleTimeout", "3")
    srv.start()
    yield srv
    srv.stop()


def connect(server: WaypostServer, source: str = UNTRUSTED, port: int | None = None
            ) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port or server.smtp, timeout=30,
                          source_address=(source, 0))
    client.ehlo("client.example")
    return client


def raw(server: WaypostServer, lines: list[bytes], source: str = UNTRUSTED,
        port: int | None = None) -> list[str]:
    return smtp_raw.raw(port or server.smtp, lines, source)


def mailbox(server: WaypostServer, account: str) -> str:
    return server.cli("mailbox", "show", account).stdout


def test_ehlo_advertises_the_extensions(server: WaypostServer) -> None:
    client = connect(server)
    for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "starttls",
                "smtputf8", "dsn", "auth"):
        assert client.has_extn(ext), ext
    assert client.esmtp_features["size"] == str(200 * 1024)
    client.quit()


def test_local_recipient_accepted_unknown_refused(server: WaypostServer) -> None:
    client = connect(server)
    client.mail("sender@example.org")
    assert client.rcpt("alice@domain.dom")[0] == 250
    code, text = client.rcpt("nobody@domain.dom")
    assert (code, text[:5]) == (550, b"5.1.1")
    client.quit()


RELAY_TRICKS = [
    "bob@evil.example",
    "bob%evil.example@main.dom",
    "bob%evil.example@[127.0.0.1]",
    "evil.example!bob",
    "main.dom!evil.example!bob",
    "@main.dom:bob@evil.example",
    '"bob@evil.example"@main.dom',
    '"bob%evil.example"@main.dom',
    "bob@[198.51.100.9]",
    "bob@evil.example.",
    "BOB%EVIL.EXAMPLE@MAIN.DOM",
    "postmaster%evil.example@main.dom",
    "postmaster@evil.example",
]


def test_unquoted_double_at_is_a_syntax_error_not_a_relay(server: WaypostServer) -> None:
    client = connect(server, UNTRUSTED)
    client.mail("spammer@example.org")
    code, text = client.docmd("RCPT", "TO:<bob@evil.example@main.dom>")
    assert (code, text[:5]) == (501, b"5.1.3")
    client.quit()


@pytest.mark.parametrize("address", RELAY_TRICKS)
def test_never_an_open_relay(server: WaypostServer, address: str) -> None:
    client = connect(server, UNTRUSTED)
    client.mail("spammer@example.org")
    code, text = client.docmd("RCPT", f"TO:<{address}>")
    assert code == 550 and text.startswith(b"5.7.1"), (address, code, text)
    client.quit()


@pytest.mark.parametrize("address", ["bob@evil.example", "bob%evil.example@main.dom"])
def test_client_ips_and_authenticated_users_may_relay(server: WaypostServer, address: str
                                                      ) -> None:
    client = connect(server, TRUSTED)
    client.mail("user@main.dom")
    assert client.docmd("RCPT", f"TO:<{address}>")[0] == 250
    client.quit()
    client = connect(server, UNTRUSTED)
    client.login("alice@domain.dom", ALICE_PW)
    client.mail("alice@domain.dom")
    assert client.docmd("RCPT", f"TO:<{address}>")[0] == 250
    client.quit()


def test_auth_login_names_go_through_the_router(server: WaypostServer) -> None:
    for login in ("alice@domain.dom", "alice%domain.dom", "ALICE@Domain.Dom"):
        client = connect(server)
        client.login(login, ALICE_PW)
        client.quit()


def test_auth_failures_are_slowed_down(server: WaypostServer) -> None:
    client = connect(server)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("alice@domain.dom", "wrong")
        assert info.value.smtp_code == 535
    assert time.monotonic() - started >= 1.4
    client.close()


def test_submission_port_requires_auth(server: WaypostServer) -> None:
    client = connect(server, TRUSTED, server.submission)
    code, text = client.mail("x@main.dom")
    assert (code, text[:5]) == (530, b"5.7.0")
    client.login("alice@domain.dom", ALICE_PW)
    assert client.mail("alice@domain.dom")[0] == 250
    client.quit()


def test_starttls_and_implicit_tls(server: WaypostServer) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = connect(server)
    client.starttls(context=ctx)
    client.ehlo("client.example")
    assert not client.has_extn("starttls") and client.has_extn("auth")
    client.quit()
    secure = smtplib.SMTP_SSL("127.0.0.1", server.smtps, context=ctx, timeout=30)
    secure.ehlo("client.example")
    secure.login("alice@domain.dom", ALICE_PW)
    secure.quit()


def test_commands_out_of_order_and_unknown(server: WaypostServer) -> None:
    replies = raw(server, [b"MAIL FROM:<a@b.example>\r\n", b"EHLO x\r\n", b"RCPT TO:<alice@domain.dom>\r\n",
                           b"DATA\r\n", b"FOO bar\r\n", b"QUIT\r\n"])
    assert replies[0].startswith("503 5.5.1")
    assert any(r.startswith("503 5.5.1") and "MAIL" in r for r in replies[1:])
    assert any(r.startswith("500 5.5.1") for r in replies)
    assert replies[-1].startswith("221")


def test_overlong_command_line(server: WaypostServer) -> None:
    replies = raw(server, [b"EHLO " + b"x" * 1200 + b"\r\n", b"NOOP\r\n", b"QUIT\r\n"])
    assert replies[0].startswith("500 5.5.2")
    assert replies[1].startswith("250")


def test_declared_size_and_real_size_over_the_limit(server: WaypostServer) -> None:
    client = connect(server)
    code, text = client.docmd("MAIL", f"FROM:<a@b.example> SIZE={10 * 1024 * 1024}")
    assert (code, text[:5]) == (552, b"5.3.4")
    client.rset()
    client.mail("a@b.example")
    client.rcpt("alice@domain.dom")
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 300
    code, text = client.data(big)
    assert (code, text[:5]) == (552, b"5.3.4")
    # the session is still usable
    assert client.noop()[0] == 250
    client.quit()


def test_too_many_recipients(server: WaypostServer) -> None:
    client = connect(server, TRUSTED)
    client.mail("a@main.dom")
    for i in range(5):
        assert client.rcpt(f"r{i}@remote.example")[0] == 250
    code, text = client.rcpt("r6@remote.example")
    assert (code, text[:5]) == (452, b"4.5.3")
    client.quit()


def test_idle_clients_are_timed_out(server: WaypostServer) -> None:
    with socket.create_connection(("127.0.0.1", server.smtp), timeout=15) as sock:
        sock.recv(4096)
        started = time.monotonic()
        data = sock.recv(4096)
        assert data.startswith(b"421 4.4.2")
        assert 2 <= time.monotonic() - started < 10


SMUGGLE_ENDINGS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]


@pytest.mark.parametrize("ending", SMUGGLE_ENDINGS, ids=repr)
def test_smtp_smuggling_never_ends_data_early(server: WaypostServer, ending: bytes) -> None:
    tag = f"smuggle-{SMUGGLE_ENDINGS.index(ending)}-{time.time_ns()}"
    payload = (
        b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@domain.dom>\r\nDATA\r\n"
        + f"Subject: {tag}\r\n\r\nbody".encode() + ending
        + b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<alice@domain.dom>\r\nDATA\r\n"
        + f"Subject: {tag}-SMUGGLED\r\n\r\nsmuggled\r\n".encode()
        + b"\r\n.\r\nQUIT\r\n"
    )
    # From a Client IP Address: untrusted clients get 554 for bare CR/LF
    # (test_smtp_bare_newline.py); trusted ones still have it rewritten.
    replies = raw(server, [payload], source=TRUSTED)
    accepted = [r for r in replies if r.startswith("250 2.0.0 OK queued")]
    assert len(accepted) == 1, replies
    server.wait_for(lambda: tag in mailbox(server, "alice@domain.dom"), what=tag)
    shown = mailbox(server, "alice@domain.dom")
    assert f"{tag}-SMUGGLED" not in shown
    assert shown.count(tag) == 1


def test_swaks_auth_starttls_pipelining(server: WaypostServer, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed (Debian package swaks)")
    tag = f"swaks-{time.time_ns()}"
    for auth in ("PLAIN", "LOGIN"):
        proc = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(server.smtp), "--tls",
             "--auth", auth, "--auth-user", "alice@domain.dom", "--auth-password", ALICE_PW,
             "--pipeline", "--from", "alice@domain.dom", "--to", "alice@domain.dom",
             "--header", f"Subject: {tag}-{auth}", "--body", "hello"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "250 2.0.0 OK queued" in proc.stdout
    server.wait_for(lambda: f"{tag}-LOGIN" in mailbox(server, "alice@domain.dom"))
    assert f"{tag}-PLAIN" in mailbox(server, "alice@domain.dom")


def test_auth_plain_initial_response_and_bad_base64(server: WaypostServer) -> None:
    token = base64.b64encode(f"\0alice@domain.dom\0{ALICE_PW}".encode()).decode()
    replies = raw(server, [b"EHLO x\r\n", b"AUTH PLAIN !!!notbase64\r\n",
                           f"AUTH PLAIN {token}\r\n".encode(), b"QUIT\r\n"])
    assert any(r.startswith("501 5.5.2") for r in replies)
    assert any(r.startswith("235 2.7.0") for r in replies)


def _data_segments_in(sock: socket.socket) -> int:
    """``tcpi_data_segs_in`` of Linux's ``struct tcp_info`` (offset 152, since
    Linux 4.6): TCP segments carrying data that this socket has received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[152:156], "little")


def test_pipelined_replies_leave_in_one_segment(server: WaypostServer) -> None:
    """RFC 2920: replies to a pipelined group are written together once no
    further command waits (one write, one TCP segment), not one per command."""
    with socket.create_connection(("127.0.0.1", server.smtp), timeout=30) as sock:
        stream = sock.makefile("rb")

        def reply() -> bytes:
            line = stream.readline()
            while line[3:4] == b"-":
                line = stream.readline()
            return line

        assert reply().startswith(b"220")
        sock.sendall(b"EHLO client.example\r\n")
        assert reply().startswith(b"250")
        before = _data_segments_in(sock)
        sock.sendall(b"MAIL FROM:<someone@example.org>\r\n"
                     b"RCPT TO:<alice@domain.dom>\r\n"
                     b"RCPT TO:<nobody@domain.dom>\r\n"
                     b"RCPT TO:<alice@domain.dom>\r\n"
                     b"DATA\r\n")
        replies = [reply() for _ in range(5)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"550", b"250", b"354"], replies
        assert _data_segments_in(sock) - before == 1
        sock.sendall(b"Subject: coalesced\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert reply().startswith(b"250")
        assert reply().startswith(b"221")
