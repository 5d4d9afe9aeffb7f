"""The WebUser module end to end (issue 10 points 1, 2, 8; web.md §1-§3):
a real ``waypost serve`` on loopback, spoken to over real sockets with httpx
and http.client.

Assertions depend on the login page only through its dataset (the domain
name, the ``csrfToken`` field, the typed name), not on the stock skin's
wording, so they hold for any stock ``login.wssp``.
"""

from __future__ import annotations

import gzip
import http.client
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.mailaccess.service import MailAccess

SECURITY = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}
PASSWORD = "web-pw-1"
XSS_MAILBOX = "Pro<script>x</script>jects"


@dataclass
class Site:
    server: WaypostServer

    def client(self, *, secure: bool = False, local: str | None = None) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=local, verify=False) if local else None
        return httpx.Client(base_url=self.server.url(secure=secure), verify=False,
                            follow_redirects=False, timeout=30, transport=transport)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("web") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        d.create_account("alice", PASSWORD)
        d.create_account("nomail", PASSWORD, {"AccessModes": "IMAP"})
        d.create_domain("client.com")
        d.add_domain_alias("client.com", "mail.client.com")
        d.create_account("carol@client.com", PASSWORD)
        d.add_alias("caro@client.com", "carol@client.com")
        d.create_domain("assigned.dom", {"AssignedIPAddresses": "192.0.2.7"})
        svc.router.set_table("www.client.com = client.com\n"
                             "<LoginPage@alice.main.dom> = alice@main.dom\n")
        svc.set_setting("LoginFailureLimit", "0")  # the guard's lock-out has its own test
        mail = MailAccess(svc)
        mail.ensure_inbox("alice@main.dom")
        message = b"From: bob@remote.example\r\nSubject: hi\r\n\r\nHello.\r\n"
        for flags in ((), (), ("\\Seen",)):
            mail.append("alice@main.dom", "INBOX", message, flags)
        mail.create("alice@main.dom", XSS_MAILBOX)
    finally:
        svc.close()
    server.start()
    try:
        yield Site(server)
    finally:
        server.stop()


class Inputs(HTMLParser):
    """The ``<input>`` fields of a page: name -> value."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            a = dict(attrs)
            if a.get("name"):
                self.fields[a["name"] or ""] = a.get("value") or ""


def token_of(page: str) -> str:
    token = Inputs(page).fields.get("csrfToken", "")
    assert token, f"no csrfToken field in the login page:\n{page[:2000]}"
    return token


def login(client: httpx.Client, name: str, password: str = PASSWORD,
          host: str | None = None) -> httpx.Response:
    headers = {"Host": host} if host else {}
    page = client.get("/", headers=headers)
    assert page.status_code == 200
    return client.post("/login", headers=headers, data={
        "Username": name, "Password": password, "csrfToken": token_of(page.text)})


def session_path(response: httpx.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    location = response.headers["location"]
    assert re.fullmatch(r"/Session/[A-Za-z0-9_-]{20,}/Mailboxes\.wssp", location), location
    return location


# -- the engine ---------------------------------------------------------------------------


def test_listeners_run_and_are_printed(site: Site) -> None:
    assert re.search(rf"WebUser +127\.0\.0\.1:{site.server.web}\n", site.server.banner)
    assert re.search(rf"WebUserS +127\.0\.0\.1:{site.server.webs}\n", site.server.banner)
    logs = site.server.logs()
    assert f"WebUser listening on 127.0.0.1:{site.server.web}" in logs
    assert f"WebUserS listening on 127.0.0.1:{site.server.webs}" in logs


def test_keep_alive(site: Site) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", site.server.web, timeout=30)
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        assert first.version == 11 and not first.will_close and sock is not None
        conn.request("GET", "/skins/style.css")
        second = conn.getresponse()
        second.read()
        assert second.status == 200 and conn.sock is sock  # the same connection
    finally:
        conn.close()


def test_gzip(site: Site) -> None:
    with site.client() as c:
        raw = c.get("/", headers={"Accept-Encoding": "gzip"})
        assert raw.headers.get("content-encoding") == "gzip"
        assert "csrfToken" in raw.text  # httpx decoded it
        assert raw.headers["vary"] == "Accept-Encoding"
        plain = c.get("/", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        refused = c.get("/", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
    # and the bytes on the wire really are gzip
    conn = http.client.HTTPConnection("127.0.0.1", site.server.web, timeout=30)
    conn.request("GET", "/", headers={"Accept-Encoding": "gzip"})
    body = conn.getresponse().read()
    conn.close()
    assert b"csrfToken" in gzip.decompress(body)


def test_security_headers_on_every_response(site: Site) -> None:
    with site.client() as c:
        responses = [
            c.get("/"),
            c.get("/skins/style.css"),
            c.get("/skins/nothing-here.png"),
            c.get("/", headers={"Host": "unknown.example"}),
            c.post("/login", data={"Username": "alice", "Password": "x"}),
            c.get("/Session/nope/Mailboxes.wssp"),
        ]
        etag = responses[1].headers["etag"]
        responses.append(c.get("/skins/style.css", headers={"If-None-Match": etag}))
    for r in responses:
        for name, value in SECURITY.items():
            assert r.headers.get(name) == value, (r.request.url, name, r.headers)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in csp


def test_skin_files_revalidate_with_etag_and_last_modified(site: Site) -> None:
    with site.client() as c:
        first = c.get("/skins/style.css")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/css")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        assert c.get("/skins/style.css", headers={"If-None-Match": etag}).status_code == 304
        assert c.get("/skins/style.css", headers={"If-Modified-Since": modified}).status_code == 304
        assert c.get("/skins/style.css", headers={"If-None-Match": '"other"'}).status_code == 200
        assert c.get("/skins/style.css",
                     headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
        # the same file by its other URLs: relative to the login page, and by skin name
        assert c.get("/style.css").content == first.content
        assert c.get("/style.css", headers={"If-None-Match": etag}).status_code == 304
        head = c.head("/skins/style.css")
        assert head.status_code == 200 and head.headers["etag"] == etag


@pytest.mark.parametrize("path", [
    "/skins/login.wssp", "/skins/login.wssi", "/login.wssp", "/error.wssp",
    "/skins/..%2F..%2Fwaypost.db", "/skins/%2e%2e%2fwaypost.db", "/skins/..%5Cwaypost.db",
    "/skins/.hidden", "/skins/a%00b.css", "/skins/%2Fetc%2Fpasswd", "/skins/..%2F/style.css",
    "/skins/../../waypost.db", "/skins/x/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/waypost.db", "/skins/..", "/skins/.",
])
def test_skin_file_traversal_is_refused(site: Site, path: str) -> None:
    """Sent byte for byte (no client-side normalisation of ``..``)."""
    with socket.create_connection(("127.0.0.1", site.server.web), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404), (path, reply[:300])
    assert b"SQLite format" not in reply and b"root:" not in reply and b"%%" not in reply


def test_http_1_0_without_host_is_placed_by_the_server_address(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.server.web), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]
    assert b"main.dom" in reply and b"csrfToken" in reply


# -- which domain --------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "domain"), [
    ("main.dom", "main.dom"),
    ("client.com:8100", "client.com"),
    ("mail.client.com", "client.com"),  # a domain alias
    ("www.client.com", "client.com"),  # a Router domain record
    ("192.0.2.7", "assigned.dom"),  # an IP host assigned to a domain
    ("127.0.0.1", "main.dom"),  # any other IP: the Main Domain
])
def test_the_domain_comes_from_the_host(site: Site, host: str, domain: str) -> None:
    with site.client() as c:
        page = c.get("/", headers={"Host": host})
    assert page.status_code == 200
    assert domain in page.text
    for other in {"main.dom", "client.com", "assigned.dom"} - {domain}:
        assert other not in page.text


@pytest.mark.parametrize("host", ["unknown.example", "localhost", "client.co", "a@main.dom",
                                  "evil<script>.com", "LoginPage%main.dom"])
def test_an_unknown_host_never_shows_another_domain(site: Site, host: str) -> None:
    with site.client() as c:
        for page in (c.get("/", headers={"Host": host}),
                     c.get("/skins/style.css", headers={"Host": host}),
                     c.post("/login", headers={"Host": host},
                            data={"Username": "alice", "Password": PASSWORD})):
            assert page.status_code == 404
            assert "csrfToken" not in page.text and "<script>" not in page.text
            for domain in ("main.dom", "client.com", "assigned.dom"):
                assert domain not in page.text
            assert "set-cookie" not in page.headers


def test_a_personal_site_host_is_never_a_login_page(site: Site) -> None:
    """``alice.main.dom`` is routed to alice: her (empty) site, not a login page."""
    with site.client() as c:
        page = c.get("/", headers={"Host": "alice.main.dom"})
        assert page.status_code == 404 and "csrfToken" not in page.text
        assert "sandbox" in page.headers["content-security-policy"]
        login = c.post("/login", headers={"Host": "alice.main.dom"}, data={"Username": "x"})
        assert login.status_code == 404 and "alice.main.dom" in login.text


def test_request_bodies_are_bounded(site: Site) -> None:
    with site.client() as c:
        token = token_of(c.get("/").text)
        big = c.post("/login", data={"Username": "alice", "Password": "x" * (2 << 20),
                                     "csrfToken": token})
        assert big.status_code == 413
        long_name = c.post("/login", data={"Username": "a" * 5000, "Password": "x",
                                           "csrfToken": token})
        assert long_name.status_code == 200 and "a" * 5000 not in long_name.text


# -- login and sessions -------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "name"), [
    ("main.dom", "alice"),
    ("127.0.0.1", "alice@main.dom"),
    ("client.com", "carol"),  # a bare name: the request's domain
    ("mail.client.com", "caro"),  # an account alias in a domain alias
    ("main.dom", "carol@client.com"),
    ("main.dom", "carol%client.com"),
    ("main.dom", "caro%client.com"),
])
def test_login_with_every_name_form(site: Site, host: str, name: str) -> None:
    with site.client() as c:
        path = session_path(login(c, name, host=host))
        cookie = next(h for h in c.cookies.jar if h.name == "WaypostSession")
        assert cookie.path == path.rsplit("/", 1)[0] + "/"
        assert cookie.has_nonstandard_attr("HttpOnly")
        page = c.get(path)
        assert page.status_code == 200 and "INBOX" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert c.get(path.replace("Mailboxes.wssp", "style.css")).status_code == 200


def test_the_mailbox_list_with_unread_counts(site: Site) -> None:
    with site.client() as c:
        page = c.get(session_path(login(c, "alice")))
    assert page.status_code == 200
    text = re.sub(r"<[^>]*>", " ", page.text)
    assert re.search(r"INBOX\s+2\s+unread of\s+3", text), text  # the built-in page
    assert "<script>x" not in page.text  # a mailbox name is text, never markup
    assert "Pro&lt;script&gt;x&lt;/script&gt;jects" in page.text


def test_bad_password_and_disabled_service(site: Site) -> None:
    with site.client() as c:
        bad = login(c, "carol@client.com", "wrong", host="client.com")
        assert bad.status_code == 200 and "location" not in bad.headers
        assert not any(h.name == "WaypostSession" for h in c.cookies.jar)
        assert token_of(bad.text)  # the login page again, with a fresh form
        assert "carol@client.com" in bad.text  # loginName: the name typed
        xss = login(c, "<script>alert(1)</script>", "wrong")
        assert xss.status_code == 200 and "<script>alert" not in xss.text
        no_web = login(c, "nomail", PASSWORD)
        assert no_web.status_code == 200 and "location" not in no_web.headers


def test_csrf_token_is_required(site: Site) -> None:
    form = {"Username": "alice", "Password": PASSWORD}
    with site.client() as c:
        assert c.post("/login", data=form).status_code == 403  # no cookie, no token
        token = token_of(c.get("/").text)  # now the pre-login cookie is set
        assert c.post("/login", data=form).status_code == 403  # no token
        assert c.post("/login", data={**form, "csrfToken": "0" * 64}).status_code == 403
        assert c.post("/login", data={**form, "csrfToken": token + "0"}).status_code == 403
    with site.client() as other:  # a token from another browser's cookie
        other.get("/")
        assert other.post("/login", data={**form, "csrfToken": token}).status_code == 403
    with site.client() as c:
        token = token_of(c.get("/").text)
        assert c.post("/login", json={**form, "csrfToken": token}).status_code == 400
        assert c.post("/login", data={**form, "csrfToken": token}).status_code == 303


def test_session_fixation_a_new_id_at_every_login(site: Site) -> None:
    with site.client() as c:
        planted = c.get("/Session/attacker-chosen-id-0123456789/Mailboxes.wssp")
        assert planted.status_code == 403 and token_of(planted.text)
        first = session_path(login(c, "alice"))
        second = session_path(login(c, "alice"))
        assert "attacker-chosen" not in first and first != second
        assert c.get(first).status_code == 200 and c.get(second).status_code == 200


def test_the_cookie_and_the_address_bind_the_session(site: Site) -> None:
    with site.client() as owner:
        first = login(owner, "alice")
        path, cookie = session_path(first), first.cookies["WaypostSession"]
        second = login(owner, "alice")
        other_path, other_cookie = session_path(second), second.cookies["WaypostSession"]
    with site.client() as thief:  # the URL alone
        page = thief.get(path)
        assert page.status_code == 403 and "INBOX" not in page.text and token_of(page.text)
        wrong = thief.get(path, headers={"Cookie": "WaypostSession=" + "x" * 43})
        assert wrong.status_code == 403 and "INBOX" not in wrong.text
        # another session's cookie does not open this one
        swapped = thief.get(path, headers={"Cookie": "WaypostSession=" + other_cookie})
        assert swapped.status_code == 403 and "INBOX" not in swapped.text
        own = thief.get(other_path, headers={"Cookie": "WaypostSession=" + other_cookie})
        assert own.status_code == 200 and "INBOX" in own.text  # the control case
    with site.client(local="127.0.0.2") as moved:  # URL and cookie, another address
        page = moved.get(path, headers={"Cookie": "WaypostSession=" + cookie})
        assert page.status_code == 403 and "INBOX" not in page.text


def test_logout_ends_the_session(site: Site) -> None:
    with site.client() as c:
        path = session_path(login(c, "alice"))
        assert c.get(path).status_code == 200
        out = c.get(path.replace("Mailboxes.wssp", "Logout"))
        assert out.status_code == 200
        again = c.get(path, headers={"Cookie": "WaypostSession=anything"})
        assert again.status_code == 403 and "INBOX" not in again.text


def test_https_on_the_secure_port(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.server.webs), timeout=30) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with site.client(secure=True) as s, site.client() as c:
        secure_page, clear_page = s.get("/"), c.get("/")
        assert secure_page.status_code == 200
        # secureChannel differs, so the pages differ beyond their tokens
        assert (secure_page.text.replace(token_of(secure_page.text), "")
                != clear_page.text.replace(token_of(clear_page.text), ""))
        response = login(s, "alice")
        path = session_path(response)
        assert "secure" in response.headers["set-cookie"].lower()
        assert s.get(path).status_code == 200


def test_web_failures_are_slowed_by_the_shared_guard(site: Site) -> None:
    """Each failure is delayed (the guard's doubling delay); a right password is not."""
    with site.client(local="127.0.0.3") as c:
        started = time.monotonic()
        login(c, "alice", "wrong")
        assert time.monotonic() - started >= 0.4
        started = time.monotonic()
        session_path(login(c, "alice"))
        assert time.monotonic() - started < 5


def test_lock_out_and_idle_timeout_follow_the_settings(tmp_path: Path) -> None:
    """Failed web logins lock the name out for IMAP too (one guard); an idle
    session ends after ``WebUserIdleTimeout``."""
    data = tmp_path / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        svc.directory.create_account("bob", PASSWORD)
        svc.set_setting("LoginFailureLimit", "2")
        svc.set_setting("WebUserIdleTimeout", "2")
    finally:
        svc.close()
    server.start()
    try:
        site = Site(server)
        with site.client() as c:
            path = session_path(login(c, "bob"))
            assert c.get(path).status_code == 200
            time.sleep(1.0)
            assert c.get(path).status_code == 200  # use keeps it alive
            time.sleep(2.5)
            assert c.get(path).status_code == 403  # idle too long
            for _ in range(2):
                assert login(c, "bob", "wrong").status_code == 200
            locked = login(c, "bob", PASSWORD)  # the right password, refused
            assert locked.status_code == 200 and "location" not in locked.headers
        imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=30)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("bob", PASSWORD)
        imap.logout()
    finally:
        server.stop()
