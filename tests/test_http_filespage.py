"""The WebUser "Files" page (issue 11 point 3): a real server, a logged-in
session over httpx, every action through its form (CSRF token included),
results checked through the File Storage service and the personal site."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.files import AccountFiles

PASSWORD = "files-pw-1"
ALICE = "alice@main.dom"
XSS = "<img src=x onerror=alert(1)>.html"


@dataclass
class Page:
    server: WaypostServer
    client: httpx.Client
    base: str

    def get(self, what: str) -> httpx.Response:
        return self.client.get(self.base + what)

    def token(self) -> str:
        found = re.search(r'name="csrfToken" value="([^"]+)"', self.get("Files.wssp").text)
        assert found
        return found.group(1)

    def post(self, action: str, data: dict[str, str], files: object = None) -> httpx.Response:
        return self.client.post(self.base + action, data={**data, "csrfToken": self.token()},
                                files=files)  # type: ignore[arg-type]

    def stored(self) -> list[str]:
        svc = open_services(self.server.data)
        try:
            files = AccountFiles(svc)
            out, todo = [], [""]
            while todo:
                for entry in files.list(ALICE, todo.pop()):
                    out.append(entry.path + ("/" if entry.is_folder else ""))
                    if entry.is_folder:
                        todo.append(entry.path)
            return sorted(out)
        finally:
            svc.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    data = tmp_path_factory.mktemp("filespage") / "var"
    server = WaypostServer(data).init()
    server.cli("account", "add", "alice", "--password", PASSWORD)
    server.cli("account", "set", "alice", "MaxWebSize", "64K", "MaxWebFiles", "20")
    server.cli("setting", "set", "LoginFailureLimit", "0", check=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(server: WaypostServer) -> Iterator[Page]:
    with httpx.Client(base_url=server.url(), follow_redirects=False, timeout=30) as c:
        login = c.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', login.text)
        assert token
        answer = c.post("/login", data={"Username": "alice", "Password": PASSWORD,
                                        "csrfToken": token.group(1)})
        assert answer.status_code == 303
        yield Page(server, c, answer.headers["location"].rsplit("/", 1)[0] + "/")


def test_upload_list_download_and_the_site(page: Page) -> None:
    empty = page.get("Files.wssp")
    assert empty.status_code == 200 and 'name="File"' in empty.text and "multiple" in empty.text
    answer = page.post("FileUpload", {"Folder": ""}, files=[
        ("File", ("default.html", b"<h1>Home</h1>", "text/html")),
        ("File", ("notes.txt", b"some notes", "text/plain"))])
    assert answer.status_code == 303
    assert answer.headers["location"] == "Files.wssp?Folder=&Done=uploaded"
    listing = page.get("Files.wssp?Folder=&Done=uploaded").text
    assert "default.html" in listing and "notes.txt" in listing
    assert "The files were uploaded." in listing
    assert 'class="used-files">2<' in listing and 'class="max-bytes">64.0 KB<' in listing
    download = page.get("FileGet?Path=notes.txt")
    assert download.status_code == 200 and download.content == b"some notes"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["content-security-policy"]
    with httpx.Client(base_url=page.server.url(), timeout=30) as anonymous:
        site = anonymous.get("/~alice/", headers={"Host": "main.dom"})
        assert site.text == "<h1>Home</h1>"


def test_folders_rename_and_delete(page: Page) -> None:
    assert page.post("FileMkdir", {"Folder": "", "Name": "pics"}).status_code == 303
    assert page.post("FileUpload", {"Folder": "pics"}, files=[
        ("File", ("a.png", b"\x89PNG fake", "image/png"))]).status_code == 303
    inside = page.get("Files.wssp?Folder=pics").text
    assert "a.png" in inside and 'href="Files.wssp?Folder=">My site</a>' in inside
    assert page.post("FileRename", {"Path": "pics/a.png", "NewName": "b.png"}).headers[
        "location"] == "Files.wssp?Folder=pics&Done=renamed"
    assert "pics/b.png" in page.stored()
    refused = page.post("FileDelete", {"Path": "pics"})
    assert refused.status_code == 409 and "not empty" in refused.text
    assert page.post("FileDelete", {"Path": "pics", "Recursive": "1"}).status_code == 303
    assert not [p for p in page.stored() if p.startswith("pics")]


@pytest.mark.parametrize("name", ["../escape.txt", "a/b.txt", "..\\x.txt", "index.wssp",
                                  ".htaccess", "x\u2215y.txt"])
def test_bad_upload_names_are_refused(page: Page, name: str) -> None:
    before = page.stored()
    answer = page.post("FileUpload", {"Folder": ""}, files=[("File", (name, b"x", "text/plain"))])
    assert answer.status_code == 400, (name, answer.status_code)
    assert page.stored() == before


@pytest.mark.parametrize("field,value", [("Folder", "../.."), ("Folder", "/etc"),
                                         ("Folder", "a/../../b")])
def test_bad_folders_are_refused(page: Page, field: str, value: str) -> None:
    answer = page.post("FileMkdir", {field: value, "Name": "x"})
    assert answer.status_code in (400, 404)
    assert page.get("Files.wssp?Folder=" + urllib.parse.quote(value)).status_code in (400, 404)
    assert page.get("FileGet?Path=../../etc/passwd").status_code == 400


def test_names_are_shown_as_text(page: Page) -> None:
    assert page.post("FileUpload", {"Folder": ""}, files=[
        ("File", (XSS, b"<script>alert(2)</script>", "text/html"))]).status_code == 303
    listing = page.get("Files.wssp").text
    assert "<img src=x" not in listing
    assert "&lt;img src=x onerror=alert(1)&gt;.html" in listing
    assert page.post("FileDelete", {"Path": XSS}).status_code == 303


def test_the_quota_is_a_clear_507(page: Page) -> None:
    before = page.stored()
    answer = page.post("FileUpload", {"Folder": ""}, files=[
        ("File", ("huge.bin", b"z" * 70_000, "application/octet-stream"))])
    assert answer.status_code == 507 and "limit" in answer.text
    assert page.stored() == before
