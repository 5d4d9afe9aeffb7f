"""A bare login name on an address assigned to a domain logs into that
domain (domains-accounts.md §2.3), over SMTP AUTH, POP3 and IMAP."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
from pathlib import Path

from tests.support.server import WaypostServer

from waypost.services import auth
from waypost.services.container import open_services


def test_qualify_login(tmp_path: Path) -> None:
    svc = open_services(tmp_path / "var", create=True)
    try:
        svc.directory.init_server("main.dom")
        svc.directory.create_domain("client2.com", {"AssignedIPAddresses": "192.0.2.7"})
        assert auth.qualify_login(svc, "info", "192.0.2.7") == "info@client2.com"
        assert auth.qualify_login(svc, "info", "::ffff:192.0.2.7") == "info@client2.com"
        assert auth.qualify_login(svc, "info", "192.0.2.8") == "info"
        assert auth.qualify_login(svc, "info@main.dom", "192.0.2.7") == "info@main.dom"
        assert auth.qualify_login(svc, "info%main.dom", "192.0.2.7") == "info%main.dom"
    finally:
        svc.close()


def test_bare_names_on_an_assigned_address_over_every_protocol(tmp_path: Path) -> None:
    server = WaypostServer(tmp_path / "var").init()
    server.cli("domain", "add", "client2.com")
    server.cli("domain", "set", "client2.com", "AssignedIPAddresses", "127.0.0.1")
    server.cli("account", "add", "info@client2.com", "--password", "client2-pw-1")
    server.cli("account", "add", "info", "--password", "main-pw-1")  # Main Domain namesake
    server.start()
    try:
        client = smtplib.SMTP("127.0.0.1", server.smtp, timeout=30)
        client.ehlo("client.example")
        client.login("info", "client2-pw-1")
        client.quit()
        pop = poplib.POP3("127.0.0.1", server.port("POP3Port"), timeout=30)
        pop.user("info")
        pop.pass_("client2-pw-1")
        pop.quit()
        imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
        imap.login("info", "client2-pw-1")
        imap.logout()
        # the Main Domain account is still reachable by its full name
        imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
        imap.login("info@main.dom", "main-pw-1")
        imap.logout()
    finally:
        server.stop()
