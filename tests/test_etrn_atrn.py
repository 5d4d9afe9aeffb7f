"""Backup relaying for offline customers: Hold Mail, ETRN, ATRN/TURN (smtp.md §6),
end to end with fetchmail as the customer's software."""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

CUSTOMER_PW = "customer-pw-1"


def need_fetchmail() -> str:
    path = shutil.which("fetchmail")
    if path is None:
        pytest.skip("fetchmail not installed (Debian package fetchmail)")
    return path


@pytest.fixture
def backup(tmp_path: Path, dns_server) -> Iterator[WaypostServer]:
    dns_server.load({
        "client.com": {"MX": [(10, "mx.client.com")]},
        "mx.client.com": {"A": ["127.0.0.3"]},
        "mail.dialup.com": {"A": ["127.0.0.3"]},
        "other.com": {"MX": [(10, "mx.other.com")]},
        "mx.other.com": {"A": ["127.0.0.3"]},
    })
    # DEBUG: the tests wait for the delivery runner's record of passing a held queue
    server = WaypostServer(tmp_path / "var", log_level="DEBUG").init()
    server.cli("settings", "set", "ClientIPAddresses", "127.0.0.250")
    server.cli("settings", "set", "DNSServers", dns_server.address)
    server.cli("settings", "set", "HoldMailForDomains",
               "client.com, mail.dialup.com, other.com = otheradmin")
    server.cli("account", "add", "client.com", "--password", CUSTOMER_PW)
    # ODMR clients (fetchmail) authenticate with CRAM-MD5 only (RFC 2645)
    server.cli("account", "set", "client.com", "PasswordEncryption", "argon2+cram-md5")
    server.cli("account", "passwd", "client.com", "--password", CUSTOMER_PW)
    server.cli("account", "add", "otheradmin", "--password", "other-pw-1")
    server.cli("account", "add", "stranger", "--password", "stranger-pw-1")
    server.cli("router", "set", "-", input="dialup.com = mail.dialup.com._via\n"
               "domain2.dom = domain2.dom@client.com._via\n")
    server.start()
    yield server
    server.stop()


def send(server: WaypostServer, rcpt: str, subject: str) -> None:
    client = smtplib.SMTP("127.0.0.1", server.smtp, timeout=30)
    client.ehlo("mx.sender.example")
    client.sendmail("sender@sender.example", [rcpt],
                    f"From: sender@sender.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n"
                    f"hello {subject}\r\n")
    client.quit()


def queue_text(server: WaypostServer) -> str:
    return server.cli("queue", "list").stdout


def fetchmail(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "fetchmail-home"
    home.mkdir(exist_ok=True)
    rc = home / "fetchmailrc"
    rc.write_text("set no bouncemail\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    return subprocess.run([need_fetchmail(), "-f", str(rc), "--nosyslog", "-v",
                           "--pidfile", str(home / "fetchmail.pid"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_held_mail_waits_and_etrn_releases_it(backup: WaypostServer, tmp_path: Path) -> None:
    with SMTPSink("127.0.0.3", 25) as customer:
        send(backup, "bob@client.com", "held-1")
        backup.wait_for(lambda: "held" in queue_text(backup), what="held queue")
        backup.wait_for(lambda: "held queue SMTP(client.com): 1 recipient(s) left unattempted"
                        in backup.logs(), what="the delivery runner passing the held queue")
        assert customer.messages == []  # held: never attempted
        proc = fetchmail(tmp_path, "-p", "ETRN", "--service", str(backup.smtp),
                         "--fetchdomains", "client.com", "127.0.0.1")
        assert "Queuing for node client.com started" in proc.stdout + proc.stderr, \
            proc.stdout + proc.stderr
        backup.wait_for(lambda: customer.messages, what="delivery after ETRN")
        (envelope,) = customer.messages
        assert envelope.rcpts == ["bob@client.com"]
        assert b"Subject: held-1" in envelope.data
        backup.wait_for(lambda: "held-1" not in queue_text(backup) and
                        "client.com" not in queue_text(backup), what="queue emptied")


def test_dialup_recipe_and_etrn_reply_codes(backup: WaypostServer) -> None:
    """`dialup.com = mail.dialup.com._via` with mail.dialup.com held (How To)."""
    with SMTPSink("127.0.0.3", 25) as customer:
        send(backup, "ann@dialup.com", "dialup-1")
        backup.wait_for(lambda: "mail.dialup.com" in queue_text(backup), what="queued")
        client = smtplib.SMTP("127.0.0.1", backup.smtp, timeout=30)
        client.ehlo("customer")
        assert client.has_extn("etrn")
        assert client.docmd("ETRN", "unknown.example")[0] == 459
        assert client.docmd("ETRN", "bob.example.net")[0] == 459
        assert client.docmd("ETRN", "")[0] == 501
        assert client.docmd("ETRN", "client.com")[0] == 251  # held, but nothing waiting
        code, text = client.docmd("ETRN", "dialup.com")
        assert code == 250, text
        client.quit()
        backup.wait_for(lambda: customer.messages, what="delivery after ETRN")
        # `._via` without `%` sends local@host (router.md §6.1)
        assert customer.messages[0].rcpts == ["ann@mail.dialup.com"]


def test_atrn_with_fetchmail_odmr(backup: WaypostServer, tmp_path: Path) -> None:
    send(backup, "bob@client.com", "odmr-1")
    send(backup, "carol@domain2.dom", "odmr-2")  # routed into the same queue
    backup.wait_for(lambda: "odmr" in queue_text(backup) or "held" in queue_text(backup))
    with SMTPSink("127.0.0.1", 0) as local_sink:
        rc_home = tmp_path / "fetchmail-home"
        rc_home.mkdir(exist_ok=True)
        rc = rc_home / "odmr.rc"
        rc.write_text(
            f'poll 127.0.0.1 service {backup.smtp} protocol ODMR\n'
            f'  user "client.com" password "{CUSTOMER_PW}"\n'
            f'  fetchdomains client.com\n'
            f'  smtphost "127.0.0.1/{local_sink.port}"\n')
        rc.chmod(0o600)
        env = dict(os.environ, HOME=str(rc_home), FETCHMAILHOME=str(rc_home))
        proc = subprocess.run([need_fetchmail(), "-f", str(rc), "--nosyslog", "-v",
                               "--pidfile", str(rc_home / "fetchmail.pid")],
                              capture_output=True, text=True, timeout=120, env=env)
        output = proc.stdout + proc.stderr
        assert "ATRN" in output, output
        backup.wait_for(lambda: len(local_sink.messages) >= 2, what="mail over ODMR")
        rcpts = sorted(r for m in local_sink.messages for r in m.rcpts)
        assert rcpts == ["bob@client.com", "carol@domain2.dom"]
    backup.wait_for(lambda: "odmr" not in queue_text(backup) and
                    "client.com" not in queue_text(backup), what="queue emptied")


def _session(server: WaypostServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.smtp), timeout=20)
    sock.recv(4096)
    sock.sendall(b"EHLO customer\r\n")
    _read_reply(sock)
    return sock


def _read_reply(sock: socket.socket) -> str:
    data = b""
    while True:
        data += sock.recv(4096)
        lines = data.decode().split("\r\n")
        done = [line for line in lines if len(line) >= 4 and line[3] == " "]
        if done:
            return data.decode()


def _auth(sock: socket.socket, user: str, password: str) -> str:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
    return _read_reply(sock)


def test_atrn_and_turn_need_auth_and_rights(backup: WaypostServer) -> None:
    send(backup, "bob@client.com", "rights-1")
    backup.wait_for(lambda: "held" in queue_text(backup))
    sock = _session(backup)
    sock.sendall(b"ATRN client.com\r\n")
    assert _read_reply(sock).startswith("530 5.7.0")
    sock.sendall(b"TURN\r\n")
    assert _read_reply(sock).startswith("530 5.7.0")
    assert _auth(sock, "stranger", "stranger-pw-1").startswith("235")
    sock.sendall(b"ATRN client.com\r\n")
    assert _read_reply(sock).startswith("450")
    sock.sendall(b"TURN\r\n")
    assert _read_reply(sock).startswith("450")
    sock.close()
    # another customer's domain: refused, nothing released
    sock = _session(backup)
    assert _auth(sock, "otheradmin", "other-pw-1").startswith("235")
    sock.sendall(b"ATRN client.com\r\n")
    assert _read_reply(sock).startswith("450")
    sock.sendall(b"ATRN other.com\r\n")
    assert _read_reply(sock).startswith("453")  # allowed, but no mail
    sock.close()
    assert "rights-1" in backup.cli("queue", "show", _first_id(backup)).stdout or \
        "held" in queue_text(backup)


def _first_id(server: WaypostServer) -> str:
    for line in queue_text(server).splitlines():
        word = line.split()[0] if line.split() else ""
        if len(word) > 10 and word.isalnum():
            return word
    raise AssertionError(queue_text(server))


def test_client_dropping_during_atrn_keeps_the_mail(backup: WaypostServer) -> None:
    send(backup, "bob@client.com", "drop-1")
    send(backup, "eve@client.com", "drop-2")
    backup.wait_for(lambda: queue_text(backup).count("held") >= 2, what="two held")
    before = queue_text(backup)
    sock = _session(backup)
    assert _auth(sock, "client.com", CUSTOMER_PW).startswith("235")
    sock.sendall(b"ATRN client.com\r\n")
    assert _read_reply(sock).startswith("250")
    sock.sendall(b"220 customer ESMTP\r\n")
    assert sock.recv(4096).startswith(b"EHLO")
    sock.sendall(b"250-customer\r\n250 PIPELINING\r\n")
    got = sock.recv(4096)
    assert b"MAIL FROM" in got
    sock.close()  # gone in the middle of the first transaction
    backup.wait_for(lambda: re.search(r"ATRN by client\.com@main\.dom: \d+ of \d+ recipients "
                                      r"delivered", backup.logs()),
                    what="the ATRN delivery to finish")
    after = queue_text(backup)
    assert after.count("held") == before.count("held") == 2, after


def test_etrn_at_domain_and_hash_queue_forms(backup: WaypostServer) -> None:
    with SMTPSink("127.0.0.3", 25) as customer:
        send(backup, "ann@dialup.com", "at-form")
        backup.wait_for(lambda: "mail.dialup.com" in queue_text(backup), what="queued")
        client = smtplib.SMTP("127.0.0.1", backup.smtp, timeout=30)
        client.ehlo("customer")
        assert client.docmd("ETRN", "@nowhere.example")[0] == 459
        code, text = client.docmd("ETRN", "@dialup.com")  # mail.dialup.com is inside it
        assert code == 253 and b"1 pending messages" in text, text
        backup.wait_for(lambda: customer.messages, what="delivery after ETRN @")
        send(backup, "bob@client.com", "hash-form")
        backup.wait_for(lambda: "hash-form" in queue_text(backup) or
                        "client.com" in queue_text(backup), what="queued")
        code, text = client.docmd("ETRN", "#client.com")
        assert code == 250, text
        client.quit()
        backup.wait_for(lambda: len(customer.messages) == 2, what="delivery after ETRN #")
        assert customer.messages[1].rcpts == ["bob@client.com"]
