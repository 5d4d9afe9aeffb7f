"""The route, ETRN and ATRN fixes of issue 13 (point 9), against a real server.

* ``waypost route ADDRESS --source IP`` gives the relaying decision SMTP
  gives at RCPT TO from that address, "Relay to All Hosts We Backup"
  included (checked case by case against a real RCPT TO).
* ETRN starts a queue that is not held when we relay for the node
  (``250``), and keeps RFC 1985's ``459`` for nodes that are not ours.
* ``waypost account add NAME --odmr`` / ``account passwd NAME --odmr`` give
  an account the sealed secret CRAM-MD5 (ODMR) needs; a CRAM-MD5 login of
  an account without one is refused and logged with that reason, never
  with the password.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.dns_server import TestDNSServer
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

from waypost.protocols.smtp.wire import Reply

UNTRUSTED = "127.0.0.1"
TRUSTED = "127.0.0.2"  # the only Client IP Address
USER_PW = "user-pw-1"


@pytest.fixture(scope="module")
def dns() -> Iterator[TestDNSServer]:
    server = TestDNSServer()
    server.start()
    server.load({
        "backup.test": {"MX": [(10, "mx.backup.test"), (20, "mx2.backup.test")]},
        "mx.backup.test": {"A": ["127.0.0.9"]},
        "mx2.backup.test": {"A": ["127.0.0.1"]},  # us
        "byname.test": {"MX": [(10, "main.dom")]},  # us, by our domain name
        "elsewhere.test": {"MX": [(10, "mx.elsewhere.test")]},
        "mx.elsewhere.test": {"A": ["127.0.0.9"]},
    })
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[SMTPSink]:
    with SMTPSink("127.0.0.1", 0, hostname="relayed.test") as s:
        yield s


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: TestDNSServer, sink: SMTPSink
           ) -> Iterator[WaypostServer]:
    s = WaypostServer(tmp_path_factory.mktemp("fixes") / "var", log_level="INFO").init()
    s.cli("settings", "set", "ClientIPAddresses", TRUSTED)
    s.cli("settings", "set", "DNSServers", dns.address)
    s.cli("settings", "set", "RelayToAllHostsWeBackup", "YES")
    s.cli("settings", "set", "HoldMailForDomains", "held.test")
    s.cli("account", "add", "user", "--password", USER_PW)
    s.cli("router", "set", "-",
          input=f"Relay:relayed.test = relayed.test@127.0.0.1.{sink.port}._via\n")
    s.start()
    yield s
    s.stop()


def rcpt_from(server: WaypostServer, source: str, address: str, *, login: bool = False
              ) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30,
                      source_address=(source, 0)) as client:
        client.ehlo("client.example")
        if login:
            client.login("user", USER_PW)
        assert client.mail("someone@client.example")[0] == 250
        code, text = client.rcpt(address)
        client.rset()
    return code, text.decode()


CASES = [
    (UNTRUSTED, "user@main.dom", False),
    (UNTRUSTED, "bob@elsewhere.test", False),
    (UNTRUSTED, "bob@backup.test", False),  # an MX of backup.test is our address
    (UNTRUSTED, "bob@byname.test", False),  # its MX is our domain name
    (UNTRUSTED, "bob@held.test", False),
    (UNTRUSTED, "bob@relayed.test", False),
    (UNTRUSTED, "bob@elsewhere.test", True),  # AUTH trusts whatever the address
    (TRUSTED, "bob@elsewhere.test", False),
    (UNTRUSTED, "bob@nodots", False),
]
EXPECTED = {  # what both must say, so that agreement is not agreement in error
    ("bob@elsewhere.test", UNTRUSTED, False): 550,
    ("bob@nodots", UNTRUSTED, False): 550,
}


@pytest.mark.parametrize(("source", "address", "login"), CASES)
def test_route_source_agrees_with_rcpt(server: WaypostServer, source: str, address: str,
                                       login: bool) -> None:
    code, text = rcpt_from(server, source, address, login=login)
    args = ["route", address, "--source", source] + (["--authenticated"] if login else [])
    proc = server.cli(*args, check=False)
    assert code == EXPECTED.get((address, source, login), 250), (code, text)
    if code == 250:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip().split("\n")[0].split("(")[0] in ("LOCAL", "SMTP")
    else:
        assert proc.returncode == 1, proc.stdout
        assert proc.stdout.startswith("error"), proc.stdout
        if "relaying prohibited" in proc.stdout:
            assert text.startswith("5.7.1"), text


def test_route_explains_the_backup_check(server: WaypostServer) -> None:
    out = server.cli("route", "bob@backup.test", "--source", UNTRUSTED, "--explain").stdout
    assert "Relay to All Hosts We Backup: backup.test lists this server as an MX" in out, out
    assert out.strip().splitlines()[-1] == "SMTP(backup.test)bob@backup.test"
    proc = server.cli("route", "bob@elsewhere.test", "--source", UNTRUSTED, "--explain",
                      check=False)
    assert proc.returncode == 1
    assert "elsewhere.test does not list this server as an MX" in proc.stdout, proc.stdout


def etrn(server: WaypostServer, node: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("customer.example")
        assert client.has_extn("etrn")
        code, text = client.docmd("ETRN", node)
    return code, text.decode()


def test_etrn_starts_a_queue_that_is_not_held(server: WaypostServer, sink: SMTPSink) -> None:
    sink.rcpt_replies["ann@relayed.test"] = Reply(451, "4.3.0", "not now")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.sendmail("someone@client.example", ["ann@relayed.test"],
                        b"Subject: etrn-1\r\n\r\nhello\r\n")
    server.wait_for(lambda: "status=deferred (451 4.3.0 not now)" in server.logs(),
                    what="the first attempt deferred")
    del sink.rcpt_replies["ann@relayed.test"]
    # the next retry is QueueRetryFirst (10 min) away: only ETRN brings it now
    assert etrn(server, "relayed.test") == (250, "2.0.0 Queuing for node relayed.test started")
    server.wait_for(lambda: any(m.rcpts == ["ann@relayed.test"] for m in sink.messages),
                    what="delivery after ETRN")
    # nothing waiting any more: 251; the domain is ours to relay for all the same
    assert etrn(server, "relayed.test") == (251, "2.0.0 OK, no messages waiting for node "
                                                 "relayed.test")


def test_etrn_reply_codes_for_other_nodes(server: WaypostServer) -> None:
    assert etrn(server, "elsewhere.test") == (
        459, "4.7.1 Node elsewhere.test not allowed: not a domain we relay for")
    assert etrn(server, "@elsewhere.test") == (
        459, "4.7.1 Node @elsewhere.test not allowed: not a domain we relay for")
    assert etrn(server, "main.dom")[0] == 459  # local: nothing to relay
    assert etrn(server, "backup.test")[0] == 251  # Relay to All Hosts We Backup
    assert etrn(server, "held.test")[0] == 251
    assert etrn(server, "")[0] == 501


def cram_login(server: WaypostServer, login: str, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.ehlo("customer.example")
        code, challenge = client.docmd("AUTH", "CRAM-MD5")
        assert code == 334, challenge
        digest = hmac.new(password.encode(), base64.b64decode(challenge), "md5").hexdigest()
        return client.docmd(base64.b64encode(f"{login} {digest}".encode()).decode())


def test_odmr_option_gives_the_cram_md5_secret(server: WaypostServer) -> None:
    server.cli("account", "add", "odmr.test", "--odmr", "--password", "odmr-pw-1")
    shown = server.cli("account", "show", "odmr.test").stdout
    assert "sealed for CRAM-MD5/ODMR" in shown
    assert "argon2+cram-md5" in shown
    assert cram_login(server, "odmr.test", "odmr-pw-1")[0] == 235


def test_cram_md5_without_secret_is_logged_with_the_reason(server: WaypostServer) -> None:
    server.cli("account", "add", "plain", "--password", "plain-pw-1")
    assert "no CRAM-MD5/ODMR" in server.cli("account", "show", "plain").stdout
    code, _ = cram_login(server, "plain", "plain-pw-1")
    assert code == 535
    reason = ("CRAM-MD5 login of plain@main.dom refused: the account keeps no reversible"
              " secret (PasswordEncryption is not argon2+cram-md5); give it one with"
              " `waypost account passwd plain@main.dom --odmr`")
    server.wait_for(lambda: reason in server.logs(), what="the logged reason")
    assert "plain-pw-1" not in server.logs()
    # the fix the log names works
    server.cli("account", "passwd", "plain", "--odmr", "--password", "plain-pw-2")
    assert cram_login(server, "plain", "plain-pw-2")[0] == 235


def test_fetchmail_odmr_with_an_odmr_account(server: WaypostServer, tmp_path: Path) -> None:
    """The customer's real software: fetchmail speaks ODMR with CRAM-MD5 only."""
    fetchmail = shutil.which("fetchmail")
    if fetchmail is None:
        pytest.skip("fetchmail not installed (Debian package fetchmail)")
    # an account named like its held domain may turn it (smtp.md §6.3 (a))
    server.cli("account", "add", "held.test", "--odmr", "--password", "held-pw-1")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.sendmail("someone@client.example", ["dora@held.test"],
                        b"Subject: odmr-1\r\n\r\nhello\r\n")
    server.wait_for(lambda: "to=<dora@held.test>" in server.logs(), what="held")
    with SMTPSink("127.0.0.1", 0, hostname="customer.test") as customer:
        config = tmp_path / "odmrrc"
        config.write_text(f"poll 127.0.0.1 service {server.smtp} protocol ODMR\n"
                          f'  user "held.test" password "held-pw-1" fetchdomains held.test\n'
                          f'  smtphost "127.0.0.1/{customer.port}"\n')
        config.chmod(0o600)
        run = subprocess.run(
            [fetchmail, "-f", str(config), "--nosyslog", "-v", "--pidfile",
             str(tmp_path / "pid")], capture_output=True, text=True, timeout=120,
            env=dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path)))
        said = run.stdout + run.stderr
        assert "CRAM-MD5" in said, said
        server.wait_for(lambda: customer.messages, what="mail over ODMR")
        assert customer.messages[0].rcpts == ["dora@held.test"]
    server.wait_for(lambda: re.search(r"to=<dora@held\.test>, .*status=sent", server.logs()),
                    what="the ATRN delivery logged")
