"""Reading mail in a real browser (issue 10 points 6 and 9): a message sent
over real SMTP to a real ``waypost serve`` is opened in Debian's Chromium
(Playwright) by clicking through the stock skin: its body is shown, its
attachment downloads with the right bytes, it is then shown as read, and
deleting it from the view puts it in Trash (checked over IMAP as well).

Assertions depend on the stock skin through link and button names, the
``unread`` row class and the ``Return`` field of the view's form only.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page
from tests.support.browser import sign_in as browser_sign_in
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "read-pw-1"
SUBJECT = "Quarterly numbers <&> for you"
BODY = "The numbers are attached, as promised."
ATTACHMENT = b"quarter,revenue\r\nQ1,100\r\nQ2,\xe2\x82\xac200\r\n"
SESSION_PAGE = re.compile(r"/Session/[A-Za-z0-9_-]{20,}/Mailboxes\.wssp$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("browser-read") / "var"
    srv = WaypostServer(data, log_level="INFO").init()
    svc = open_services(data)
    try:
        svc.directory.create_account("alice", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        mail.ensure_inbox("alice@main.dom")
        for i in range(30):  # enough rows for the phone layout to matter
            mail.append("alice@main.dom", "INBOX", (
                f"From: Someone With A Long Name <someone{i}@remote.example>\r\n"
                f"Subject: An older message with a fairly long subject line {i}\r\n\r\n"
                "Old.\r\n").encode(), ("\\Seen",))
    finally:
        svc.close()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def sign_in(page: Page, server: WaypostServer) -> None:
    browser_sign_in(page, server, "alice", PASSWORD, session=True)


def send_over_smtp(server: WaypostServer) -> None:
    message = EmailMessage()
    message["From"] = "Dan <dan@remote.example>"
    message["To"] = "alice@main.dom"
    message["Subject"] = SUBJECT
    message.set_content(BODY + "\n")
    message.add_attachment(ATTACHMENT, maintype="text", subtype="csv",
                           filename="numbers.csv")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.send_message(message)


def subjects_in(server: WaypostServer, mailbox: str) -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
    try:
        imap.login("alice", PASSWORD)
        typ, _ = imap.select(mailbox, readonly=True)
        if typ != "OK":
            return []
        typ, data = imap.uid("SEARCH", "SUBJECT", "Quarterly")
        found = (data[0] or b"").split()
        return found if typ == "OK" else []
    finally:
        imap.logout()


def test_read_download_and_delete_a_message_sent_over_smtp(
        server: WaypostServer, context: BrowserContext, tmp_path: Path) -> None:
    send_over_smtp(server)
    server.wait_for(lambda: subjects_in(server, "INBOX"), timeout=30, interval=0.2,
                    what="the message in alice's INBOX")

    page = context.new_page()
    sign_in(page, server)
    page.locator("a", has_text=re.compile(r"^INBOX$")).first.click()
    page.wait_for_url(re.compile(r"/Mailbox\.wssp\?"))
    row = page.locator("tr.message", has=page.get_by_role("link", name=SUBJECT))
    assert "unread" in (row.get_attribute("class") or "")

    page.get_by_role("link", name=SUBJECT).click()
    page.wait_for_url(re.compile(r"/Message\.wssp\?"))
    assert page.get_by_role("heading", name=SUBJECT).is_visible()
    assert page.get_by_text(BODY).is_visible()
    for name in ("Reply", "Reply all", "Forward"):
        assert page.get_by_role("link", name=name, exact=True).is_visible()

    with page.expect_download() as download:
        page.get_by_role("link", name="numbers.csv").click()
    saved = tmp_path / "numbers.csv"
    download.value.save_as(saved)
    assert saved.read_bytes() == ATTACHMENT
    assert download.value.suggested_filename == "numbers.csv"

    page.get_by_role("link", name="Back to INBOX").click()
    page.wait_for_url(re.compile(r"/Mailbox\.wssp\?"))
    row = page.locator("tr.message", has=page.get_by_role("link", name=SUBJECT))
    assert "unread" not in (row.get_attribute("class") or "")

    page.get_by_role("link", name=SUBJECT).click()
    page.wait_for_url(re.compile(r"/Message\.wssp\?"))
    page.get_by_role("button", name="Delete").click()
    # on to the next message in the list (the newest of the older ones)
    page.wait_for_url(re.compile(r"/Message\.wssp\?.*Done=deleted"))
    assert page.get_by_role("status").is_visible()
    assert SUBJECT not in page.title()

    assert subjects_in(server, "INBOX") == []
    assert len(subjects_in(server, "Trash")) == 1
    page.goto(page.url.split("/Message.wssp")[0] + "/Mailbox.wssp?Mailbox=Trash")
    assert page.get_by_role("link", name=SUBJECT).is_visible()


def test_the_message_list_with_its_actions_fits_a_phone(
        server: WaypostServer, phone: BrowserContext) -> None:
    page = phone.new_page()
    sign_in(page, server)
    page.goto(page.url.replace("Mailboxes.wssp", "Mailbox.wssp?Mailbox=INBOX"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert isinstance(width, int) and width <= 375, "the list scrolls sideways on a phone"
    for control in (page.get_by_role("button", name="Delete"),
                    page.get_by_role("button", name="Move to"),
                    page.get_by_role("checkbox").first):
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    # pick two messages by touch and mark them unread
    boxes = page.get_by_role("checkbox")
    boxes.nth(0).tap()
    boxes.nth(1).tap()
    page.get_by_role("button", name="Mark unread").tap()
    page.wait_for_url(re.compile(r"Done=unread"))
    assert page.locator("tr.message.unread").count() == 2
