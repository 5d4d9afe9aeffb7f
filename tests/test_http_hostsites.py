"""The How To's host-name personal sites, verbatim (issue 11 point 5;
router.md §7.8): the Router records typed with the real CLI, the sites
fetched over HTTP, the route explained, and mail to a server domain that
the wildcard could catch.

Choice [waypost] (router.md §4 keeps records before local domains): the
plain records of the How To do take mail for an existing secondary domain
``dept1.company.dom``, so ``waypost router set`` warns with the line and
the ``Access:`` remedy; with the remedy the same sites work and the
domain's mail is delivered.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import httpx
import pytest
from tests.support.mailbox import read_mailbox
from tests.support.server import WaypostServer

PASSWORD = "hostsite-pw-1"
HOWTO_SECONDARY = "*.domain.dom = *@domain.dom\n<LoginPage%*@domain.dom> = *@domain.dom\n"
HOWTO_MAIN = "*.company.dom = *@fict\n<LoginPage%*@fict> = *\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("hostsites") / "var"
    server = WaypostServer(data, domain="company.dom").init()
    cli = server.cli
    cli("domain", "add", "domain.dom")
    cli("domain", "add", "dept1.company.dom")
    cli("account", "add", "username@domain.dom", "--password", PASSWORD)
    cli("account", "add", "username", "--password", PASSWORD)
    cli("account", "add", "boss@dept1.company.dom", "--password", PASSWORD)
    server.cli("files", "put", "username@domain.dom", "default.html",
               input="<p>site in domain.dom</p>")
    server.cli("files", "put", "username", "default.html", input="<p>site in company.dom</p>")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(server: WaypostServer, host: str, path: str = "/") -> httpx.Response:
    with httpx.Client(base_url=server.url(), timeout=30) as client:
        return client.get(path, headers={"Host": f"{host}:{server.web}"})


def mail_to(server: WaypostServer, rcpt: str) -> None:
    message = EmailMessage()
    message["From"] = "sender@remote.example"
    message["To"] = rcpt
    message["Subject"] = "for the department"
    message.set_content("hello")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as smtp:
        smtp.send_message(message)


def test_the_how_to_records_serve_both_sites_and_warn(server: WaypostServer) -> None:
    result = server.cli("router", "set", "-", input=HOWTO_SECONDARY + HOWTO_MAIN)
    assert "line 3 `*.company.dom = *@fict` catches mail for the server domain " \
        "dept1.company.dom" in result.stderr
    assert "Access:*.company.dom = *@fict" in result.stderr
    assert result.stderr.count("warning:") == 1  # lines 1-2 catch no server domain
    assert get(server, "username.domain.dom").text == "<p>site in domain.dom</p>"
    assert get(server, "username.company.dom").text == "<p>site in company.dom</p>"
    assert get(server, "nobody.company.dom").status_code == 404
    explained = server.cli("route", "LoginPage@username.domain.dom", "--kind", "access",
                           "--explain").stdout
    assert "`*.domain.dom = *@domain.dom`" in explained
    assert "`<LoginPage%*@domain.dom> = *@domain.dom`" in explained
    assert explained.strip().endswith("LOCAL(username@domain.dom)")
    mail = server.cli("route", "boss@dept1.company.dom", check=False)
    assert "unqualified domain name 'fict'" in mail.stdout + mail.stderr


def test_with_the_access_prefix_mail_keeps_working(server: WaypostServer) -> None:
    result = server.cli("router", "set", "-",
                        input=HOWTO_SECONDARY + "Access:" + HOWTO_MAIN)
    assert "warning" not in result.stderr
    assert "no problems found" in server.cli("router", "check").stdout
    assert get(server, "username.company.dom").text == "<p>site in company.dom</p>"
    assert get(server, "username.domain.dom").text == "<p>site in domain.dom</p>"
    mail_to(server, "boss@dept1.company.dom")
    delivered = server.wait_for(lambda: read_mailbox(server.data, "boss@dept1.company.dom"),
                                what="mail delivered to dept1.company.dom")
    assert b"for the department" in delivered[0]
