"""Actions on messages from the message list and the message view (issue 10
point 6), the body search and the page size preference, against a real
``waypost serve``: every change is checked over a real IMAP session, most of
them by a session that has the mailbox SELECTed and must learn it from the
untagged FETCH/EXPUNGE/EXISTS answers to a NOOP.

Each test works in its own mailboxes (created by the module's fixture), so
the tests do not depend on each other's order. Assertions look at the
stock skin's form field names, the ``data-uid`` of list rows and the 303
locations, not at its wording.
"""

from __future__ import annotations

import imaplib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess
from waypost.services.preferences import set_prefs

ALICE = "alice@main.dom"
BOB = "bob@main.dom"
PASSWORD = "act-pw-1"
XSS_BOX = 'X"><img src=x onerror=alert(1)>'
XSS_SUBJECT = '"><script>alert("s")</script>'
ACTIONS = ("move", "copy", "delete", "flag", "unflag", "read", "unread")


def message(subject: str, body: str = "Hello.", sender: str = "Bob <bob@remote.example>"
            ) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = ALICE
    m["Subject"] = subject
    m.set_content(body)
    return bytes(m)


@dataclass
class World:
    server: WaypostServer
    uids: dict[str, list[int]]
    """UIDs appended by the fixture, per ``owner:mailbox``."""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, c: httpx.Client, name: str = "alice") -> str:
        """Log in; the session URL prefix (``/Session/<id>/``)."""
        page = c.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        done = c.post("/login", data={"Username": name, "Password": PASSWORD,
                                      "csrfToken": token.group(1)})
        assert done.status_code == 303, done.text[:300]
        return str(done.headers["location"]).rsplit("/", 1)[0] + "/"

    def imap(self, name: str = "alice") -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.server.port("IMAPPort"), timeout=30)
        imap.login(name, PASSWORD)
        return imap


BOXES = {
    "alice:Flags": 3, "alice:Moves": 3, "alice:MoveTo": 0, "alice:Deletes": 3,
    "alice:Views": 4, "alice:Search": 0, "alice:Refusals": 2, "alice:Gone": 1,
    "alice:Order": 0, f"alice:{XSS_BOX}": 1,
    "bob:ReadOnly": 2, "bob:CanFlag": 2,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("mailactions") / "var"
    server = WaypostServer(data, log_level="INFO").init()
    svc = open_services(data)
    uids: dict[str, list[int]] = {}
    try:
        d = svc.directory
        for name in ("alice", "bob", "carol"):
            d.create_account(name, PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        set_prefs(svc, "carol@main.dom", {"MessagesPerPage": "10"})
        access = MailAccess(svc)
        for account in (ALICE, BOB, "carol@main.dom"):
            access.ensure_inbox(account)
        for key, count in BOXES.items():
            owner, box = key.split(":", 1)
            account = f"{owner}@main.dom"
            access.create(account, box)
            uids[key] = [access.append(account, box, message(f"{box} {i}", f"body {i}")).uid
                         for i in range(count)]
        uids["alice:INBOX"] = [access.append(ALICE, "INBOX", message(XSS_SUBJECT)).uid]
        access.append(ALICE, "Search", message("Quarterly report", "the secret word is "
                                               "pelican\n"))
        access.append(ALICE, "Search", message("Lunch", "nothing here\n"))
        for i in range(25):
            access.append("carol@main.dom", "INBOX", message(f"carol {i:02d}"))
        access.set_acl(BOB, "ReadOnly", ALICE, "lr")
        access.set_acl(BOB, "CanFlag", ALICE, "lrsw")
    finally:
        svc.close()
    server.start()
    try:
        yield World(server, uids)
    finally:
        server.stop()


def csrf(c: httpx.Client, base: str) -> str:
    page = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
    token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    return token.group(1)


def act(c: httpx.Client, base: str, mailbox: str, uids: list[int] | list[str], action: str,
        *, token: str | None = None, **fields: str) -> httpx.Response:
    """POST the list's (or with ``Return="view"`` the view's) action form."""
    data: dict[str, str | list[str]] = {
        "csrfToken": token if token is not None else csrf(c, base), "Mailbox": mailbox,
        "UID": [str(u) for u in uids], "Action": action, **fields}
    return c.post(base + "Messages", data=data)


def location(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The page and query of a 303 (which must stay in the session)."""
    assert response.status_code == 303, (response.status_code, response.text[:400])
    url = urllib.parse.urlsplit(response.headers["location"])
    assert url.path.startswith("/Session/") and not url.netloc
    return url.path.rsplit("/", 1)[1], dict(urllib.parse.parse_qsl(url.query))


def flags(imap: imaplib.IMAP4, uid: int) -> str:
    """The message's stored flags (\\Recent left out: it is the session's)."""
    typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
    assert typ == "OK"
    text = " ".join(d.decode() for d in data if isinstance(d, bytes))
    found = re.search(r"FLAGS \(([^)]*)\)", text)
    assert found, text
    return " ".join(f for f in found.group(1).split() if f != "\\Recent")


def uids_in(imap: imaplib.IMAP4, mailbox: str) -> list[int]:
    typ, _ = imap.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", mailbox
    typ, data = imap.uid("SEARCH", "ALL")
    assert typ == "OK"
    return [int(u) for u in (data[0] or b"").split()]


def untagged(imap: imaplib.IMAP4, kind: str) -> list[bytes]:
    """The untagged ``kind`` answers imaplib collected (and forgets them)."""
    return [d for d in imap.untagged_responses.pop(kind, []) if isinstance(d, bytes)]


# -- flags ---------------------------------------------------------------------------------


def test_flags_from_the_list_reach_a_selected_imap_session(world: World) -> None:
    one, two, three = world.uids["alice:Flags"]
    watcher = world.imap()
    try:
        watcher.select("Flags")
        untagged(watcher, "FETCH")
        with world.client() as c:
            base = world.session(c)
            r = act(c, base, "Flags", [one, two], "flag", Sort="date", Order="asc",
                    Skip="0", Search="Flags", Scope="headers")
            page, query = location(r)
            assert page == "Mailbox.wssp" and query["Done"] == "flagged"
            assert (query["Mailbox"], query["Sort"], query["Order"], query["Search"],
                    query["Scope"]) == ("Flags", "date", "asc", "Flags", "headers")
            shown = c.get(base + r.headers["location"].rsplit("/", 1)[1])
            assert 'class="notice result"' in shown.text
            watcher.noop()
            fetches = b" ".join(untagged(watcher, "FETCH"))
            assert fetches.count(b"\\Flagged") == 2, fetches
            assert "\\Flagged" in flags(watcher, one) and "\\Flagged" not in flags(watcher, three)

            location(act(c, base, "Flags", [one], "unflag"))
            location(act(c, base, "Flags", [one, three], "read"))
            watcher.noop()
            assert "\\Flagged" not in flags(watcher, one) and "\\Flagged" in flags(watcher, two)
            assert "\\Seen" in flags(watcher, one) and "\\Seen" in flags(watcher, three)
            listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "Flags"}).text
            assert re.search(rf'class="message" data-uid="{one}"', listing)
            assert re.search(rf'class="message unread" data-uid="{two}"', listing)

            location(act(c, base, "Flags", [three], "unread"))
            watcher.noop()
            assert "\\Seen" not in flags(watcher, three)
    finally:
        watcher.logout()


def test_no_message_selected_changes_nothing(world: World) -> None:
    with world.client() as c:
        base = world.session(c)
        page, query = location(act(c, base, "Flags", [], "delete"))
        assert page == "Mailbox.wssp" and query["Error"] == "noneSelected"
        shown = c.get(base + "Mailbox.wssp", params=query)
        assert 'role="alert"' in shown.text
        page, query = location(act(c, base, "Flags", world.uids["alice:Flags"][:1], "move",
                                   Target=""))
        assert query["Error"] == "noTarget"
    imap = world.imap()
    try:
        assert uids_in(imap, "Flags") == world.uids["alice:Flags"]
    finally:
        imap.logout()


def test_result_codes_are_never_free_text(world: World) -> None:
    with world.client() as c:
        base = world.session(c)
        page = c.get(base + "Mailbox.wssp", params={
            "Mailbox": "Flags", "Done": "<b>pwned</b>", "Error": "<script>x</script>"})
        assert page.status_code == 200
        assert "pwned" not in page.text and "<script>x" not in page.text
        assert 'class="notice result"' not in page.text


# -- move, copy, delete --------------------------------------------------------------------


def test_move_and_copy_reach_selected_imap_sessions(world: World) -> None:
    a, b, c_uid = world.uids["alice:Moves"]
    source, target = world.imap(), world.imap()
    try:
        source.select("Moves")
        target.select("MoveTo")
        with world.client() as c:
            base = world.session(c)
            listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "Moves"}).text
            assert '<option value="MoveTo">MoveTo</option>' in listing
            assert '<option value="Moves">' not in listing  # not into itself
            page, query = location(act(c, base, "Moves", [a], "move", Target="MoveTo"))
            assert page == "Mailbox.wssp" and query["Done"] == "moved"
            page, query = location(act(c, base, "Moves", [b], "copy", Target="MoveTo"))
            assert query["Done"] == "copied"
        source.noop()
        assert untagged(source, "EXPUNGE"), "the selected source saw no EXPUNGE"
        target.noop()
        assert untagged(target, "EXISTS")
        _, data = target.uid("SEARCH", "ALL")
        assert len((data[0] or b"").split()) == 2
        _, data = target.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = b" ".join(d[1] for d in data if isinstance(d, tuple))
        assert b"Moves 0" in subjects and b"Moves 1" in subjects
        assert uids_in(source, "Moves") == [b, c_uid]
    finally:
        source.logout()
        target.logout()


def test_move_to_nowhere_or_into_itself(world: World) -> None:
    uid = world.uids["alice:Moves"][2]
    with world.client() as c:
        base = world.session(c)
        missing = act(c, base, "Moves", [uid], "move", Target="NoSuchBox")
        assert missing.status_code == 404 and "Moves 2" not in missing.text
        same = act(c, base, "Moves", [uid], "move", Target="Moves")
        assert same.status_code == 400
        foreign = act(c, base, "Moves", [uid], "copy", Target="~bob/ReadOnly")
        assert foreign.status_code == 403
    imap = world.imap()
    try:
        assert uid in uids_in(imap, "Moves")
    finally:
        imap.logout()


def test_delete_moves_to_a_new_trash_and_deleting_there_expunges(world: World) -> None:
    first, second, third = world.uids["alice:Deletes"]
    imap = world.imap()
    try:
        typ, data = imap.list('""', "Trash")
        assert data == [None], "Trash exists before the first delete"
        imap.select("Deletes")
        with world.client() as c:
            base = world.session(c)
            _, query = location(act(c, base, "Deletes", [first, second], "delete"))
            assert query["Done"] == "deleted"
            imap.noop()
            assert len(untagged(imap, "EXPUNGE")) == 2
            typ, data = imap.list('""', "Trash")
            assert typ == "OK" and data[0] is not None and b"\\Trash" in data[0], data
            trash = uids_in(imap, "Trash")
            assert len(trash) == 2
            # deleting inside Trash removes for good, only what was asked
            _, query = location(act(c, base, "Trash", trash[:1], "delete"))
            assert query["Done"] == "expunged"
            assert uids_in(imap, "Trash") == trash[1:]
            assert "\\Deleted" not in flags(imap, trash[1])
            assert uids_in(imap, "Deletes") == [third]
    finally:
        imap.logout()


# -- the message view --------------------------------------------------------------------


def test_the_view_links_and_acts_on_its_message(world: World) -> None:
    v = world.uids["alice:Views"]  # oldest first; the list shows newest first
    with world.client() as c:
        base = world.session(c)
        context = {"Mailbox": "Views", "Sort": "date", "Order": "desc", "Skip": "0"}
        page = c.get(base + "Message.wssp", params={**context, "UID": str(v[2])})
        assert page.status_code == 200
        for mode in ("reply", "replyall", "forward"):
            assert (f'href="Compose.wssp?Mailbox=Views&amp;UID={v[2]}&amp;Mode={mode}"'
                    in page.text)
        nxt = re.search(r'class="next-message" rel="next" href="([^"]+)"', page.text)
        prev = re.search(r'class="prev-message" rel="prev" href="([^"]+)"', page.text)
        assert nxt and f"UID={v[1]}&" in nxt.group(1), page.text
        assert prev and f"UID={v[3]}&" in prev.group(1)
        assert 'name="Return" value="view"' in page.text
        # flag: back to the same message
        r = act(c, base, "Views", [v[2]], "flag", Return="view", **context)
        where, query = location(r)
        assert (where, query["UID"], query["Done"]) == ("Message.wssp", str(v[2]), "flagged")
        shown = c.get(base + r.headers["location"].rsplit("/", 1)[1])
        assert 'name="Action" value="unflag"' in shown.text
        # delete: on to the next message in the list's order
        where, query = location(act(c, base, "Views", [v[2]], "delete", Return="view",
                                    **context))
        assert (where, query["UID"], query["Done"]) == ("Message.wssp", str(v[1]), "deleted")
        # mark unread: back to the list (viewing would mark it read again)
        where, query = location(act(c, base, "Views", [v[1]], "unread", Return="view",
                                    **context))
        assert where == "Mailbox.wssp" and query["Done"] == "unread"
        # the last message of the list: after a move, the one before it
        where, query = location(act(c, base, "Views", [v[0]], "move", Target="MoveTo",
                                    Return="view", **context))
        assert (where, query["UID"]) == ("Message.wssp", str(v[1]))
    imap = world.imap()
    try:
        assert uids_in(imap, "Views") == [v[1], v[3]]
        imap.select("Views", readonly=True)
        assert "\\Seen" not in flags(imap, v[1])
    finally:
        imap.logout()


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_refuses_a_missing_or_wrong_token(world: World, action: str) -> None:
    uid = world.uids["alice:Refusals"][0]
    with world.client() as c, world.client() as other:
        base = world.session(c)
        foreign_token = csrf(other, world.session(other, "bob"))
        for token in ("", "0" * 43, foreign_token):
            r = act(c, base, "Refusals", [uid], action, token=token, Target="MoveTo")
            assert r.status_code == 403, (action, token, r.status_code)
        no_field = c.post(base + "Messages", data={"Mailbox": "Refusals", "UID": str(uid),
                                                   "Action": action, "Target": "MoveTo"})
        assert no_field.status_code == 403
    imap = world.imap()
    try:
        assert uids_in(imap, "Refusals") == world.uids["alice:Refusals"]
        assert flags(imap, uid) == ""
        uids_in(imap, "MoveTo")
        typ, data = imap.uid("SEARCH", "SUBJECT", "Refusals")
        assert typ == "OK" and not data[0], "a refused copy or move arrived"
    finally:
        imap.logout()


@pytest.mark.parametrize(("mailbox", "action"), [
    ("~bob/ReadOnly", "flag"), ("~bob/ReadOnly", "read"), ("~bob/ReadOnly", "unread"),
    ("~bob/ReadOnly", "delete"), ("~bob/ReadOnly", "move"), ("~bob/CanFlag", "delete"),
    ("~bob/CanFlag", "move"),
])
def test_actions_without_the_right_are_refused(world: World, mailbox: str, action: str
                                               ) -> None:
    box = mailbox.split("/", 1)[1]
    uids = world.uids[f"bob:{box}"]
    with world.client() as c:
        base = world.session(c)
        listing = c.get(base + "Mailbox.wssp", params={"Mailbox": mailbox})
        assert listing.status_code == 200 and f'data-uid="{uids[0]}"' in listing.text
        r = act(c, base, mailbox, uids[:1], action, Target="MoveTo")
        assert r.status_code == 403, (mailbox, action, r.status_code)
        assert "right" in r.text.lower() and f"{box} 0" not in r.text
    imap = world.imap("bob")
    try:
        assert uids_in(imap, box) == uids
        assert flags(imap, uids[0]) == ""
    finally:
        imap.logout()


def test_a_shared_mailbox_with_the_rights_takes_flags(world: World) -> None:
    uid = world.uids["bob:CanFlag"][1]
    with world.client() as c:
        base = world.session(c)
        location(act(c, base, "~bob/CanFlag", [uid], "flag"))
    imap = world.imap("bob")
    try:
        uids_in(imap, "CanFlag")
        assert "\\Flagged" in flags(imap, uid)
    finally:
        imap.logout()


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "", "99999999999", "1e3", " 1"])
def test_bad_uids_are_400(world: World, bad: str) -> None:
    with world.client() as c:
        base = world.session(c)
        r = act(c, base, "Refusals", [bad], "flag")
        assert r.status_code == 400, (bad, r.status_code)


@pytest.mark.parametrize("fields", [
    {"Action": "explode"}, {"Mailbox": ""}, {"Sort": "evil"}, {"Mailbox": "Re\x01fusals"},
])
def test_bad_forms_are_400(world: World, fields: dict[str, str]) -> None:
    uid = world.uids["alice:Refusals"][1]
    with world.client() as c:
        base = world.session(c)
        data = {"csrfToken": csrf(c, base), "Mailbox": "Refusals", "UID": str(uid),
                "Action": "flag", **fields}
        assert c.post(base + "Messages", data=data).status_code == 400


def test_a_uid_that_is_gone_is_a_clear_404(world: World) -> None:
    (uid,) = world.uids["alice:Gone"]
    imap = world.imap()
    try:
        imap.select("Gone")
        imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        imap.expunge()
    finally:
        imap.logout()
    with world.client() as c:
        base = world.session(c)
        for action in ACTIONS:
            r = act(c, base, "Gone", [uid], action, Target="MoveTo")
            assert r.status_code == 404, (action, r.status_code)
            assert "no longer" in r.text
        view = c.get(base + "Message.wssp", params={"Mailbox": "Gone", "UID": str(uid)})
        assert view.status_code == 404


# -- escaping ------------------------------------------------------------------------------


def test_names_and_subjects_in_the_new_controls_are_escaped(world: World) -> None:
    with world.client() as c:
        base = world.session(c)
        for page in (c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"}),
                     c.get(base + "Message.wssp", params={
                         "Mailbox": "INBOX", "UID": str(world.uids["alice:INBOX"][0]),
                         "Search": XSS_SUBJECT}),
                     c.get(base + "Mailbox.wssp", params={"Mailbox": XSS_BOX,
                                                          "Search": XSS_SUBJECT})):
            assert page.status_code == 200
            text = page.text
            assert "<img src=x" not in text and "<script>alert" not in text
            assert 'onerror=alert(1)>"' not in text
            assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the option, as text
        listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"}).text
        assert 'aria-label="Select: &quot;&gt;&lt;script&gt;' in listing
        escaped = 'X&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'
        assert f'<option value="{escaped}">{escaped}</option>' in listing
        # and the form posts the real name back: a copy into that mailbox works
        uid = world.uids["alice:INBOX"][0]
        location(act(c, base, "INBOX", [uid], "copy", Target=XSS_BOX))
        box = c.get(base + "Mailbox.wssp", params={"Mailbox": XSS_BOX}).text
        assert len(re.findall(r'class="message[^"]*" data-uid=', box)) == 2


# -- body search, page size, the order after changes ------------------------------------


def test_body_search_scope(world: World) -> None:
    with world.client() as c:
        base = world.session(c)

        def found(**params: str) -> list[str]:
            page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Search", **params})
            assert page.status_code == 200
            return re.findall(r'<td class="subject"><a href="[^"]*">([^<]*)</a>', page.text)

        assert found(Search="pelican") == []
        assert found(Search="pelican", Scope="text") == ["Quarterly report"]
        assert found(Search="Lunch", Scope="text") == ["Lunch"]
        assert found(Search="Lunch", Scope="headers") == ["Lunch"]
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Search", "Search": "x",
                                                   "Scope": "text"})
        assert '<option value="text" selected>' in page.text
        assert c.get(base + "Mailbox.wssp", params={"Mailbox": "Search",
                                                   "Scope": "evil"}).status_code == 400


def test_page_size_comes_from_the_preference(world: World) -> None:
    with world.client() as c:
        base = world.session(c, "carol")
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
        assert len(re.findall(r'class="message[^"]*" data-uid=', page.text)) == 10
        assert 'class="total">25<' in page.text
        assert "Limit=10" in page.text
        asked = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX", "Limit": "20"})
        assert len(re.findall(r'class="message[^"]*" data-uid=', asked.text)) == 20


def test_the_list_follows_changes_and_claims_no_recent(world: World) -> None:
    """The cached orders follow appends and expunges at once; the web opens
    mailboxes without claiming \\Recent (that is for IMAP SELECT)."""
    imap = world.imap()
    try:
        for subject in ("b middle", "c last", "a first"):
            typ, _ = imap.append("Order", None, None, message(subject))
            assert typ == "OK"
        with world.client() as c:
            base = world.session(c)

            def subjects(**params: str) -> list[str]:
                page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Order", **params})
                return re.findall(r'<td class="subject"><a href="[^"]*">([^<]*)</a>',
                                  page.text)

            assert subjects() == ["a first", "c last", "b middle"]
            assert subjects(Sort="subject", Order="asc") == ["a first", "b middle", "c last"]
            imap.append("Order", None, None, message("0 zero"))
            assert subjects(Sort="subject", Order="asc") == [
                "0 zero", "a first", "b middle", "c last"]
            assert subjects()[0] == "0 zero"
            typ, _ = imap.select("Order")
            assert typ == "OK"
            assert imap.untagged_responses.get("RECENT") == [b"4"]
            imap.store("1", "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()
            assert subjects(Sort="subject", Order="asc") == ["0 zero", "a first", "c last"]
            assert subjects(Sort="size") and len(subjects(Sort="date")) == 3
    finally:
        imap.logout()


def test_a_recreated_mailbox_shows_its_new_messages(world: World) -> None:
    """Row texts are cached per UID of one UIDVALIDITY: a mailbox deleted and
    created again reuses UIDs, and the list must not show the old texts.
    This holds because the store never hands out a UIDVALIDITY twice
    (``uidvalidity_mark``), even for the newest mailbox deleted and
    re-created within one second."""
    imap = world.imap()
    try:
        assert imap.create("Reborn")[0] == "OK"
        imap.append("Reborn", None, None, message("before the rebirth"))
        with world.client() as c:
            base = world.session(c)

            def subjects() -> list[str]:
                page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Reborn"})
                return re.findall(r'<td class="subject"><a href="[^"]*">([^<]*)</a>',
                                  page.text)

            assert subjects() == ["before the rebirth"]
            typ, status = imap.status("Reborn", "(UIDVALIDITY)")
            assert typ == "OK"
            assert imap.delete("Reborn")[0] == "OK"
            assert imap.create("Reborn")[0] == "OK"
            imap.append("Reborn", None, None, message("after the rebirth"))
            assert imap.status("Reborn", "(UIDVALIDITY)")[1] != status
            assert subjects() == ["after the rebirth"]
    finally:
        imap.logout()
