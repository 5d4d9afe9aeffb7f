"""CSRF on every in-session form (issue 10 point 8), checked for every POST
action the WebUser module routes and every form of the stock skin.

Two guards that grow with the interface without edits here:

* every name in ``webuser.ACTIONS`` is tried against a real server without
  a token, with a wrong one and with another session's token (403, nothing
  happens), and without its session (the login page, 403);
* every ``<form>`` of the stock skin that posts carries the session's
  ``csrfToken`` hidden field, and no GET form does (a token must never end
  up in a URL, a log or a Referer).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.protocols.http import webuser
from waypost.services.container import open_services
from waypost.services.files import AccountFiles
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "forms-pw-1"
ALICE = "alice@main.dom"


@dataclass
class Site:
    server: WaypostServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, client: httpx.Client, name: str = "alice") -> str:
        page = client.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        answer = client.post("/login", data={"Username": name, "Password": PASSWORD,
                                             "csrfToken": token.group(1)})
        assert answer.status_code == 303, answer.text[:500]
        return str(answer.headers["location"]).rsplit("/", 1)[0] + "/"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("forms") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        svc.directory.create_account("alice", PASSWORD)
        svc.directory.create_account("bob", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        mail.ensure_inbox(ALICE)
        mail.create(ALICE, "Keep")
        mail.append(ALICE, "INBOX", b"From: x@remote.example\r\nSubject: keep me\r\n\r\nHi.\r\n")
        AccountFiles(svc).write_bytes(ALICE, "keep.txt", b"keep")
    finally:
        svc.close()
    server.start()
    try:
        yield Site(server)
    finally:
        server.stop()


def session_token(client: httpx.Client, base: str) -> str:
    """The session's token as its pages carry it (any page with a form)."""
    for page in ("Mailboxes.wssp", "Settings.wssp", "Compose.wssp", "Subscriptions.wssp",
                 "Files.wssp"):
        found = re.search(r'name="csrfToken" value="([^"]+)"', client.get(base + page).text)
        if found:
            return found.group(1)
    raise AssertionError("no session page carries a csrfToken")


def state(site: Site) -> tuple[object, ...]:
    """What a refused action must not change: alice's mailboxes, INBOX count,
    subscriptions, files and preferences."""
    svc = open_services(site.server.data)
    try:
        mail = MailAccess(svc)
        names = sorted(e.name for e in mail.list_mailboxes(ALICE, "", ["*"]))
        count = dict(mail.status(ALICE, "INBOX", ["MESSAGES"]))["MESSAGES"]
        files = sorted(e.path for e in AccountFiles(svc).list(ALICE))
        return (names, count, mail.subscriptions(ALICE), files,
                svc.directory.account_prefs(ALICE), mail.aliases(ALICE),
                svc.directory.get_account(ALICE).secret)
    finally:
        svc.close()


# A form that would do something for each action if the token were good.
HARMFUL = {"Name": "Evil", "Path": "keep.txt", "Folder": "", "Mailbox": "Keep", "UID": "1", "To": "bob@main.dom",
           "Subject": "csrf", "Body": "csrf", "Identifier": "anyone", "Rights": "lrswipcda",
           "Alias": "evil", "Target": "Keep", "NewName": "Gone", "Password": PASSWORD,
           "NewPassword": "x" * 12, "NewPassword2": "x" * 12, "Confirm": "1"}


def test_the_post_path_refuses_what_no_action_is(site: Site) -> None:
    with site.client() as c:
        base = site.session(c)
        assert c.post(base + "NoSuchAction", data={"csrfToken": "x"}).status_code == 404
        json = c.post(base + "Logout", content=b"{}",
                      headers={"Content-Type": "application/json"})
        assert json.status_code in (400, 404)


def test_every_action_needs_the_sessions_token(site: Site) -> None:
    before = state(site)
    with site.client() as c, site.client() as other:
        base = site.session(c)
        other_token = session_token(other, site.session(other))
        own = session_token(c, base)
        assert own != other_token
        for name in sorted(webuser.ACTIONS):
            for token in (None, "", "wrong-" + own[6:], other_token, own + "x"):
                data = dict(HARMFUL)
                if token is not None:
                    data["csrfToken"] = token
                answer = c.post(base + name, data=data)
                assert answer.status_code == 403, (name, token, answer.status_code)
                assert "badToken" in answer.text or "expired" in answer.text.lower(), name
            # and the same as a multipart upload form
            answer = c.post(base + name, data={"csrfToken": other_token},
                            files={"Attachment": ("a.txt", b"x", "text/plain")})
            assert answer.status_code == 403, name
    assert state(site) == before


def test_every_action_needs_the_session(site: Site) -> None:
    before = state(site)
    with site.client() as c, site.client() as thief:
        base = site.session(c)
        token = session_token(c, base)
        for name in sorted(webuser.ACTIONS):
            # the session's URL and token without its cookie: the login page
            answer = thief.post(base + name, data={**HARMFUL, "csrfToken": token})
            assert answer.status_code == 403, name
            assert "sessionExpired" in answer.text or "csrfToken" in answer.text, name
    assert state(site) == before


class Forms(HTMLParser):
    """Every ``<form>`` of a page: its method and the names of its fields."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(((a.get("method") or "get").lower(), []))
        elif tag in ("input", "select", "textarea", "button") and self.forms and a.get("name"):
            self.forms[-1][1].append(a.get("name") or "")


def stock_pages() -> list[str]:
    skin = resources.files("waypost.web").joinpath("skins", "unnamed")
    return sorted(p.name for p in skin.iterdir() if p.name.endswith((".wssp", ".wssi")))


@pytest.mark.parametrize("name", stock_pages())
def test_stock_forms_carry_the_token_only_when_they_post(name: str) -> None:
    text = resources.files("waypost.web").joinpath("skins", "unnamed", name).read_text()
    for method, fields in Forms(text).forms:
        if method == "post":
            assert "csrfToken" in fields, f"{name}: a POST form without csrfToken"
        else:
            assert "csrfToken" not in fields, f"{name}: a GET form would put the token in a URL"
