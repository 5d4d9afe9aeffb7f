"""The Files page in a real browser (issue 11 point 3): Debian's Chromium
uploads several files at once into a folder, the site serves them, and a
file is renamed and deleted through the page's forms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext
from tests.support.browser import sign_in
from tests.support.server import WaypostServer

PASSWORD = "browser-files-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("browser-files") / "var").init()
    srv.cli("account", "add", "alice", "--password", PASSWORD)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_upload_several_files_and_publish_them(server: WaypostServer, context: BrowserContext,
                                               tmp_path: Path) -> None:
    home, style = tmp_path / "default.html", tmp_path / "style.css"
    home.write_text('<link rel="stylesheet" href="style.css"><h1>Alice online</h1>')
    style.write_text("h1 { color: green }")
    page = context.new_page()
    sign_in(page, server, "alice", PASSWORD)
    page.get_by_role("link", name="Files").click()
    page.get_by_label("New folder").fill("blog")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("link", name="blog/").click()
    page.get_by_label("Upload files").set_input_files([str(home), str(style)])
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url("**Done=uploaded")
    assert page.get_by_role("link", name="default.html").count() == 1
    assert page.get_by_role("link", name="style.css").count() == 1
    assert page.get_by_role("status").inner_text() == "The files were uploaded."

    site = httpx.get(f"http://127.0.0.1:{server.web}/~alice/blog/", headers={"Host": "main.dom"})
    assert site.text == home.read_text()

    row = page.locator("tr.file", has=page.get_by_role("link", name="style.css"))
    row.get_by_label("New name").fill("site.css")
    row.get_by_role("button", name="Rename").click()
    page.wait_for_url("**Done=renamed")
    assert page.get_by_role("link", name="site.css").count() == 1
    page.locator("tr.file", has=page.get_by_role("link", name="site.css")).get_by_role(
        "button", name="Delete").click()
    page.wait_for_url("**Done=deleted")
    assert page.get_by_role("link", name="site.css").count() == 0
    assert page.get_by_role("link", name="default.html").count() == 1


def test_files_dropped_from_the_desktop_are_uploaded(server: WaypostServer,
                                                      context: BrowserContext,
                                                      tmp_path: Path) -> None:
    """Drag and drop without script: Chromium's own drop of desktop files onto
    the upload field (driven through the DevTools protocol, as a real drag
    from the file manager), then Upload."""
    dropped = [tmp_path / "one.txt", tmp_path / "two.txt"]
    for n, path in enumerate(dropped):
        path.write_text(f"dropped {n}")
    page = context.new_page()
    sign_in(page, server, "alice", PASSWORD, session=True)
    page.get_by_role("link", name="Files").click()
    box = page.locator("input.drop").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = context.new_cdp_session(page)
    data = {"items": [], "files": [str(p) for p in dropped], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    assert page.locator("input.drop").evaluate("input => input.files.length") == 2
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url("**Done=uploaded")
    for path in dropped:
        assert page.get_by_role("link", name=path.name).count() == 1
