"""The Mailboxes pages end to end (issue 10 points 6 and 7): the mailbox list
as the preferences ask for it, and creating, renaming and deleting
mailboxes on a real ``waypost serve``, checked over IMAP, with the
service's reasons on refusals, CSRF on every action and hostile names.

Assertions look at the datasets' traces in the stock skin (rows'
``data-name``, links, form fields, ``role="alert"``), not at its wording.
"""

from __future__ import annotations

import imaplib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess
from waypost.services.preferences import set_prefs

PASSWORD = "folders-pw-1"
ALICE = "alice@main.dom"
BOB = "bob@main.dom"
XSS_BOX = 'Odd<script>alert("box")</script>'
MESSAGE = b"From: dan@remote.example\r\nSubject: hi\r\n\r\nHello.\r\n"
ACTIONS = ("CreateMailbox", "RenameMailbox", "DeleteMailbox", "SubscribeMailbox",
           "SetMailboxRights", "RemoveMailboxRights")


@dataclass
class Site:
    server: WaypostServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, c: httpx.Client, name: str) -> tuple[str, str]:
        """Log in: (the session URL prefix, the session's CSRF token)."""
        page = c.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        done = c.post("/login", data={"Username": name, "Password": PASSWORD,
                                      "csrfToken": token.group(1)})
        assert done.status_code == 303, done.text[:300]
        base = str(done.headers["location"]).rsplit("/", 1)[0] + "/"
        listing = c.get(base + "Mailboxes.wssp")
        csrf = re.search(r'name="csrfToken" value="([^"]+)"', listing.text)
        assert csrf, listing.text[:300]
        return base, csrf.group(1)

    def imap(self, name: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.server.port("IMAPPort"), timeout=30)
        imap.login(name, PASSWORD)
        return imap

    def mail(self) -> Iterator[MailAccess]:
        svc = open_services(self.server.data)
        try:
            yield MailAccess(svc)
        finally:
            svc.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("folders") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        for name in ("alice", "bob", "carol", "marketing", "dave"):
            d.create_account(name, PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        for name in ("alice", "bob", "carol", "marketing", "dave"):
            mail.ensure_inbox(f"{name}@main.dom")
        mail.create("marketing@main.dom", "announce")
        mail.append("marketing@main.dom", "announce", MESSAGE)
        mail.set_acl("marketing@main.dom", "announce", "anyone@", "lrs")
        mail.create("marketing@main.dom", "team")
        mail.set_acl("marketing@main.dom", "team", "bob", "lrswipcda")
        mail.create(BOB, "Shared")
        mail.set_acl(BOB, "Shared", "alice", "lrcd")  # c: alice may create inside
        mail.create(BOB, "Shared/Inner")
        mail.set_acl(BOB, "Shared/Inner", "alice", "lr")  # no d, no a
        mail.create(BOB, "Closed")
        mail.set_acl(BOB, "Closed", "alice", "lr")  # no c inside
        mail.create(ALICE, XSS_BOX)
        mail.append(ALICE, XSS_BOX, MESSAGE)
        mail.create("dave@main.dom", "Projects/2026/Q1")
        mail.append("dave@main.dom", "Projects/2026/Q1", MESSAGE)
        mail.create("dave@main.dom", "Projects 2")
        mail.subscribe("dave@main.dom", "~marketing/announce")
        mail.subscribe("dave@main.dom", "Projects/2026/Q1")
        mail.subscribe("dave@main.dom", "~marketing/gone")
        d.set_account_prefs("dave@main.dom", {})
    finally:
        svc.close()
    server.start()
    try:
        yield Site(server)
    finally:
        server.stop()


def names(page: str) -> list[str]:
    """The mailbox rows of the Mailboxes page, in order (HTML-escaped names)."""
    return re.findall(r'<tr class="box[^"]*" data-name="([^"]*)"', page)


def row(page: str, name: str) -> str:
    found = re.search(r'<tr class="box[^"]*" data-name="' + re.escape(name) + r'">(.*?)</tr>',
                      page, re.S)
    assert found, f"no row {name!r} in {names(page)}"
    return found.group(1)


def imap_list(site: Site, account: str, pattern: str = "*") -> list[str]:
    imap = site.imap(account)
    try:
        typ, data = imap.list('""', pattern)
        assert typ == "OK"
        out = []
        for item in data:
            if isinstance(item, tuple):  # the name came as a literal
                out.append(item[1].decode())
                continue
            if not isinstance(item, bytes) or not item.startswith(b"("):
                continue
            found = re.match(rb'\(([^)]*)\) "/" (.*)$', item)
            assert found, item
            name = found.group(2).decode()
            out.append(name[1:-1].replace('\\"', '"') if name.startswith('"') else name)
        return out
    finally:
        imap.logout()


def imap_count(site: Site, account: str, mailbox: str) -> int:
    imap = site.imap(account)
    try:
        typ, data = imap.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", data
        return int(data[0] or b"0")
    finally:
        imap.logout()


def alert(page: str) -> str:
    found = re.search(r'role="alert">(.*?)</p>', page, re.S)
    return found.group(1).strip() if found else ""


# -- the list -------------------------------------------------------------------------


def test_the_list_shows_the_hierarchy_counts_and_foreign_subscriptions(site: Site) -> None:
    with site.client() as c:
        base, _ = site.session(c, "dave")
        page = c.get(base + "Mailboxes.wssp")
        assert page.status_code == 200
        listed = names(page.text)
        # own names by level ("Projects 2" after the Projects tree), then foreign ones
        assert listed == ["INBOX", "Projects", "Projects/2026", "Projects/2026/Q1",
                          "Projects 2", "~marketing/announce", "~marketing/gone"]
        projects = row(page.text, "Projects")
        assert 'class="mailbox noselect"' in projects and "href=\"Mailbox.wssp" not in projects
        q1 = row(page.text, "Projects/2026/Q1")
        assert 'style="--level: 2"' in q1 and ">Q1</a>" in q1
        assert 'href="Mailbox.wssp?Mailbox=Projects%2F2026%2FQ1"' in q1
        assert '<span class="unseen">1</span>' in q1 and 'value="0"' in q1  # subscribed
        announce = row(page.text, "~marketing/announce")
        assert 'href="Mailbox.wssp?Mailbox=~marketing%2Fannounce"' in announce
        assert '<span class="messages">1</span>' in announce
        assert 'class="rights"' not in announce  # lrs: no a
        assert 'class="rights"' in row(page.text, "Projects 2")  # the owner
        gone = row(page.text, "~marketing/gone")
        assert 'class="tag missing"' in gone and "Mailbox.wssp" not in gone
        opened = c.get(base + "Mailbox.wssp", params={"Mailbox": "~marketing/announce"})
        assert opened.status_code == 200 and "hi" in opened.text


def test_preferences_choose_what_the_list_shows(site: Site) -> None:
    svc = open_services(site.server.data)
    try:
        with site.client() as c:
            base, _ = site.session(c, "dave")
            set_prefs(svc, "dave@main.dom", {"ShowSubscribed": "no"})
            page = c.get(base + "Mailboxes.wssp").text
            assert names(page) == ["INBOX", "Projects", "Projects/2026", "Projects/2026/Q1",
                                   "Projects 2"]
            set_prefs(svc, "dave@main.dom", {"MailboxList": "subscribed"})
            page = c.get(base + "Mailboxes.wssp").text
            assert names(page) == ["Projects/2026/Q1", "~marketing/announce",
                                   "~marketing/gone"]
            assert ">Projects/2026/Q1</a>" in page  # its parent is not listed: whole name
            set_prefs(svc, "dave@main.dom", {"MailboxList": "default", "ShowSubscribed": "yes"})
            page = c.get(base + "Mailboxes.wssp").text
            assert "~marketing/announce" in names(page) and "Projects 2" in names(page)
    finally:
        set_prefs(svc, "dave@main.dom", {"MailboxList": "default", "ShowSubscribed": "default"})
        svc.close()


def test_aliases_show_as_aliases_and_open_the_target(site: Site) -> None:
    svc = open_services(site.server.data)
    try:
        MailAccess(svc).access.set_alias("carol@main.dom", "Announce", "~marketing/announce")
    finally:
        svc.close()
    with site.client() as c:
        base, _ = site.session(c, "carol")
        page = c.get(base + "Mailboxes.wssp").text
        announce = row(page, "Announce")
        assert 'class="tag alias"' in announce and "~marketing/announce" in announce
        assert 'href="Mailbox.wssp?Mailbox=Announce"' in announce
        opened = c.get(base + "Mailbox.wssp", params={"Mailbox": "Announce"})
        assert opened.status_code == 200 and "hi" in opened.text


def test_subscribe_and_unsubscribe(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "carol")
        done = c.post(base + "SubscribeMailbox", data={"csrfToken": csrf, "Mailbox": "INBOX",
                                                       "Subscribe": "1"})
        assert done.status_code == 303 and done.headers["location"].endswith("Done=subscribed")
        page = c.get(base + done.headers["location"]).text
        assert 'role="status"' in page and 'value="0"' in row(page, "INBOX")
        imap = site.imap("carol")
        try:
            assert b"INBOX" in b" ".join(d for d in imap.lsub()[1] if isinstance(d, bytes))
        finally:
            imap.logout()
        done = c.post(base + "SubscribeMailbox", data={"csrfToken": csrf, "Mailbox": "INBOX",
                                                       "Subscribe": "0"})
        assert done.status_code == 303
        assert 'value="1"' in row(c.get(base + "Mailboxes.wssp").text, "INBOX")


# -- create, rename, delete -----------------------------------------------------------------


def test_create_nested_and_at_the_top(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        made = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Clients/Acme"})
        assert made.status_code == 303 and made.headers["location"] == \
            "Mailboxes.wssp?Done=created"
        made = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": " Beta ",
                                                    "Parent": "Clients"})
        assert made.status_code == 303
        page = c.get(base + made.headers["location"]).text
        assert {"Clients", "Clients/Acme", "Clients/Beta"} <= set(names(page))
        assert 'class="mailbox noselect"' in row(page, "Clients")  # A/B made A's directory
        assert '<option value="Clients/Acme">' in page  # a parent to choose
    listed = imap_list(site, "alice")
    assert {"Clients", "Clients/Acme", "Clients/Beta"} <= set(listed)


def test_rename_a_mailbox_and_inbox(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "bob")
        c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Old"})
        done = c.post(base + "RenameMailbox", data={"csrfToken": csrf, "Mailbox": "Old",
                                                    "NewName": "New/Name"})
        assert done.status_code == 303 and done.headers["location"].endswith("Done=renamed")
        for _ in range(2):
            for mail in site.mail():
                mail.append(BOB, "INBOX", MESSAGE)
        assert imap_count(site, "bob", "INBOX") == 2
        done = c.post(base + "RenameMailbox", data={"csrfToken": csrf, "Mailbox": "INBOX",
                                                    "NewName": "Archive 2026"})
        assert done.status_code == 303
    listed = imap_list(site, "bob")
    assert "New/Name" in listed and "Old" not in listed
    assert imap_count(site, "bob", "Archive 2026") == 2  # INBOX's messages moved
    assert imap_count(site, "bob", "INBOX") == 0  # and INBOX stays, empty


def test_delete_asks_first_then_deletes(site: Site) -> None:
    for mail in site.mail():
        mail.create(ALICE, "Trash me/Child")
        mail.create(ALICE, "Trash me")
        for _ in range(3):
            mail.append(ALICE, "Trash me", MESSAGE)
        mail.create(ALICE, "Keep children/Child")
        mail.create(ALICE, "Keep children")
        mail.append(ALICE, "Keep children", MESSAGE)
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        ask = c.get(base + "MailboxSettings.wssp", params={"Mailbox": "Trash me"})
        assert ask.status_code == 200
        assert re.search(r'Delete <strong>Trash me</strong> and its <span class="count">3<',
                         ask.text)
        assert 'class="sub-count">1<' in ask.text and "Trash me/Child" in ask.text
        assert 'action="DeleteMailbox"' in ask.text and 'name="SubMailboxes"' in ask.text
        assert imap_count(site, "alice", "Trash me") == 3  # asking deletes nothing
        gone = c.post(base + "DeleteMailbox", data={"csrfToken": csrf, "Mailbox": "Trash me",
                                                    "SubMailboxes": "1"})
        assert gone.status_code == 303 and gone.headers["location"].endswith("Done=deleted")
        kept = c.post(base + "DeleteMailbox", data={"csrfToken": csrf,
                                                    "Mailbox": "Keep children"})
        assert kept.status_code == 303
        page = c.get(base + "Mailboxes.wssp").text
        assert 'class="mailbox noselect"' in row(page, "Keep children")
    listed = imap_list(site, "alice")
    assert not any(n.startswith("Trash me") for n in listed)
    assert "Keep children/Child" in listed  # sub-mailboxes go only when asked for


def test_refusals_show_the_service_reason(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        inbox = c.get(base + "MailboxSettings.wssp", params={"Mailbox": "INBOX"})
        assert 'action="DeleteMailbox"' not in inbox.text  # nothing to confirm
        refused = c.post(base + "DeleteMailbox", data={"csrfToken": csrf, "Mailbox": "INBOX"})
        assert refused.status_code == 400 and "INBOX cannot be deleted" in alert(refused.text)
        bad = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "a*b"})
        assert bad.status_code == 400 and "is not allowed in a mailbox name" in alert(bad.text)
        assert "a*b" not in imap_list(site, "alice")
        empty_level = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "x//y"})
        assert empty_level.status_code == 400 and "empty" in alert(empty_level.text)
        c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Twice"})
        twice = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Twice"})
        assert twice.status_code == 400 and "already exists" in alert(twice.text)
        clash = c.post(base + "RenameMailbox", data={"csrfToken": csrf, "Mailbox": XSS_BOX,
                                                     "NewName": "Twice"})
        assert clash.status_code == 400 and "already exists" in alert(clash.text)
        missing = c.post(base + "RenameMailbox", data={"csrfToken": csrf, "Mailbox": "Nope",
                                                       "NewName": "Other"})
        assert missing.status_code in (400, 404) and "Nope" in missing.text
        nameless = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": " "})
        assert nameless.status_code == 400


def test_foreign_mailboxes_follow_the_rights(site: Site) -> None:
    """``c`` and ``d`` on bob's Shared let alice create and delete inside it; without
    ``c`` (Closed) or at the top level she is refused with the reason."""
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        made = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Sub",
                                                    "Parent": "~bob/Shared"})
        assert made.status_code == 303
        assert "Shared/Sub" in imap_list(site, "bob")
        closed = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "Sub",
                                                      "Parent": "~bob/Closed"})
        assert closed.status_code == 403 and "Create right" in alert(closed.text)
        top = c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "~bob/Top"})
        assert top.status_code == 403 and "only the owner" in alert(top.text)
        inner = c.post(base + "DeleteMailbox", data={"csrfToken": csrf,
                                                     "Mailbox": "~bob/Shared/Inner"})
        assert inner.status_code == 403 and "Delete right" in alert(inner.text)
        mine = c.get(base + "MailboxSettings.wssp", params={"Mailbox": "~bob/Shared"})
        assert mine.status_code == 200
        held = re.findall(r'class="held" data-right="(\w)"', mine.text)
        assert held == ["l", "r", "c", "d"]
        assert 'class="rights"' not in mine.text  # no a: no link to the editor
        away = c.post(base + "RenameMailbox", data={"csrfToken": csrf,
                                                    "Mailbox": "~bob/Shared/Sub",
                                                    "NewName": "Mine"})
        assert away.status_code == 400 and "another account" in alert(away.text)
        renamed = c.post(base + "RenameMailbox", data={"csrfToken": csrf,
                                                       "Mailbox": "~bob/Shared/Sub",
                                                       "NewName": "~bob/Shared/Renamed"})
        assert renamed.status_code == 303
        assert "Shared/Renamed" in imap_list(site, "bob")
        sub = c.post(base + "DeleteMailbox", data={"csrfToken": csrf,
                                                   "Mailbox": "~bob/Shared/Renamed"})
        assert sub.status_code == 303  # d on it (Shared's ACL copied), c on Shared
    listed = imap_list(site, "bob")
    assert "Shared/Sub" not in listed and "Shared/Renamed" not in listed


# -- security ----------------------------------------------------------------------------


def test_every_action_needs_the_csrf_token(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        fields = {"Mailbox": XSS_BOX, "Name": "ByCSRF", "NewName": "ByCSRF",
                  "Subscribe": "1", "Identifier": "anyone", "Rights": "lrswipcda"}
        for action in ACTIONS:
            missing = c.post(base + action, data=fields)
            wrong = c.post(base + action, data={**fields, "csrfToken": csrf[::-1]})
            assert missing.status_code == 403 and wrong.status_code == 403, action
        settings = c.get(base + "MailboxSettings.wssp", params={"Mailbox": XSS_BOX})
        assert settings.status_code == 200 and 'class="subscribed"' not in settings.text
    assert "ByCSRF" not in imap_list(site, "alice")
    assert XSS_BOX in imap_list(site, "alice")
    for mail in site.mail():
        assert mail.get_acl(ALICE, XSS_BOX) == []
        assert XSS_BOX not in mail.subscriptions(ALICE)


def test_hostile_names_are_escaped(site: Site) -> None:
    quoted = urllib.parse.quote(XSS_BOX, safe="")
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        page = c.get(base + "Mailboxes.wssp").text
        assert "<script>alert" not in page
        assert f'href="Mailbox.wssp?Mailbox={quoted}"' in page
        assert "Odd&lt;script&gt;alert(&quot;box&quot;)&lt;/script&gt;" in page
        for name in ("MailboxSettings.wssp", "MailboxRights.wssp"):
            other = c.get(base + name, params={"Mailbox": XSS_BOX})
            assert other.status_code == 200 and "<script>alert" not in other.text
        refused = c.post(base + "CreateMailbox", data={"csrfToken": csrf,
                                                       "Name": '<img src=x onerror="a()">*'})
        assert refused.status_code == 400 and "<img" not in refused.text
        assert "&lt;img src=x onerror=&quot;a()&quot;&gt;" in alert(refused.text)
        made = c.post(base + "CreateMailbox", data={"csrfToken": csrf,
                                                    "Name": '"><b>bold</b>'})
        assert made.status_code == 303
        assert "<b>bold</b>" not in c.get(base + "Mailboxes.wssp").text
