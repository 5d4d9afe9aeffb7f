"""The account's own pages end to end (issue 10 point 7): subscriptions with
foreign names, Open Mailbox for administrators, mailbox aliases seen over
IMAP, preferences and the session's skin, the password change; CSRF and XSS
on every form. A real ``waypost serve`` over real sockets, set up through the
services and the real ``waypost`` command.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

PASSWORD = "web-pw-1234"
ALICE = "alice@main.dom"
XSS = '<script>alert("x")</script>'


def message(subject: str, to: str) -> bytes:
    m = EmailMessage()
    m["From"] = "Someone <someone@remote.example>"
    m["To"] = to
    m["Subject"] = subject
    m.set_content("Hello.")
    return bytes(m)


@dataclass
class World:
    server: WaypostServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def login(self, c: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
        page = c.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert page.status_code == 200 and token, page.text[:300]
        return c.post("/login", data={"Username": name, "Password": password,
                                      "csrfToken": token.group(1)})

    def session(self, c: httpx.Client, name: str = "alice") -> str:
        """The session URL prefix ``/Session/<id>/`` of a fresh login."""
        response = self.login(c, name)
        assert response.status_code == 303, response.text[:300]
        return str(response.headers["location"]).rsplit("/", 1)[0] + "/"

    def imap(self, name: str, password: str = PASSWORD) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.server.port("IMAPPort"), timeout=30)
        imap.login(name, password)
        return imap


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def post(c: httpx.Client, base: str, page: str, action: str, **fields: str) -> httpx.Response:
    """Submit ``action`` as the form on ``page`` does (its CSRF token)."""
    token = csrf(c.get(base + page))
    return c.post(base + action, data={"csrfToken": token, **fields})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("account") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        for name in ("alice", "bob", "marketing", "admin", "skinner", "pwuser", "carol"):
            d.create_account(name, PASSWORD)
        d.set_rights("admin@main.dom", ["Domain", "CanAccessMailboxes"])
        d.create_domain("other.dom")
        d.create_account("oadmin@other.dom", PASSWORD)
        d.set_rights("oadmin@other.dom", ["Domain", "CanAccessMailboxes"])
        svc.set_setting("LoginFailureLimit", "0")
        mail = MailAccess(svc)
        for name in ("alice", "bob", "marketing"):
            mail.ensure_inbox(f"{name}@main.dom")
        mail.append("bob@main.dom", "INBOX", message("bob inbox secret", "bob@main.dom"))
        mail.create("marketing@main.dom", "announce")
        mail.append("marketing@main.dom", "announce", message("Announcement one", "all"))
        mail.set_acl("marketing@main.dom", "announce", ALICE, "lrs")
        mail.create("marketing@main.dom", "other")
        mail.append("marketing@main.dom", "other", message("Other one", "all"))
        mail.append("marketing@main.dom", "other", message("Other two", "all"))
        mail.set_acl("marketing@main.dom", "other", ALICE, "lrs")
        mail.create(ALICE, "Projects")
        mail.ensure_inbox("carol@main.dom")
        mail.create("carol@main.dom", "Projects")
    finally:
        svc.close()
    server.start()
    try:
        yield World(server)
    finally:
        server.stop()


# -- subscriptions ---------------------------------------------------------------------------


def test_subscriptions_take_foreign_names_that_need_not_exist(world: World) -> None:
    with world.client() as c:
        base = world.session(c)
        page = c.get(base + "Subscriptions.wssp")
        assert page.status_code == 200 and 'action="Subscribe"' in page.text
        for name in ("~marketing/announce", "~john@client.com/INBOX/Projects"):
            done = post(c, base, "Subscriptions.wssp", "Subscribe", Mailbox=name)
            assert done.status_code == 303
            assert done.headers["location"] == "Subscriptions.wssp?Done=subscribed"
        page = c.get(base + "Subscriptions.wssp?Done=subscribed")
        assert ">~marketing/announce</a>" in page.text
        assert ">~john@client.com/INBOX/Projects</a>" in page.text
        assert 'role="status"' in page.text
    imap = world.imap("alice")
    try:
        typ, lines = imap.lsub('""', "*")
        assert typ == "OK"
        listed = b"\n".join(line for line in lines if isinstance(line, bytes))
        assert b"~marketing/announce" in listed and b"~john@client.com/INBOX/Projects" in listed
    finally:
        imap.logout()


def test_a_subscription_is_removed(world: World) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        assert post(c, base, "Subscriptions.wssp", "Subscribe",
                    Mailbox="~marketing/announce").status_code == 303
        gone = post(c, base, "Subscriptions.wssp", "Unsubscribe", Mailbox="~marketing/announce")
        assert gone.status_code == 303
        assert gone.headers["location"] == "Subscriptions.wssp?Done=unsubscribed"
        page = c.get(base + "Subscriptions.wssp")
        assert "~marketing/announce</a>" not in page.text
        again = post(c, base, "Subscriptions.wssp", "Unsubscribe", Mailbox="~marketing/announce")
        assert again.status_code == 400 and 'class="error"' in again.text


@pytest.mark.parametrize("name", ["", "   ", "a*b", "x%", "a//b", "/top", "~", "~bob",
                                  "~bob/", "~/INBOX", "~b*b/INBOX"])
def test_a_name_that_is_no_mailbox_name_is_not_subscribed(world: World, name: str) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        refused = post(c, base, "Subscriptions.wssp", "Subscribe", Mailbox=name)
        assert refused.status_code == 400 and 'class="error"' in refused.text
        assert "<li>" not in refused.text  # carol's list stays empty


def test_subscription_names_are_escaped(world: World) -> None:
    name = f'Evil"{XSS}'
    with world.client() as c:
        base = world.session(c)
        assert post(c, base, "Subscriptions.wssp", "Subscribe", Mailbox=name).status_code == 303
        page = c.get(base + "Subscriptions.wssp")
        assert XSS not in page.text and "<script" not in page.text
        assert "Evil&quot;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
        refused = post(c, base, "Subscriptions.wssp", "Subscribe", Mailbox=f"{XSS}*")
        assert refused.status_code == 400 and "<script" not in refused.text
        # the remove button carries the name back unchanged
        assert post(c, base, "Subscriptions.wssp", "Unsubscribe",
                    Mailbox=name).status_code == 303


# -- Open Mailbox ------------------------------------------------------------------------------


def test_an_administrator_opens_another_users_inbox(world: World) -> None:
    with world.client() as c:
        base = world.session(c, "admin")
        page = c.get(base + "Subscriptions.wssp")
        form = re.search(r'<form method="get" action="Mailbox.wssp"[^>]*>(.*?)</form>',
                         page.text, re.S)
        assert form and 'name="Mailbox"' in form.group(1)
        opened = c.get(base + "Mailbox.wssp", params={"Mailbox": "~bob/INBOX"})
        assert opened.status_code == 200 and "bob inbox secret" in opened.text


@pytest.mark.parametrize("who", ["alice", "oadmin@other.dom"])
def test_anyone_else_is_refused_clearly_and_sees_nothing(world: World, who: str) -> None:
    with world.client() as c:
        base = world.session(c, who)
        refused = c.get(base + "Mailbox.wssp", params={"Mailbox": "~bob@main.dom/INBOX"})
        assert refused.status_code in (403, 404)
        assert "not allowed" in refused.text
        assert "bob inbox secret" not in refused.text and 'class="message' not in refused.text


# -- mailbox aliases ---------------------------------------------------------------------------


def imap_subjects(imap: imaplib.IMAP4, mailbox: str) -> list[str]:
    typ, data = imap.select(mailbox, readonly=True)
    assert typ == "OK", data
    typ, found = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    return [part[1].decode().split(":", 1)[1].strip() for part in found
            if isinstance(part, tuple)]


def test_an_alias_works_over_imap_and_can_be_changed_and_removed(world: World) -> None:
    with world.client() as c:
        base = world.session(c)
        page = c.get(base + "Aliases.wssp")
        assert page.status_code == 200 and 'action="SetAlias"' in page.text
        done = post(c, base, "Aliases.wssp", "SetAlias", Alias="mkt-announce",
                    Target="~marketing/announce")
        assert done.status_code == 303 and done.headers["location"].endswith("Done=aliasSaved")
        page = c.get(base + "Aliases.wssp")
        assert ">mkt-announce</a>" in page.text
        assert 'name="Target" value="~marketing/announce"' in page.text
        imap = world.imap("alice")
        try:
            typ, lines = imap.list('""', "*")
            assert typ == "OK" and any(b'"mkt-announce"' in line or line.endswith(
                b" mkt-announce") for line in lines if isinstance(line, bytes)), lines
            assert imap_subjects(imap, "mkt-announce") == ["Announcement one"]
            imap.close()
            changed = post(c, base, "Aliases.wssp", "SetAlias", Alias="mkt-announce",
                           Target="~marketing/other")
            assert changed.status_code == 303
            assert 'value="~marketing/other"' in c.get(base + "Aliases.wssp").text
            assert imap_subjects(imap, "mkt-announce") == ["Other one", "Other two"]
            imap.close()
            removed = post(c, base, "Aliases.wssp", "RemoveAlias", Alias="mkt-announce")
            assert removed.status_code == 303
            assert removed.headers["location"].endswith("Done=aliasRemoved")
            assert ">mkt-announce</a>" not in c.get(base + "Aliases.wssp").text
            typ, _ = imap.select("mkt-announce")
            assert typ == "NO"
        finally:
            imap.logout()


@pytest.mark.parametrize(("alias", "target", "reason"), [
    ("Projects", "~marketing/announce", "is a mailbox"),
    ("INBOX", "~marketing/announce", "is a mailbox"),
    ("Self", "Self/below", "loop"),
    ("bad*name", "~marketing/announce", "not allowed"),
    ("", "~marketing/announce", "empty"),
    ("Empty", "", "empty"),
])
def test_an_alias_the_service_refuses_shows_its_reason(world: World, alias: str, target: str,
                                                       reason: str) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        refused = post(c, base, "Aliases.wssp", "SetAlias", Alias=alias, Target=target)
        assert refused.status_code == 400, refused.text[:300]
        assert reason in refused.text
        assert "<table class=\"aliases\">" not in refused.text  # nothing was stored


def test_aliases_that_loop_are_refused(world: World) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        assert post(c, base, "Aliases.wssp", "SetAlias", Alias="Ping",
                    Target="Pong").status_code == 303
        refused = post(c, base, "Aliases.wssp", "SetAlias", Alias="Pong", Target="Ping")
        assert refused.status_code == 400 and "loop" in refused.text
        assert post(c, base, "Aliases.wssp", "RemoveAlias", Alias="Ping").status_code == 303


def test_alias_names_and_targets_are_escaped(world: World) -> None:
    alias, target = f'A"{XSS}', f"~marketing/{XSS}"
    with world.client() as c:
        base = world.session(c, "carol")
        assert post(c, base, "Aliases.wssp", "SetAlias", Alias=alias,
                    Target=target).status_code == 303
        page = c.get(base + "Aliases.wssp")
        assert "<script" not in page.text
        assert "A&quot;&lt;script&gt;" in page.text and "~marketing/&lt;script&gt;" in page.text
        refused = post(c, base, "Aliases.wssp", "SetAlias", Alias=f"{XSS}*", Target=XSS)
        assert refused.status_code == 400 and "<script" not in refused.text
        assert post(c, base, "Aliases.wssp", "RemoveAlias", Alias=alias).status_code == 303


# -- preferences and the session's skin ----------------------------------------------------------


def prefs(world: World, account: str) -> dict[str, str]:
    """``waypost account prefs ACCOUNT`` as a dict (value, ``*`` when stored)."""
    out = world.server.cli("account", "prefs", account).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        name, _, rest = line.partition(" ")
        rows[name] = rest.strip()
    return rows


def test_settings_are_saved_and_checked(world: World) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        page = c.get(base + "Settings.wssp")
        assert page.status_code == 200
        for field in ("MailboxList", "ShowSubscribed", "SentBox", "MessagesPerPage", "Skin"):
            assert f'name="{field}"' in page.text
        assert 'id="show-subscribed" name="ShowSubscribed" type="checkbox" value="yes" checked' \
            in page.text
        done = post(c, base, "Settings.wssp", "SaveSettings", MailboxList="subscribed",
                    SentBox="Sent Items", MessagesPerPage="20", Skin="")
        assert done.status_code == 303 and done.headers["location"].endswith("Done=prefsSaved")
        stored = prefs(world, "carol@main.dom")
        assert stored["MailboxList"].split() == ["subscribed", "(stored)"]
        assert stored["ShowSubscribed"].split() == ["no", "(stored)"]  # the box was not ticked
        assert stored["MessagesPerPage"].split() == ["20", "(stored)"]
        assert stored["SentBox"].split() == ["Sent", "Items", "(stored)"]
        page = c.get(base + "Settings.wssp?Done=prefsSaved")
        assert 'value="subscribed" selected' in page.text and 'value="20"' in page.text
        assert 'type="checkbox" value="yes">' in page.text  # now unticked
        for field, value, reason in [("MessagesPerPage", "5", "10 to 500"),
                                     ("MailboxList", "some", "must be one of"),
                                     ("SentBox", "a*b", "not allowed"),
                                     ("Skin", "NoSuchSkin", "no skin")]:
            refused = post(c, base, "Settings.wssp", "SaveSettings",
                           **{"MailboxList": "all", "MessagesPerPage": "30", field: value})
            assert refused.status_code == 400 and reason in refused.text, (field, refused.text)
        assert prefs(world, "carol@main.dom")["MessagesPerPage"].split()[0] == "20"


def test_the_skin_preference_picks_the_skin_of_the_next_session(world: World) -> None:
    world.server.cli("skin", "create", "--domain", "main.dom", "Marked")
    world.server.cli("skin", "put", "--domain", "main.dom", "--skin", "Marked",
                     "Mailboxes.wssp", input="<p>MARKED-SKIN %%HTML:accountName%%</p>\n")
    with world.client() as c:
        base = world.session(c, "skinner")
        assert "MARKED-SKIN" not in c.get(base + "Mailboxes.wssp").text
        page = c.get(base + "Settings.wssp")
        assert '<option value="Marked">Marked</option>' in page.text
        assert post(c, base, "Settings.wssp", "SaveSettings", MailboxList="all",
                    MessagesPerPage="50", SentBox="Sent", Skin="Marked").status_code == 303
        # this session keeps its skin; the preference applies from the next login
        assert "MARKED-SKIN" not in c.get(base + "Mailboxes.wssp").text
    with world.client() as c:
        base = world.session(c, "skinner")
        assert "MARKED-SKIN skinner@main.dom" in c.get(base + "Mailboxes.wssp").text
        assert 'value="Marked" selected' in c.get(base + "Settings.wssp").text
    # a skin that is gone falls back to the unnamed one, never an error
    world.server.cli("skin", "remove", "--domain", "main.dom", "Marked")
    with world.client() as c:
        base = world.session(c, "skinner")
        page = c.get(base + "Mailboxes.wssp")
        assert page.status_code == 200 and "MARKED-SKIN" not in page.text
        assert "<h1>Mailboxes</h1>" in page.text


# -- the password --------------------------------------------------------------------------------


def test_a_changed_password_works_over_imap_and_the_old_one_does_not(world: World) -> None:
    new = "brand-new-pw-99"
    with world.client() as c:
        base = world.session(c, "pwuser")
        page = c.get(base + "Password.wssp")
        assert page.status_code == 200 and 'autocomplete="current-password"' in page.text
        cases = [
            ({"OldPassword": "wrong-one", "NewPassword": new, "NewPassword2": new}, 403,
             "current password is not correct"),
            ({"OldPassword": PASSWORD, "NewPassword": new, "NewPassword2": new + "x"}, 400,
             "not the same"),
            ({"OldPassword": PASSWORD, "NewPassword": "short", "NewPassword2": "short"}, 400,
             "at least 8 characters"),
            ({"OldPassword": PASSWORD, "NewPassword": "", "NewPassword2": ""}, 400, "empty"),
        ]
        for fields, status, reason in cases:
            refused = post(c, base, "Password.wssp", "ChangePassword", **fields)
            assert refused.status_code == status and reason in refused.text, fields
            assert new not in refused.text and PASSWORD not in refused.text
        world.imap("pwuser").logout()  # still the old password
        done = post(c, base, "Password.wssp", "ChangePassword", OldPassword=PASSWORD,
                    NewPassword=new, NewPassword2=new)
        assert done.status_code == 303
        assert done.headers["location"] == "Password.wssp?Done=passwordChanged"
        assert "password was changed" in c.get(base + done.headers["location"]).text
    world.imap("pwuser", new).logout()
    with pytest.raises(imaplib.IMAP4.error):
        world.imap("pwuser", PASSWORD)
    log = world.server.log.read_text()
    assert new not in log


# -- CSRF ------------------------------------------------------------------------------------------

ACTIONS = {
    "Subscribe": {"Mailbox": "~marketing/csrf"},
    "Unsubscribe": {"Mailbox": "~marketing/announce"},
    "SetAlias": {"Alias": "csrf-alias", "Target": "~marketing/announce"},
    "RemoveAlias": {"Alias": "mkt-announce"},
    "SaveSettings": {"MailboxList": "subscribed", "MessagesPerPage": "99"},
    "ChangePassword": {"OldPassword": PASSWORD, "NewPassword": "csrf-pw-123",
                       "NewPassword2": "csrf-pw-123"},
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("token", [None, "wrong", "other-session"])
def test_every_action_refuses_a_missing_or_wrong_token(world: World, action: str,
                                                       token: str | None) -> None:
    with world.client() as c:
        other = csrf(c.get(world.session(c, "carol") + "Settings.wssp"))
    with world.client() as c:
        base = world.session(c, "carol")
        before = {page: c.get(base + page).text.split("</nav>", 1)[1]
                  for page in ("Subscriptions.wssp", "Aliases.wssp", "Settings.wssp")}
        fields = dict(ACTIONS[action])
        if token == "wrong":
            fields["csrfToken"] = "0" * 43
        elif token == "other-session":
            fields["csrfToken"] = other
        refused = c.post(base + action, data=fields)
        assert refused.status_code == 403, refused.text[:300]
        after = {page: c.get(base + page).text.split("</nav>", 1)[1] for page in before}
        assert after == before
    world.imap("carol").logout()  # the password is unchanged


def test_a_wrong_current_password_counts_as_a_failed_login(tmp_path_factory: pytest.TempPathFactory
                                                           ) -> None:
    """[waypost] A stolen session cannot guess the password faster than the
    login guard allows: wrong current passwords lock the account (and the
    address) out like failed logins, for the web and IMAP alike."""
    data = tmp_path_factory.mktemp("guard") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        svc.directory.create_account("guarded", PASSWORD)
        svc.set_setting("LoginFailureLimit", "2")
    finally:
        svc.close()
    server.start()
    try:
        world = World(server)
        with world.client() as c:
            base = world.session(c, "guarded")
            for old in ("guess-one", "guess-two", PASSWORD):  # the last one while locked out
                refused = post(c, base, "Password.wssp", "ChangePassword", OldPassword=old,
                               NewPassword="new-password-1", NewPassword2="new-password-1")
                assert refused.status_code == 403
                assert "current password is not correct" in refused.text
            assert world.login(c, "guarded").status_code == 200  # the login page again
        with pytest.raises(imaplib.IMAP4.error):
            world.imap("guarded")
    finally:
        server.stop()


# -- in a browser, phone-sized ---------------------------------------------------------------------


def fits(page: Page) -> bool:
    return int(page.evaluate("document.documentElement.scrollWidth")) <= 375


def test_the_account_pages_work_by_touch_on_a_phone(world: World, phone: BrowserContext
                                                    ) -> None:
    """Sign in as the administrator, add a long foreign subscription and
    open another user's INBOX with the forms alone, on a 375 px screen."""
    page = phone.new_page()
    page.goto(f"http://main.dom:{world.server.web}/")
    page.get_by_label("Name").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").tap()
    page.wait_for_url(re.compile(r"/Mailboxes\.wssp$"))
    page.get_by_role("link", name="Subscriptions").first.tap()
    page.wait_for_url(re.compile(r"/Subscriptions\.wssp$"))
    long_name = "~marketing/announce/with/a/rather/long/name/for/a/small/screen"
    page.get_by_label("Add a mailbox").fill(long_name)
    page.get_by_role("button", name="Add", exact=True).tap()
    page.wait_for_url(re.compile(r"Done=subscribed$"))
    assert page.get_by_role("status").is_visible()
    assert page.get_by_role("link", name=long_name).is_visible()
    assert fits(page), "the subscription page scrolls sideways on a phone"
    for name in ("Aliases.wssp", "Settings.wssp", "Password.wssp"):
        page.goto(page.url.rsplit("/", 1)[0] + "/" + name)
        assert page.locator("h1").is_visible() and fits(page), name
    page.goto(page.url.rsplit("/", 1)[0] + "/Subscriptions.wssp")
    page.get_by_label("Mailbox name").fill("~bob/INBOX")
    page.get_by_role("button", name="Open").tap()
    page.wait_for_url(re.compile(r"/Mailbox\.wssp\?Mailbox="))
    assert page.get_by_text("bob inbox secret").is_visible()
