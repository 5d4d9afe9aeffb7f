"""The webmail pages end to end (issue 10 point 6): the message list and the
message view of a real ``waypost serve``, over real sockets, with messages
stored through the mail-access service and flags read back over IMAP.

Assertions look at the datasets' traces in the stock skin (rows, links,
escaped text), not at its wording.
"""

from __future__ import annotations

import imaplib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess
from waypost.web.sanitize import BLOCKED_IMAGE

ALICE = "alice@main.dom"
PASSWORD = "web-pw-1"
BULK = 120
XSS_BOX = 'Box<img src=x onerror="alert(1)">'
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00"
       b"\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05"
       b"\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")

HOSTILE_HTML = """<html><head><style>body{background:url(https://track.example/s)}</style>
<script>alert('s')</script></head><body>
<p id="greeting">Hello <b>there</b></p>
<img src="https://track.example/pixel.png" onerror="alert('e')">
<img src="cid:logo@example">
<a href="javascript:alert('j')">bad link</a>
<a href="https://example.org/page">good link</a>
<svg onload="alert('v')"><circle r="5"/></svg>
<p style="color: red; background-image: url(https://track.example/bg)">styled</p>
<div onclick="alert('c')">click</div>
<iframe src="https://evil.example/"></iframe>
</body></html>"""


def login(client: httpx.Client, name: str) -> httpx.Response:
    """The login form: its CSRF token, then the POST (as a browser does)."""
    page = client.get("/")
    token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:500]
    return client.post("/login", data={"Username": name, "Password": PASSWORD,
                                       "csrfToken": token.group(1)})


def session_path(response: httpx.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    return str(response.headers["location"])


def plain(subject: str, sender: str = "Bob <bob@remote.example>", body: str = "Hello.",
          date: datetime | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = ALICE
    m["Subject"] = subject
    if date is not None:
        m["Date"] = date.strftime("%a, %d %b %Y %H:%M:%S +0000")
    m.set_content(body)
    return bytes(m)


def html_message() -> bytes:
    m = EmailMessage()
    m["From"] = "News <news@remote.example>"
    m["To"] = ALICE
    m["Subject"] = "Newsletter"
    m.set_content("The plain text version.")
    m.add_alternative(HOSTILE_HTML, subtype="html")
    m.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@example>")
    m.add_attachment(b"col1,col2\r\n1,2\r\n", maintype="text", subtype="csv",
                     filename="report.csv")
    m.add_attachment(b"<script>alert('a')</script>", maintype="text", subtype="html",
                     filename="page.html")
    return bytes(m)


@dataclass
class Mail:
    server: WaypostServer
    uids: dict[str, int]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url(), follow_redirects=False, timeout=30)

    def session(self, c: httpx.Client, name: str = "alice") -> str:
        """The session URL prefix (``/Session/<id>/``)."""
        return session_path(login(c, name)).rsplit("/", 1)[0] + "/"


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mail]:
    data = tmp_path_factory.mktemp("webmail") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    uids: dict[str, int] = {}
    try:
        d = svc.directory
        d.create_account("alice", PASSWORD)
        d.create_account("bob", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        access = MailAccess(svc)
        access.ensure_inbox(ALICE)
        access.ensure_inbox("bob@main.dom")
        access.create(ALICE, "Bulk")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(BULK):
            when = start + timedelta(hours=i)
            body = "x" * (i * 10)
            access.append(ALICE, "Bulk", plain(f"msg {i:03d}", f"Sender {(i * 7) % BULK:03d} "
                                               f"<s{i}@remote.example>", body, when),
                          (), when)
        uids["plain"] = access.append(ALICE, "INBOX", plain("Plain one", body="a < b & c\n"
                                                             "<script>x</script>")).uid
        uids["html"] = access.append(ALICE, "INBOX", html_message()).uid
        uids["markup"] = access.append(ALICE, "INBOX", plain(
            '<script>alert("subj")</script>', '"<b>Evil</b>" <evil@remote.example>')).uid
        access.create(ALICE, "Projects/Sub")
        uids["nested"] = access.append(ALICE, "Projects/Sub", html_message()).uid
        access.create(ALICE, XSS_BOX)
        access.append(ALICE, XSS_BOX, plain("inside the odd box"))
        access.create("bob@main.dom", "Private")
        access.append("bob@main.dom", "Private", plain("bob's secret"))
        access.set_acl("bob@main.dom", "Private", ALICE, "l")  # may see, not read
        access.create("bob@main.dom", "Hidden")
        access.append("bob@main.dom", "Hidden", plain("hidden secret"))
    finally:
        svc.close()
    server.start()
    try:
        yield Mail(server, uids)
    finally:
        server.stop()


def rows(page: str) -> list[str]:
    """The subjects of the message list, in order."""
    return re.findall(r'<td class="subject"><a href="[^"]*">([^<]*)</a>', page)


def test_the_mailboxes_page_links_to_the_message_lists(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailboxes.wssp")
        assert page.status_code == 200
        assert 'href="Mailbox.wssp?Mailbox=Bulk"' in page.text
        assert "<img src=x" not in page.text
        quoted = urllib.parse.quote(XSS_BOX, safe="")
        assert f'href="Mailbox.wssp?Mailbox={quoted}"' in page.text
        box = c.get(base + "Mailbox.wssp", params={"Mailbox": XSS_BOX})
        assert box.status_code == 200
        assert "<img src=x" not in box.text and "inside the odd box" in box.text


def test_list_pages_newest_first(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        first = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk"})
        assert first.status_code == 200
        subjects = rows(first.text)
        assert subjects == [f"msg {i:03d}" for i in range(BULK - 1, BULK - 51, -1)]
        assert 'class="total">120<' in first.text
        nxt = re.search(r'class="next" rel="next" href="([^"]+)"', first.text)
        assert nxt and "prev" not in first.text.split('class="pager"')[1].split("</nav>")[0]
        second = c.get(base + nxt.group(1).replace("&amp;", "&"))
        assert rows(second.text)[0] == f"msg {BULK - 51:03d}"
        last = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk", "Skip": "100"})
        assert rows(last.text) == [f"msg {i:03d}" for i in range(19, -1, -1)]
        assert 'class="next"' not in last.text and 'class="prev"' in last.text
        small = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk", "Limit": "5"})
        assert len(rows(small.text)) == 5


@pytest.mark.parametrize(("sort", "order", "expected"), [
    ("date", "asc", [f"msg {i:03d}" for i in range(5)]),
    ("size", "desc", [f"msg {i:03d}" for i in range(BULK - 1, BULK - 6, -1)]),
    ("subject", "asc", [f"msg {i:03d}" for i in range(5)]),
    ("subject", "desc", [f"msg {i:03d}" for i in range(BULK - 1, BULK - 6, -1)]),
])
def test_list_sorting(mail: Mail, sort: str, order: str, expected: list[str]) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk", "Sort": sort,
                                                   "Order": order, "Limit": "5"})
        assert page.status_code == 200
        assert rows(page.text) == expected


def test_list_sorting_by_sender(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk", "Sort": "from",
                                                   "Order": "asc", "Limit": "3"})
        senders = re.findall(r'<td class="from">Sender (\d+)', page.text)
        assert senders == ["000", "001", "002"]


def test_search(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk", "Search": "msg 01"})
        assert sorted(rows(page.text)) == [f"msg {i:03d}" for i in range(10, 20)]
        by_sender = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk",
                                                        "Search": "Sender 007"})
        assert rows(by_sender.text) == ["msg 001"]
        hostile = c.get(base + "Mailbox.wssp", params={"Mailbox": "Bulk",
                                                      "Search": '"><script>alert(1)</script>'})
        assert hostile.status_code == 200 and "<script>alert(1)" not in hostile.text
        assert rows(hostile.text) == []


@pytest.mark.parametrize("params", [
    {"Mailbox": "Bulk", "Sort": "evil"}, {"Mailbox": "Bulk", "Skip": "-1"},
    {"Mailbox": "Bulk", "Limit": "x"}, {"Mailbox": "Bu\x00lk"},
])
def test_bad_list_parameters_are_400(mail: Mail, params: dict[str, str]) -> None:
    with mail.client() as c:
        base = mail.session(c)
        assert c.get(base + "Mailbox.wssp", params=params).status_code == 400


@pytest.mark.parametrize("name", ["~bob/Private", "~bob/Hidden", "~bob/INBOX", "NoSuchBox",
                                  "../bob/INBOX", "../../etc/passwd", "/etc/passwd",
                                  "~bob/../bob/Private", "..\\..\\x"])
def test_a_mailbox_the_user_may_not_read_is_refused(mail: Mail, name: str) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": name})
        assert page.status_code in (400, 403, 404), page.status_code
        assert "secret" not in page.text and 'class="message' not in page.text
        view = c.get(base + "Message.wssp", params={"Mailbox": name, "UID": "1"})
        assert view.status_code in (400, 403, 404) and "secret" not in view.text
        part = c.get(base + f"Part/{urllib.parse.quote(name, safe='')}/1/1")
        assert part.status_code in (400, 403, 404) and b"secret" not in part.content


def test_refusal_page_is_clear(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Mailbox.wssp", params={"Mailbox": "~bob/Private"})
        assert page.status_code == 403
        assert "right" in page.text.lower()


def test_the_view_of_a_plain_message_escapes_it(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Message.wssp", params={"Mailbox": "INBOX",
                                                   "UID": str(mail.uids["plain"])})
        assert page.status_code == 200
        assert "a &lt; b &amp; c" in page.text
        assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text
        assert "Plain one" in page.text and "bob@remote.example" in page.text


def test_markup_in_headers_is_text(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        uid = str(mail.uids["markup"])
        listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
        view = c.get(base + "Message.wssp", params={"Mailbox": "INBOX", "UID": uid})
        for page in (listing, view):
            assert "<script>alert" not in page.text and "<b>Evil" not in page.text
            assert "&lt;script&gt;alert(&quot;subj&quot;)" in page.text


def test_the_html_view_is_sanitised_and_blocks_remote_images(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        params = {"Mailbox": "INBOX", "UID": str(mail.uids["html"])}
        page = c.get(base + "Message.wssp", params=params)
        assert page.status_code == 200
        body = page.text.split('class="body html-body">')[1].split("</div>\n")[0]
        assert '<p id="greeting">' not in body and "Hello <b>there</b>" in body
        for bad in ("<script", "onerror", "onclick", "onload", "javascript:", "<svg",
                    "<iframe", "<style", "url(", "track.example", "evil.example"):
            assert bad not in body.lower(), bad
        assert "alert(" not in body
        assert ('href="https://example.org/page" target="_blank" rel="noopener noreferrer"'
                in body)
        assert f'src="{BLOCKED_IMAGE}"' in body
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "https:" not in page.headers["content-security-policy"].split("img-src")[1] \
            .split(";")[0]
        assert 'style="color: red"' in body
        # the inline image comes from the message, through the session
        cid = re.search(r'<img src="(Part/INBOX/\d+/[\d.]+\?Inline=1)"', body)
        assert cid, body
        image = c.get(base + cid.group(1).replace("&amp;", "&"))
        assert image.status_code == 200 and image.content == PNG
        assert image.headers["content-type"] == "image/png"
        # the reader asks for images
        shown = c.get(base + "Message.wssp", params={**params, "ShowImages": "1"})
        assert 'src="https://track.example/pixel.png"' in shown.text
        # (the page's Move/Copy list shows the XSS_BOX name escaped: look at the body)
        shown_body = shown.text.split('class="body html-body">')[1].split("</div>\n")[0]
        assert "onerror" not in shown_body and "<script>alert" not in shown.text
        assert 'onerror="' not in shown.text and "<img src=x" not in shown.text
        assert "https:" in shown.headers["content-security-policy"]
        # and the plain-text view
        text = c.get(base + "Message.wssp", params={**params, "Plain": "1"})
        assert "The plain text version." in text.text and "Hello <b>" not in text.text


def test_attachments_download_with_the_right_headers(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Message.wssp", params={"Mailbox": "INBOX",
                                                   "UID": str(mail.uids["html"])})
        links = dict((name, url) for url, name in re.findall(
            r'<li><a href="(Part/[^"]+)" download>([^<]+)</a>', page.text))
        assert set(links) == {"report.csv", "page.html"}, page.text
        csv = c.get(base + links["report.csv"])
        assert csv.status_code == 200 and csv.content == b"col1,col2\r\n1,2\r\n"
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.headers["content-disposition"].startswith('attachment; filename="report.csv"')
        assert csv.headers["x-content-type-options"] == "nosniff"
        hostile = c.get(base + links["page.html"])
        assert hostile.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in hostile.headers["content-security-policy"]
        # Inline=1 does not make an HTML part render inline
        inline = c.get(base + links["page.html"], params={"Inline": "1"})
        assert inline.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize("path", [
    "Part/INBOX/1/0", "Part/INBOX/x/1", "Part/INBOX/1/1..2", "Part/INBOX/1/../../x",
    "Part/INBOX/99999/1", "Part/INBOX/1/9.9.9", "Part/%2E%2E%2Fbob%2FINBOX/1/1",
    "Part/..%5C..%5Cetc/1/1", "Part/INBOX",
])
def test_part_traversal_and_nonsense_are_refused(mail: Mail, path: str) -> None:
    with mail.client() as c:
        base = mail.session(c)
        response = c.get(base + path)
        assert 400 <= response.status_code < 500, (path, response.status_code)


@pytest.mark.parametrize("uid", ["0", "-1", "abc", "", "99999999999"])
def test_bad_uids_are_refused(mail: Mail, uid: str) -> None:
    with mail.client() as c:
        base = mail.session(c)
        view = c.get(base + "Message.wssp", params={"Mailbox": "INBOX", "UID": uid})
        assert view.status_code == 400


def test_parts_need_the_session(mail: Mail) -> None:
    with mail.client() as c:
        base = mail.session(c)
    with mail.client() as other:  # no session cookie
        response = other.get(base + f"Part/INBOX/{mail.uids['html']}/2")
        assert response.status_code == 403 and b"col1" not in response.content


def test_reading_on_the_web_sets_seen_for_imap(mail: Mail) -> None:
    uid = mail.uids["plain"]
    imap = imaplib.IMAP4("127.0.0.1", mail.server.port("IMAPPort"), timeout=30)
    try:
        imap.login("alice", PASSWORD)
        imap.select("INBOX")

        def flags() -> bytes:
            typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
            assert typ == "OK"
            return b" ".join(d if isinstance(d, bytes) else d[0] for d in data if d)

        imap.uid("STORE", str(uid), "-FLAGS.SILENT", "(\\Seen)")
        assert b"\\Seen" not in flags()
        with mail.client() as c:
            base = mail.session(c)
            listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
            assert re.search(rf'class="message unread" data-uid="{uid}"', listing.text)
            assert c.get(base + "Message.wssp", params={"Mailbox": "INBOX",
                                                        "UID": str(uid)}).status_code == 200
            listing = c.get(base + "Mailbox.wssp", params={"Mailbox": "INBOX"})
            assert re.search(rf'class="message" data-uid="{uid}"', listing.text)
        imap.noop()
        assert b"\\Seen" in flags()
    finally:
        imap.logout()


def test_mail_pages_are_not_compressed(mail: Mail) -> None:
    """They reflect attacker-chosen text beside session secrets (BREACH)."""
    with mail.client() as c:
        base = mail.session(c)
        for page in ("Mailboxes.wssp", "Mailbox.wssp?Mailbox=Bulk"):
            response = c.get(base + page, headers={"Accept-Encoding": "gzip"})
            assert response.status_code == 200
            assert "content-encoding" not in response.headers


def test_parts_of_a_mailbox_below_another(mail: Mail) -> None:
    """A mailbox name with the hierarchy delimiter travels URL-encoded in the
    Part path and still names the right message."""
    with mail.client() as c:
        base = mail.session(c)
        page = c.get(base + "Message.wssp", params={"Mailbox": "Projects/Sub",
                                                   "UID": str(mail.uids["nested"])})
        assert page.status_code == 200
        url = re.search(r'<li><a href="(Part/[^"]+)" download>report.csv<', page.text)
        assert url and url.group(1).startswith("Part/Projects%2FSub/")
        csv = c.get(base + url.group(1))
        assert csv.status_code == 200 and csv.content == b"col1,col2\r\n1,2\r\n"
