"""A whole customer domain collected into one account (`.local`), polled by
fetchmail over POP3 in multidrop mode with `envelope X-Real-To`."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
from tests.support.server import WaypostServer
from tests.support.smtp_sink import SMTPSink

PW = "dd-customer-pw-1"


def test_fetchmail_multidrop_hands_each_message_to_its_recipient(tmp_path: Path) -> None:
    fetchmail = shutil.which("fetchmail")
    if fetchmail is None:
        pytest.skip("fetchmail not installed (Debian package fetchmail)")
    server = WaypostServer(tmp_path / "var").init()
    server.cli("account", "add", "dd-customer", "--password", PW)
    server.cli("account", "add", "other", "--password", "other-pw-1")
    server.cli("router", "set", "-", input="dd-customer.com = dd-customer.local\n")
    server.start()
    try:
        client = smtplib.SMTP("127.0.0.1", server.smtp, timeout=30)
        client.ehlo("mx.sender.example")
        client.sendmail("s@sender.example", ["ann@dd-customer.com", "bob@dd-customer.com",
                                             "other@main.dom"],
                        "From: s@sender.example\r\nTo: team@dd-customer.com\r\n"
                        "X-Real-To: forged@evil.example\r\nSubject: to both\r\n\r\nhello\r\n")
        client.sendmail("s@sender.example", ["carl@dd-customer.com"],
                        "From: s@sender.example\r\nSubject: to carl\r\n\r\nhi carl\r\n")
        client.quit()
        server.wait_for(lambda: server.cli("mailbox", "show", "dd-customer").stdout
                        .count("to ") >= 2, what="two messages in the unified account")
        with SMTPSink("127.0.0.1", 0) as local_server:
            home = tmp_path / "fetchmail-home"
            home.mkdir()
            rc = home / "rc"
            rc.write_text(
                f"poll 127.0.0.1 service {server.port('POP3Port')} protocol POP3\n"
                f"  envelope X-Real-To localdomains dd-customer.com\n"
                f'  user "dd-customer" there with password "{PW}" is * here\n'
                f'  sslproto "" smtphost "127.0.0.1/{local_server.port}"\n'
                f"  smtpaddress dd-customer.com\n")
            rc.chmod(0o600)
            env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
            proc = subprocess.run([fetchmail, "-f", str(rc), "--nosyslog", "-v",
                                   "--pidfile", str(home / "fetchmail.pid")],
                                  capture_output=True, text=True, timeout=120, env=env)
            output = proc.stdout + proc.stderr
            assert proc.returncode == 0, output
            delivered = sorted((tuple(m.rcpts), m.data.split(b"Subject: ")[1].split(b"\r\n")[0])
                               for m in local_server.messages)
        # one stored copy per message, handed to every recipient it names
        assert delivered == [
            (("ann@dd-customer.com", "bob@dd-customer.com"), b"to both"),
            (("carl@dd-customer.com",), b"to carl"),
        ], output
        # the forged header was removed and no other recipient leaked into the copies
        for message in local_server.messages:
            assert b"forged@evil.example" not in message.data
            assert b"other@main.dom" not in message.data
        # fetched without `keep`: deleted on the server after QUIT
        assert "to both" not in server.cli("mailbox", "show", "dd-customer").stdout
        assert "to both" in server.cli("mailbox", "show", "other").stdout
    finally:
        server.stop()
