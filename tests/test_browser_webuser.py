"""The WebUser interface in a real browser (issue 10 point 9): Debian's
Chromium driven by Playwright against a real ``waypost serve`` on loopback.

Everything goes through what a user does: typing into the stock login form
and clicking its button, following links, reloading. The server's domains
resolve to 127.0.0.1 inside the browser (``tests.support.browser``), so the
``Host`` header is the one a user's browser would send. Assertions depend on
the stock skin only through the form's field names, the mailbox list's
``unseen`` counts and the ``role="alert"`` of the login error.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from playwright.sync_api import BrowserContext, Page, Request, Route
from tests.support.browser import sign_in as browser_sign_in
from tests.support.browser import web_url
from tests.support.howto import HOWTO_LOGIN
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "browser-pw-1"
SESSION_PAGE = re.compile(r"/Session/[A-Za-z0-9_-]{20,}/Mailboxes\.wssp$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("browser") / "var"
    srv = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        for name in ("alice", "bob", "phil"):
            d.create_account(name, PASSWORD)
        d.create_domain("client.com")
        d.create_account("carol@client.com", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")  # wrong passwords here must not lock out
        mail = MailAccess(svc)
        message = b"From: dan@remote.example\r\nSubject: hi\r\n\r\nHello.\r\n"
        for account in ("alice@main.dom", "bob@main.dom", "phil@main.dom"):
            mail.ensure_inbox(account)
        for flags in ((), (), ("\\Seen",)):
            mail.append("alice@main.dom", "INBOX", message, flags)
        mail.create("phil@main.dom", "A mailbox with a rather long name for a small screen")
    finally:
        svc.close()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def web(server: WaypostServer, host: str = "main.dom", *, secure: bool = False) -> str:
    return web_url(server, host, secure=secure)


def sign_in(page: Page, server: WaypostServer, name: str, password: str = PASSWORD) -> None:
    browser_sign_in(page, server, name, password)


def unseen(page: Page, mailbox: str) -> int:
    """The unread count shown beside ``mailbox`` in the mailbox list."""
    row = page.locator("tr", has=page.locator(".mailbox", has_text=re.compile(
        rf"^{re.escape(mailbox)}$")))
    return int(row.locator(".unseen").inner_text())


def session_cookies(context: BrowserContext) -> list[str]:
    return [c["value"] for c in context.cookies() if c["name"] == "WaypostSession"]


def test_log_in_see_inbox_unread_and_log_out(server: WaypostServer,
                                            context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server, "alice")
    assert SESSION_PAGE.search(page.url), page.url
    assert page.url.startswith(web(server))  # the same host, over HTTP
    assert unseen(page, "INBOX") == 2
    assert session_cookies(context)
    session_url = page.url

    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/Logout$"))
    assert "/Session/" in page.url and "INBOX" not in page.content()
    # the session is gone: the same URL now gives the login form, no mailboxes
    response = page.goto(session_url)
    assert response is not None and response.status == 403
    assert page.locator('input[name="Password"]').count() == 1
    assert page.locator(".unseen").count() == 0


def test_a_wrong_password_shows_the_error_and_no_session(server: WaypostServer,
                                                         context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server, "alice", "not-the-password")
    assert "/Session/" not in page.url
    assert page.get_by_role("alert").is_visible()
    assert page.get_by_label("Name").input_value() == "alice"  # the name typed
    assert page.get_by_label("Password").input_value() == ""
    assert page.locator(".unseen").count() == 0
    assert not session_cookies(context)


def test_the_access_recipe_in_the_browser(server: WaypostServer,
                                          context: BrowserContext) -> None:
    """The How To's steps with the CLI, then a visitor's browser: clear text is
    sent to ``https://client.com/``, the secure port shows the login form."""
    original = server.cli("skin", "get", "--domain", "client.com", "login.wssp").stdout
    server.cli("skin", "put", "--domain", "client.com", "login.wssi", input=original)
    server.cli("skin", "put", "--domain", "client.com", "login.wssp", input=HOWTO_LOGIN)

    sent_to: list[str] = []

    def arrive(route: Route, request: Request) -> None:
        """Stand in for a web server on port 443, which the test cannot be."""
        sent_to.append(request.url)
        route.fulfill(status=200, content_type="text/html",
                      body="<!DOCTYPE html><title>secure</title><p>arrived</p>")

    page = context.new_page()
    page.route(re.compile(r"^https://client\.com/"), arrive)
    page.goto(web(server, "client.com"))
    page.wait_for_url("https://client.com/")  # the META refresh, followed
    assert page.locator("p").inner_text() == "arrived"
    assert sent_to == ["https://client.com/"]
    assert page.url == "https://client.com/"
    page.unroute(re.compile(r"^https://client\.com/"))

    page.goto(web(server, "client.com", secure=True))
    assert page.get_by_label("Password").is_visible()
    assert "client.com" in page.locator("h1").inner_text()
    page.get_by_label("Name").fill("carol")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(SESSION_PAGE)
    assert page.url.startswith(web(server, "client.com", secure=True))
    assert unseen(page, "INBOX") == 0


def _scroll_width(page: Page) -> int:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert isinstance(width, int)
    return width


def phone_sign_in(page: Page, server: WaypostServer) -> None:
    """Sign in as phil by touch, asserting on the way that the form fits the screen."""
    page.goto(web(server))
    assert _scroll_width(page) <= 375, "the login page scrolls sideways on a phone"
    for field in (page.get_by_label("Name"), page.get_by_label("Password"),
                  page.get_by_role("button", name="Sign in")):
        box = field.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    page.get_by_label("Name").tap()
    page.keyboard.type("phil")
    page.get_by_label("Password").tap()
    page.keyboard.type(PASSWORD)
    page.get_by_role("button", name="Sign in").tap()
    page.wait_for_url(SESSION_PAGE)


def test_the_login_form_is_usable_on_a_phone(server: WaypostServer,
                                             phone: BrowserContext) -> None:
    page = phone.new_page()
    phone_sign_in(page, server)
    assert unseen(page, "INBOX") == 0
    assert page.get_by_text("A mailbox with a rather long name").is_visible()


def test_the_mailbox_list_fits_a_phone(server: WaypostServer, phone: BrowserContext) -> None:
    page = phone.new_page()
    phone_sign_in(page, server)
    assert _scroll_width(page) <= 375, "the mailbox list scrolls sideways on a phone"


def test_a_message_sent_over_smtp_shows_as_unread(server: WaypostServer,
                                                  context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server, "bob")
    assert unseen(page, "INBOX") == 0

    message = EmailMessage()
    message["From"] = "dan@remote.example"
    message["To"] = "bob@main.dom"
    message["Subject"] = "Seen in the browser"
    message.set_content("Over SMTP, shown on the web.\n")
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=30) as client:
        client.send_message(message)

    def arrived() -> bool:
        page.reload()
        return unseen(page, "INBOX") == 1

    server.wait_for(arrived, timeout=30, interval=0.3, what="the message in bob's INBOX")
    assert SESSION_PAGE.search(page.url)  # still the same session after the reloads
