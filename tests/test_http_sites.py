"""Personal web sites over HTTP (issue 11 point 4, web.md §6.2): a real
``waypost serve`` on loopback, files stored through the File Storage
service, requests with httpx and raw sockets."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.files import AccountFiles

PASSWORD = "site-pw-1"
BIG = os.urandom(300_000)


@dataclass
class Sites:
    server: WaypostServer

    def get(self, path: str, host: str = "main.dom", **headers: str) -> httpx.Response:
        with httpx.Client(base_url=self.server.url(), follow_redirects=False,
                          timeout=30) as c:
            return c.get(path, headers={"Host": host, **headers})

    def request(self, method: str, path: str, host: str = "main.dom",
                **kwargs: object) -> httpx.Response:
        with httpx.Client(base_url=self.server.url(), follow_redirects=False,
                          timeout=30) as c:
            return c.request(method, path, headers={"Host": host}, **kwargs)  # type: ignore[arg-type]


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    data = tmp_path_factory.mktemp("sites") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        d = svc.directory
        d.create_account("alice", PASSWORD)
        d.create_account("bob", PASSWORD)
        d.create_account("webadmin", PASSWORD)
        d.set_rights("webadmin@main.dom", ["Domain", "CanAccessWebSites"])
        d.create_account("dark", PASSWORD, {"AccessModes": "Mail,IMAP,WebMail"})
        d.create_domain("client.com")
        d.add_domain_alias("client.com", "mail.client.com")
        d.create_account("carol@client.com", PASSWORD)
        d.add_alias("caro@client.com", "carol@client.com")
        d.create_domain("bare.com", {"WebSitePrefix": ""})
        d.create_account("dave@bare.com", PASSWORD)
        d.create_domain("off.com", {"DomainAccessModes": "Mail,WebMail"})
        d.create_account("eve@off.com", PASSWORD)
        svc.router.set_table("<LoginPage@alice.main.dom> = alice@main.dom\n")
        svc.set_setting("LoginFailureLimit", "0")
        files = AccountFiles(svc)
        a = "alice@main.dom"
        files.write_bytes(a, "default.html", b"<h1>Alice home</h1>")
        files.write_bytes(a, "style.css", b"h1 { color: red }")
        files.write_bytes(a, "docs/default.html", b"<h1>Docs</h1>", parents=True)
        files.mkdir(a, "empty")
        files.write_bytes(a, "private/secret.txt", b"alice secret", parents=True)
        files.write_bytes(a, "big.bin", BIG)
        files.write_bytes("bob@main.dom", "default.html", b"bob home")
        files.write_bytes("dark@main.dom", "default.html", b"dark home")
        files.write_bytes("carol@client.com", "default.html", b"carol home")
        files.write_bytes("dave@bare.com", "default.html", b"dave home")
        files.write_bytes("dave@bare.com", "style.css", b"dave's css")
        files.write_bytes("eve@off.com", "default.html", b"eve home")
    finally:
        svc.close()
    server.start()
    try:
        yield Sites(server)
    finally:
        server.stop()


def test_the_home_page_and_folders(sites: Sites) -> None:
    home = sites.get("/~alice/")
    assert home.status_code == 200 and home.text == "<h1>Alice home</h1>"
    assert home.headers["content-type"].startswith("text/html")
    assert "sandbox" in home.headers["content-security-policy"]
    assert "allow-same-origin" not in home.headers["content-security-policy"]
    for path, target in (("/~alice", "/~alice/"), ("/~alice/docs", "/~alice/docs/"),
                         ("/~alice/docs?x=1", "/~alice/docs/?x=1"),
                         ("/~alice/empty", "/~alice/empty/")):
        moved = sites.get(path)
        assert moved.status_code == 301 and moved.headers["location"] == target, path
    assert sites.get("/~alice/docs/").text == "<h1>Docs</h1>"
    assert sites.get("/~alice/docs/default.html").text == "<h1>Docs</h1>"
    empty = sites.get("/~alice/empty/")
    assert empty.status_code == 404 and "Index of" not in empty.text
    assert sites.get("/~alice/missing.html").status_code == 404
    assert sites.get("/~nobody/").status_code == 404
    assert sites.get("/~alice/style.css").headers["content-type"].startswith("text/css")


def test_aliases_and_host_names(sites: Sites) -> None:
    assert sites.get("/~carol/", host="client.com").text == "carol home"
    assert sites.get("/~caro/", host="client.com").text == "carol home"
    assert sites.get("/~carol/", host="mail.client.com").text == "carol home"
    assert sites.get("/~carol/").status_code == 404  # carol is not in main.dom
    assert sites.get("/", host="alice.main.dom").text == "<h1>Alice home</h1>"
    assert sites.get("/docs/", host="alice.main.dom").text == "<h1>Docs</h1>"
    assert sites.get("/style.css", host="alice.main.dom").text == "h1 { color: red }"


def test_an_empty_prefix_lets_webuser_names_win(sites: Sites) -> None:
    assert sites.get("/dave/", host="bare.com").text == "dave home"
    assert sites.get("/dave", host="bare.com").status_code == 301
    skin_css = sites.get("/style.css", host="bare.com")
    assert skin_css.status_code == 200 and skin_css.text != "dave's css"
    assert "csrfToken" in sites.get("/", host="bare.com").text  # the login page
    assert sites.get("/~dave/", host="bare.com").status_code == 404


def test_the_website_service_switch(sites: Sites) -> None:
    assert sites.get("/~dark/").status_code == 403
    assert sites.get("/~eve/", host="off.com").status_code == 403
    assert sites.get("/~bob/").text == "bob home"


def test_private_needs_the_owner_or_an_administrator(sites: Sites) -> None:
    path = "/~alice/private/secret.txt"
    anonymous = sites.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith('Basic realm="main.dom"')
    assert "secret" not in anonymous.text
    assert sites.get(path, Authorization=basic("alice", "wrong")).status_code == 401
    assert sites.get(path, Authorization=basic("bob")).status_code == 401
    assert sites.get(path, Authorization="Basic !!!").status_code == 401
    assert sites.get(path, Authorization=basic("alice")).text == "alice secret"
    assert sites.get(path, Authorization=basic("alice@main.dom")).text == "alice secret"
    assert sites.get(path, Authorization=basic("webadmin")).text == "alice secret"
    assert sites.get("/~alice/PRIVATE/secret.txt").status_code in (401, 404)


def test_small_files_from_memory_revalidate_too(sites: Sites) -> None:
    css = sites.get("/~alice/style.css")
    assert css.status_code == 200 and css.text == "h1 { color: red }"
    etag, modified = css.headers["etag"], css.headers["last-modified"]
    assert sites.get("/~alice/style.css", **{"If-None-Match": etag}).status_code == 304
    assert sites.get("/~alice/style.css", **{"If-None-Match": '"other"'}).status_code == 200
    assert sites.get("/~alice/style.css", **{"If-Modified-Since": modified}).status_code == 304
    part = sites.get("/~alice/style.css", Range="bytes=0-1")
    assert part.status_code == 206 and part.text == "h1"
    assert part.headers["etag"] == etag  # the same validator on both paths
    head = sites.request("HEAD", "/~alice/style.css")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "17"


def test_conditional_requests_ranges_and_head(sites: Sites) -> None:
    full = sites.get("/~alice/big.bin")
    assert full.status_code == 200 and full.content == BIG
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert sites.get("/~alice/big.bin", **{"If-None-Match": etag}).status_code == 304
    assert sites.get("/~alice/big.bin", **{"If-Modified-Since": modified}).status_code == 304
    part = sites.get("/~alice/big.bin", Range="bytes=100-199")
    assert part.status_code == 206 and part.content == BIG[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(BIG)}"
    tail = sites.get("/~alice/big.bin", Range="bytes=-10")
    assert tail.status_code == 206 and tail.content == BIG[-10:]
    beyond = sites.get("/~alice/big.bin", Range=f"bytes={len(BIG) + 10}-")
    assert beyond.status_code == 416
    overlapping = sites.get("/~alice/big.bin", Range="bytes=0-100,50-150,10-20")
    assert overlapping.status_code == 200 and overlapping.content == BIG
    head = sites.request("HEAD", "/~alice/big.bin")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(BIG))


@pytest.mark.parametrize("path", [
    "/~alice/../../../etc/passwd", "/~alice/%2e%2e/%2e%2e/etc/passwd",
    "/~alice/docs%2f..%2f..%2fbob", "/~alice/.tmp/", "/~alice/index.wssp",
    "/~alice/%00", "/~alice/docs/..%5c..%5cx", "/~alice/a%E2%88%95b",
    "/~alice/docs//../../x", "/~../", "/~alice%2f..%2fbob/",
])
def test_traversal_never_leaves_the_site(sites: Sites, path: str) -> None:
    answer = sites.get(path)
    assert answer.status_code in (301, 400, 404), (path, answer.status_code)
    assert b"bob home" not in answer.content and b"root:" not in answer.content


def test_traversal_on_the_raw_wire(sites: Sites) -> None:
    """Paths sent exactly as written (no client normalisation). Dot segments
    are removed as RFC 3986 §5.2.4 says (``/~alice/../~bob/`` is bob's public
    site, as in any browser); what is encoded never becomes a path step."""
    for raw in ("/~alice/../../../etc/passwd", "/~alice/docs/..%2f..%2f..%2fetc%2fpasswd",
                "/~alice/./private/secret.txt", "/~alice/private/./secret.txt",
                "/~alice/docs/%2e%2e/private/secret.txt", "/~bob/..%2f~alice%2fprivate/"):
        with socket.create_connection(("127.0.0.1", sites.server.web), timeout=10) as s:
            s.sendall(f"GET {raw} HTTP/1.1\r\nHost: main.dom\r\nConnection: close\r\n\r\n"
                      .encode())
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert b"alice secret" not in reply and b"root:" not in reply, raw
        assert reply.split(b" ", 2)[1] in (b"301", b"400", b"401", b"404"), (raw, reply[:80])


def test_writing_needs_webdav_credentials(sites: Sites) -> None:
    answer = sites.request("PUT", "/~alice/new.html", content=b"x")
    assert answer.status_code == 401 and "main.dom" in answer.headers["www-authenticate"]
    assert sites.get("/~alice/new.html").status_code == 404
    post = sites.request("POST", "/~alice/new.html", content=b"x")
    assert post.status_code == 405 and "PROPFIND" in post.headers["allow"]
