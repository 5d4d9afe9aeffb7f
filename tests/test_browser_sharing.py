"""Sharing a mailbox in a real browser (issue 10 point 9, How To §6): the
owner grants a right on the Rights page of the stock skin in Debian's
Chromium; the grantee, in a browser context of its own, sees the shared
mailbox ``~owner/box`` on its Mailboxes page and opens its message list.

Everything on the web goes through what a user does (typing, ticking,
clicking); the grantee's subscription is made over IMAP, as a desktop
client would. Assertions depend on the stock skin only through labels,
button names, the rows' ``data-name`` and the ACL table's ``data-rights``.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from tests.support.browser import TIMEOUT_MS, finish
from tests.support.browser import sign_in as browser_sign_in
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "sharing-pw-1"
SUBJECT = "Quarterly announcement"
AFTER_SIGN_IN = re.compile(r"/Session/[^/]+/Mailboxes\.wssp$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("sharing") / "var"
    srv = WaypostServer(data).init()
    svc = open_services(data)
    try:
        for name in ("marketing", "john"):
            svc.directory.create_account(name, PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        for account in ("marketing@main.dom", "john@main.dom"):
            mail.ensure_inbox(account)
        mail.create("marketing@main.dom", "announce")
        mail.append("marketing@main.dom", "announce",
                    f"From: boss@main.dom\r\nSubject: {SUBJECT}\r\n\r\nNews.\r\n".encode())
    finally:
        svc.close()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def sign_in(page: Page, server: WaypostServer, name: str) -> None:
    browser_sign_in(page, server, name, PASSWORD, session=True)


def imap_select(server: WaypostServer, login: str, mailbox: str) -> str:
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
    try:
        imap.login(login, PASSWORD)
        return str(imap.select(f'"{mailbox}"', readonly=True)[0])
    finally:
        imap.logout()


def test_grant_a_right_and_see_the_shared_mailbox(server: WaypostServer,
                                                  browser_context_pair: tuple[
                                                      BrowserContext, BrowserContext]) -> None:
    owner_ctx, grantee_ctx = browser_context_pair
    assert imap_select(server, "john", "~marketing/announce") == "NO"

    owner = owner_ctx.new_page()
    sign_in(owner, server, "marketing")
    owner.get_by_role("link", name="Rights of announce").click()
    owner.wait_for_url(re.compile(r"/MailboxRights\.wssp\?Mailbox=announce$"))
    owner.get_by_label("Who").fill("john")
    for right in ("Lookup (l)", "Read (r)", "Seen (s)"):
        owner.get_by_label(right, exact=True).check()
    owner.get_by_role("button", name="Give rights").click()
    owner.wait_for_url(re.compile(r"Done=rightsSaved$"))
    assert owner.get_by_role("status").is_visible()
    entry = owner.locator('tr.entry[data-identifier="john"]')
    assert entry.get_attribute("data-rights") == "lrs"
    assert entry.locator('input[type="checkbox"]:checked').count() == 3
    assert imap_select(server, "john", "~marketing/announce") == "OK"

    # the grantee subscribes as his desktop client would, then uses the web
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
    try:
        imap.login("john", PASSWORD)
        assert imap.subscribe('"~marketing/announce"')[0] == "OK"
    finally:
        imap.logout()
    grantee = grantee_ctx.new_page()
    sign_in(grantee, server, "john")
    shared = grantee.locator('tr[data-name="~marketing/announce"]')
    assert shared.locator(".unseen").inner_text() == "1"
    assert shared.locator("a.rights").count() == 0  # lrs: john does not administer it
    shared.locator("a.mailbox").click()
    grantee.wait_for_url(re.compile(r"/Mailbox\.wssp\?Mailbox=~marketing%2Fannounce$"))
    assert grantee.locator("td.subject").first.inner_text() == SUBJECT


@pytest.fixture
def browser_context_pair(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
                         ) -> Iterator[tuple[BrowserContext, BrowserContext]]:
    """Two fresh contexts (owner, grantee): two users, two cookie jars."""
    contexts = []
    for _ in range(2):
        ctx = browser.new_context(ignore_https_errors=True)
        ctx.set_default_timeout(TIMEOUT_MS)
        contexts.append(ctx)
    try:
        yield contexts[0], contexts[1]
    finally:
        for ctx in contexts:
            finish(ctx, request, tmp_path)
