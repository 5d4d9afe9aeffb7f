"""The access rights editor (``MailboxRights.wssp``, issue 10 point 7, How To
§6, mailboxes.md §2) on a real ``waypost serve``: rights granted, changed and
removed on the web are what IMAP ``GETACL`` reports, and what a grantee's
``SELECT "~owner/box"`` is allowed; only the owner or a holder of ``a`` sees
and uses the editor; identifiers are escaped.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "rights-pw-1"
ALICE = "alice@main.dom"
MESSAGE = b"From: dan@remote.example\r\nSubject: shared news\r\n\r\nHello.\r\n"
HOSTILE = '"><script>alert(1)</script>'


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
        csrf = re.search(r'name="csrfToken" value="([^"]+)"', c.get(base + "Mailboxes.wssp").text)
        assert csrf
        return base, csrf.group(1)

    def imap(self, name: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.server.port("IMAPPort"), timeout=30)
        imap.login(name, PASSWORD)
        return imap

    def getacl(self, mailbox: str = "announce") -> dict[str, str]:
        """GETACL over IMAP as the owner: identifier -> RFC 4314 rights."""
        imap = self.imap("alice")
        try:
            typ, data = imap.getacl(f'"{mailbox}"')
            assert typ == "OK", data
            items: list[str] = []
            for piece in data:  # an identifier may come as a literal: (head {n}, text)
                head, literal = piece if isinstance(piece, tuple) else (piece, None)
                head = re.sub(rb"\{\d+\}$", b"", head or b"")
                items += [(q or w).decode() for q, w in
                          re.findall(rb'"((?:[^"\\]|\\.)*)"|(\S+)', head)]
                if literal is not None:
                    items.append(literal.decode())
            items = items[1:]  # the mailbox
            return dict(zip(items[::2], items[1::2], strict=True))
        finally:
            imap.logout()

    def can_select(self, login: str, mailbox: str) -> bool:
        imap = self.imap(login)
        try:
            typ, _ = imap.select(f'"{mailbox}"', readonly=True)
            return typ == "OK"
        finally:
            imap.logout()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("rights") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        for name in ("alice", "bob", "dave", "erin"):
            d.create_account(name, PASSWORD)
        d.create_domain("client.com")
        d.create_account("carol@client.com", PASSWORD)
        d.create_group("staff", ["erin"])
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        for account in ("alice@main.dom", "bob@main.dom", "dave@main.dom", "erin@main.dom",
                        "carol@client.com"):
            mail.ensure_inbox(account)
        mail.create(ALICE, "announce")
        mail.append(ALICE, "announce", MESSAGE)
        mail.create(ALICE, "board")
        mail.set_acl(ALICE, "board", "dave", "lra")  # dave administers board
        mail.set_acl(ALICE, "board", "bob", "lr")
    finally:
        svc.close()
    server.start()
    try:
        yield Site(server)
    finally:
        server.stop()


def grant(c: httpx.Client, base: str, csrf: str, mailbox: str, identifier: str,
          rights: str) -> httpx.Response:
    return c.post(base + "SetMailboxRights", data={
        "csrfToken": csrf, "Mailbox": mailbox, "Identifier": identifier,
        "Rights": list(rights)})


def shown(page: str) -> dict[str, str]:
    """The ACL table of the editor: identifier (escaped) -> CGP letters."""
    return dict(re.findall(r'<tr class="entry[^"]*" data-identifier="([^"]*)" '
                           r'data-rights="([^"]*)"', page))


def test_grant_change_and_remove_as_imap_sees_them(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        empty = c.get(base + "MailboxRights.wssp", params={"Mailbox": "announce"})
        assert empty.status_code == 200 and shown(empty.text) == {}
        assert not site.can_select("bob", "~alice/announce")

        done = grant(c, base, csrf, "announce", "anyone@", "lrs")
        assert done.status_code == 303
        assert done.headers["location"] == "MailboxRights.wssp?Mailbox=announce&Done=rightsSaved"
        done = grant(c, base, csrf, "announce", "carol@client.com", "lrswipcda")
        assert done.status_code == 303
        assert site.getacl() == {"anyone@": "lrs", "carol@client.com": "lrswipkxcteda"}
        page = c.get(base + done.headers["location"]).text
        assert 'role="status"' in page
        assert shown(page) == {"anyone@": "lrs", "carol@client.com": "lrswipcda"}
        # one checkbox per right and entry, ticked as stored
        carol = page.split('data-identifier="carol@client.com"')[1].split("</tr>")[0]
        assert len(re.findall(r'type="checkbox"', carol)) == 9
        assert len(re.findall(r" checked", carol)) == 9
        assert site.can_select("bob", "~alice/announce")  # anyone@ = main.dom
        assert site.can_select("carol@client.com", "~alice@main.dom/announce")

        changed = grant(c, base, csrf, "announce", "carol@client.com", "lr")
        assert changed.status_code == 303
        assert site.getacl()["carol@client.com"] == "lr"
        removed = c.post(base + "RemoveMailboxRights", data={
            "csrfToken": csrf, "Mailbox": "announce", "Identifier": "carol@client.com"})
        assert removed.status_code == 303 and removed.headers["location"].endswith(
            "Done=rightsRemoved")
        assert site.getacl() == {"anyone@": "lrs"}
        assert not site.can_select("carol@client.com", "~alice@main.dom/announce")


def test_negative_entries_groups_and_anyone(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "notes"})
        assert grant(c, base, csrf, "notes", "anyone", "lr").status_code == 303
        assert grant(c, base, csrf, "notes", "-bob", "lr").status_code == 303
        assert grant(c, base, csrf, "notes", "#staff", "lrswi").status_code == 303
        assert site.getacl("notes") == {"anyone": "lr", "-bob": "lr", "#staff": "lrswi"}
        assert site.can_select("dave", "~alice/notes")
        assert not site.can_select("bob", "~alice/notes")  # taken away
        assert site.can_select("carol@client.com", "~alice@main.dom/notes")  # anyone
        page = c.get(base + "MailboxRights.wssp", params={"Mailbox": "notes"}).text
        assert re.search(r'<tr class="entry negative" data-identifier="-bob"', page)
        erin = site.imap("erin")
        try:
            assert erin.myrights('"~alice/notes"')[1][0].split()[-1] == b"lrswi"
        finally:
            erin.logout()
        # no box ticked: the entry goes (SETACL with no rights)
        nothing = c.post(base + "SetMailboxRights", data={
            "csrfToken": csrf, "Mailbox": "notes", "Identifier": "-bob"})
        assert nothing.status_code == 303
        assert "-bob" not in site.getacl("notes")
        assert site.can_select("bob", "~alice/notes")


def test_only_the_owner_or_a_holder_of_a_may_use_the_editor(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "bob")  # lr on board
        page = c.get(base + "MailboxRights.wssp", params={"Mailbox": "~alice/board"})
        assert page.status_code == 403 and "dave" not in page.text
        assert "Administer right" in page.text
        posted = grant(c, base, csrf, "~alice/board", "bob", "lrswipcda")
        assert posted.status_code == 403
        removed = c.post(base + "RemoveMailboxRights", data={
            "csrfToken": csrf, "Mailbox": "~alice/board", "Identifier": "dave"})
        assert removed.status_code == 403
        assert c.post(base + "SubscribeMailbox", data={
            "csrfToken": csrf, "Mailbox": "~alice/board", "Subscribe": "1"}).status_code == 303
        listing = c.get(base + "Mailboxes.wssp").text
        board = listing.split('data-name="~alice/board"')[1].split("</tr>")[0]
        assert 'href="Mailbox.wssp?Mailbox=~alice%2Fboard"' in board
        assert "MailboxRights.wssp" not in board  # no a: no Rights link
        assert "MailboxRights.wssp?Mailbox=INBOX" in listing  # his own: there is one
        mine = c.get(base + "MailboxSettings.wssp", params={"Mailbox": "~alice/board"})
        assert mine.status_code == 200  # his own rights on the foreign mailbox
        assert re.findall(r'class="held" data-right="(\w)"', mine.text) == ["l", "r"]
        hidden = c.get(base + "MailboxRights.wssp", params={"Mailbox": "~alice/INBOX"})
        assert hidden.status_code == 404  # no l: not even its existence
    assert site.getacl("board") == {"dave": "lra", "bob": "lr"}
    with site.client() as c:
        base, csrf = site.session(c, "dave")  # lra on board
        page = c.get(base + "MailboxRights.wssp", params={"Mailbox": "~alice/board"})
        assert page.status_code == 200 and shown(page.text) == {"bob": "lr", "dave": "lra"}
        assert 'class="my-rights">lra<' in page.text
        assert grant(c, base, csrf, "~alice/board", "bob", "lrs").status_code == 303
    assert site.getacl("board")["bob"] == "lrs"


def test_identifiers_are_escaped_and_checked(site: Site) -> None:
    with site.client() as c:
        base, csrf = site.session(c, "alice")
        c.post(base + "CreateMailbox", data={"csrfToken": csrf, "Name": "odd"})
        assert grant(c, base, csrf, "odd", HOSTILE, "l").status_code == 303
        page = c.get(base + "MailboxRights.wssp", params={"Mailbox": "odd"})
        assert page.status_code == 200 and "<script>alert(1)" not in page.text
        assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        blank = grant(c, base, csrf, "odd", "john smith", "l")
        assert blank.status_code == 400 and 'role="alert"' in blank.text
        assert "without blanks" in blank.text
        bad_right = grant(c, base, csrf, "odd", "john", "lz")
        assert bad_right.status_code == 400
        forged = c.post(base + "SetMailboxRights", data={
            "Mailbox": "odd", "Identifier": "anyone", "Rights": list("lrswipcda")})
        assert forged.status_code == 403
    assert site.getacl("odd") == {HOSTILE: "l"}
