"""Writing a message in a real browser (issue 10 point 9): Debian's Chromium
through Playwright signs in, opens Compose from the navigation, types the
message, attaches a file with the file input and sends; the message arrives
in another account, read over IMAP. The form is also checked on a phone.

Assertions depend on the stock skin only through its labels, the Compose
link and the Send button.
"""

from __future__ import annotations

import email
import imaplib
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest
from playwright.sync_api import BrowserContext, Page
from tests.support.browser import sign_in as browser_sign_in
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "browser-compose-1"
ATTACHMENT = b"%PDF-1.4 not really\x00\xff\xfe binary\r\n" * 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("browser-compose") / "var"
    srv = WaypostServer(data).init()
    svc = open_services(data)
    try:
        for name in ("alice", "bob"):
            svc.directory.create_account(name, PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        for account in ("alice@main.dom", "bob@main.dom"):
            mail.ensure_inbox(account)
    finally:
        svc.close()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def sign_in(page: Page, server: WaypostServer, name: str) -> None:
    browser_sign_in(page, server, name, PASSWORD, session=True)


def arrived(server: WaypostServer, account: str, subject: str) -> EmailMessage:
    def look() -> EmailMessage | None:
        c = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
        try:
            c.login(account, PASSWORD)
            c.select("INBOX")
            _, found = c.uid("SEARCH", "SUBJECT", f'"{subject}"')
            if not found[0]:
                return None
            _, parts = c.uid("FETCH", found[0].split()[-1], "(BODY.PEEK[])")
            msg = email.message_from_bytes(parts[0][1], policy=policy.default)
            assert isinstance(msg, EmailMessage)
            return msg
        finally:
            c.logout()

    found: EmailMessage = server.wait_for(look, what=f"{subject!r} for {account}")
    return found


def test_write_attach_and_send_arrives_over_imap(server: WaypostServer,
                                                 context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server, "alice")
    page.get_by_role("link", name="Compose").click()
    page.wait_for_url(re.compile(r"/Compose\.wssp$"))
    page.get_by_label("To").fill("bob@main.dom")
    page.get_by_label("Subject").fill("Browser compose check")
    page.get_by_label("Message").fill("Hello Bob,\nthe report is attached.\n")
    page.get_by_label("File 1").set_input_files(
        {"name": "report.pdf", "mimeType": "application/pdf", "buffer": ATTACHMENT})
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/Mailboxes\.wssp\?Done=sent$"))

    got = arrived(server, "bob@main.dom", "Browser compose check")
    assert got["From"].addresses[0].addr_spec == "alice@main.dom"
    assert "the report is attached." in got.get_body(("plain",)).get_content()
    [part] = list(got.iter_attachments())
    assert part.get_filename() == "report.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == ATTACHMENT


def test_the_compose_form_fits_a_phone(server: WaypostServer, phone: BrowserContext) -> None:
    page = phone.new_page()
    sign_in(page, server, "bob")
    page.get_by_role("link", name="Compose").click()
    page.wait_for_url(re.compile(r"/Compose\.wssp$"))
    for label in ("To", "Cc", "Bcc", "Subject", "Message"):
        assert page.get_by_label(label, exact=True).is_visible(), label
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    box = page.get_by_label("Message").bounding_box()
    assert box is not None and box["width"] >= 250
    assert page.get_by_role("button", name="Send").is_visible()
