"""Acknowledged means on disk (issue 11 point 1): files a WebDAV PUT
answered 201/204 and a Files-page upload answered 303 for are all there,
whole and once, after ``kill -9`` of the server in the middle of more
uploads; an upload the server never acknowledged leaves no part behind."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import httpx
from tests.support.server import WaypostServer

PASSWORD = "durable-pw-1"


def test_acknowledged_uploads_survive_kill_9(tmp_path: Path) -> None:
    server = WaypostServer(tmp_path / "var").init()
    server.cli("account", "add", "alice", "--password", PASSWORD)
    server.start()
    site = f"http://127.0.0.1:{server.web}/~alice/"
    auth = ("alice", PASSWORD)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(headers={"Host": "main.dom"}, auth=auth, timeout=30) as c:
            i = 0
            while not stop.is_set():
                body = os.urandom(20_000 + i)
                name = f"w{n}-{i}.bin"
                try:
                    answer = c.put(site + name, content=body)
                except httpx.HTTPError:
                    return
                if answer.status_code in (201, 204):
                    acknowledged[name] = hashlib.sha256(body).hexdigest()
                i += 1

    with httpx.Client(base_url=server.url(), follow_redirects=False, timeout=30) as web:
        page = web.get("/")
        token = re.search(r'name="csrfToken" value="([^"]+)"', page.text)
        assert token
        login = web.post("/login", data={"Username": "alice", "Password": PASSWORD,
                                         "csrfToken": token.group(1)})
        base = login.headers["location"].rsplit("/", 1)[0] + "/"
        csrf = re.search(r'name="csrfToken" value="([^"]+)"', web.get(base + "Files.wssp").text)
        assert csrf
        page_body = os.urandom(5000)
        uploaded = web.post(base + "FileUpload", data={"csrfToken": csrf.group(1), "Folder": ""},
                            files=[("File", ("page.bin", page_body, "application/octet-stream"))])
        assert uploaded.status_code == 303
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    server.wait_for(lambda: len(acknowledged) >= 30, timeout=60, what="30 acknowledged PUTs")
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    server.start()
    try:
        with httpx.Client(headers={"Host": "main.dom"}, timeout=30) as c:
            for name, digest in acknowledged.items():
                got = c.get(site + name)
                assert got.status_code == 200, name
                assert hashlib.sha256(got.content).hexdigest() == digest, name
            assert c.get(site + "page.bin").content == page_body
        listing = server.cli("files", "list", "alice").stdout
        stored = re.findall(r"(w\d+-\d+\.bin)", listing)
        assert len(stored) == len(set(stored))
        for name in stored:  # whatever is there (acknowledged or not) is whole
            size = re.search(rf"{re.escape(name)}\s+(\d+)", listing)
            assert size and int(size.group(1)) == 20_000 + int(name.split("-")[1][:-4])
    finally:
        server.stop()
