"""The skin files service (web.md §5): the six-level search order, the stock unnamed
skin, names that could leave the skins directory, atomic writes, changes seen at once."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from waypost.services.container import Services
from waypost.services.skins import SkinError, Skins
from waypost.storage.interface import AlreadyExists

LEVELS = ["domain:Lite", "server:Lite", "stock:Lite", "domain:", "server:", "stock:"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def layered(tmp_path: Path) -> Skins:
    """Skin ``Lite`` in domain d.dom: file ``Lk`` exists at levels k..6 (§5.3), each
    copy saying which level it is at."""
    data, stock = tmp_path / "var", tmp_path / "stock"
    dirs = [data / "skins/domains/d.dom/Lite", data / "skins/server/Lite", stock / "Lite",
            data / "skins/domains/d.dom/unnamed", data / "skins/server/unnamed",
            stock / "unnamed"]
    for k in range(1, 7):
        for level in range(k, 7):
            write(dirs[level - 1] / f"L{k}", LEVELS[level - 1])
    return Skins(data, stock=stock)


def test_the_first_of_six_levels_wins(layered: Skins) -> None:
    for k in range(1, 7):
        found = layered.find("d.dom", "Lite", f"L{k}")
        assert found is not None
        assert (found.name, found.level, found.data) == (
            f"L{k}", LEVELS[k - 1], LEVELS[k - 1].encode())
        assert layered.version("d.dom", "Lite", f"L{k}") == (found.level, found.mtime)
    assert layered.find("d.dom", "Lite", "nowhere") is None
    assert layered.version("d.dom", "Lite", "nowhere") is None


def test_the_server_level_and_the_unnamed_skin_skip_levels(layered: Skins) -> None:
    # Without a domain the order starts at level 2 and skips level 4.
    levels = [layered.version(None, "Lite", f"L{k}") for k in range(1, 7)]
    assert [v[0] if v else None for v in levels] == [
        "server:Lite", "server:Lite", "stock:Lite", "server:", "server:", "stock:"]
    # The unnamed skin: levels 4-6 only; a domain name is case-insensitive.
    levels = [layered.find("D.DOM", "", f"L{k}") for k in range(1, 7)]
    assert [f.level if f else None for f in levels] == ["domain:"] * 4 + ["server:", "stock:"]
    # Another domain sees none of d.dom's files.
    other = [layered.find("other.dom", "Lite", f"L{k}") for k in range(1, 7)]
    assert [f.level if f else None for f in other] == [
        "server:Lite", "server:Lite", "stock:Lite", "server:", "server:", "stock:"]


def test_the_stock_unnamed_skin_is_shipped(tmp_path: Path) -> None:
    skins = Skins(tmp_path / "var")
    assert {"login.wssp", "logout.wssp", "error.wssp", "style.css"} <= {
        name for name, _size, _mtime in skins.stock_files("")}
    login = skins.find("any.dom", "", "login.wssp")
    assert login is not None and login.level == "stock:"
    page = login.data.decode()
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for needed in ('action="/login"', 'method="post"', 'name="Username"', 'name="Password"',
                   'name="csrfToken" value="%%HTML:csrfToken%%"', "%%HTML:domainName%%",
                   "<!--%%IF !secureChannel -->", "%%HTML:loginName%%",
                   '<meta name="viewport"', "<label for="):
        assert needed in page or needed in skins.find("x.dom", "", "head.wssi").data.decode(), (
            needed)
    for name, _size, _mtime in skins.stock_files(""):
        text = skins.find(None, "", name).data.decode()  # UTF-8, as §4.1 says
        assert "<script" not in text.lower(), name
        assert "http://" not in text, name  # no external resources
    assert "%%HTML:errorText%%" in skins.find(None, "", "error.wssp").data.decode()
    # Every value a user controls goes out HTML-escaped: no raw %%name%% in the stock skin.
    for name in ("login.wssp", "logout.wssp", "error.wssp", "head.wssi"):
        text = skins.find(None, "", name).data.decode()
        texts = re.findall(r"%%(.*?)%%", re.sub(r"<!--%%.*?-->", "", text, flags=re.S))
        raw = [part for part in texts if not part.startswith("HTML:")]
        assert raw == [], (name, raw)
    assert skins.list_skins() == [""] and skins.stock_skins() == [""]


def test_the_stock_pages_are_well_formed_wssp(tmp_path: Path) -> None:
    """Only §4.4's keywords, every block closed, every INCLUDE found through the search
    order: a stock page never logs a template error."""
    skins = Skins(tmp_path / "var")
    for name in ("login.wssp", "logout.wssp", "error.wssp", "head.wssi"):
        text = skins.find(None, "", name).data.decode()
        depth = 0
        for keyword, argument in re.findall(r"<!--%%\s*(\w+)\s*(.*?)\s*-->", text, re.S):
            keyword = keyword.upper()
            assert keyword in {"IF", "ELIF", "ELSE", "ENDIF", "INCLUDE"}, (name, keyword)
            depth += {"IF": 1, "ENDIF": -1}.get(keyword, 0)
            assert depth >= 0, name
            assert keyword not in ("ELIF", "ELSE") or depth > 0, name
            if keyword == "INCLUDE":
                included = argument.strip('"')
                assert included.endswith(".wssi") and skins.find(None, "", included), name
        assert depth == 0, name
        assert re.sub(r"<!--%%.*?-->", "", text, flags=re.S).count("%%") % 2 == 0, name


BAD_NAMES = ["", ".", "..", "../x", "../../etc/passwd", "a/b", "/etc/passwd", "a\\b", "..\\x",
             "a\x00b", ".hidden", "a..b", "tab\tname", "new\nline", "x" * 256, "é" * 128,
             " lead", "trail ", "bidi\u202eexe", "\x7f"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_file_names_that_could_leave_the_skin_are_refused(tmp_path: Path, bad: str) -> None:
    skins = Skins(tmp_path / "var")
    for call in (lambda: skins.find("d.dom", "", bad), lambda: skins.version(None, "", bad),
                 lambda: skins.store(None, "", bad, b"x"), lambda: skins.read(None, "", bad),
                 lambda: skins.delete_file(None, "", bad)):
        with pytest.raises(SkinError, match="name"):
            call()
    if bad:  # "" is the unnamed skin, not a bad skin name
        for call in (lambda: skins.create(None, bad), lambda: skins.find(None, bad, "f"),
                     lambda: skins.store("d.dom", bad, "f", b"x")):
            with pytest.raises(SkinError, match="name"):
                call()
        with pytest.raises(SkinError):
            skins.find(bad, "", "login.wssp")  # as a domain name
    assert not (tmp_path / "etc").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_unnamed_directory_name_is_reserved(tmp_path: Path) -> None:
    skins = Skins(tmp_path / "var")
    for name in ("unnamed", "Unnamed", "UNNAMED"):
        with pytest.raises(SkinError, match="reserved"):
            skins.create(None, name)
    with pytest.raises(SkinError, match="always exists"):
        skins.create(None, "")


def test_symbolic_links_never_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "login.wssp", "SECRET")
    write(outside / "unnamed" / "login.wssp", "SECRET")
    data = tmp_path / "var"
    skins = Skins(data)
    (data / "skins/domains").mkdir(parents=True)
    (data / "skins/domains/d.dom").symlink_to(outside)           # a domain directory
    write(data / "skins/server/unnamed/style.css", "body{}")
    (data / "skins/server/unnamed/login.wssp").symlink_to(outside / "login.wssp")  # a file
    (data / "skins/server/unnamed/inside.css").symlink_to("style.css")  # stays inside: fine

    found = skins.find("d.dom", "", "login.wssp")
    assert found is not None and found.level == "stock:" and b"SECRET" not in found.data
    assert skins.version("d.dom", "", "login.wssp") == ("stock:", found.mtime)
    assert [f[0] for f in skins.list_files(None, "")] == ["inside.css", "style.css"]
    assert skins.find(None, "", "inside.css").data == b"body{}"
    with pytest.raises(SkinError, match="no file"):
        skins.read(None, "", "login.wssp")
    with pytest.raises(SkinError, match="symbolic link"):
        skins.store("d.dom", "", "login.wssp", b"overwritten?")
    assert (outside / "unnamed" / "login.wssp").read_text() == "SECRET"
    # Storing over a file symlink replaces the link, never writes through it.
    skins.store(None, "", "login.wssp", b"mine")
    assert (outside / "login.wssp").read_text() == "SECRET"
    assert skins.find(None, "", "login.wssp").data == b"mine"


def test_a_change_is_visible_at_once(tmp_path: Path) -> None:
    skins = Skins(tmp_path / "var")
    stock = skins.version("d.dom", "", "login.wssp")
    assert stock is not None and stock[0] == "stock:"
    versions = []
    for i in range(5):  # quicker than any file-system timestamp tick
        skins.store("d.dom", "", "login.wssp", f"page {i}".encode())
        versions.append(skins.version("d.dom", "", "login.wssp"))
        assert skins.find("d.dom", "", "login.wssp").data == f"page {i}".encode()
    assert all(v is not None and v[0] == "domain:" for v in versions)
    mtimes = [v[1] for v in versions if v]
    assert mtimes == sorted(mtimes) and len(set(mtimes)) == 5
    skins.delete_file("d.dom", "", "login.wssp")
    assert skins.version("d.dom", "", "login.wssp") == stock
    assert skins.find("d.dom", "", "login.wssp").level == "stock:"


def test_writes_are_atomic(tmp_path: Path) -> None:
    """A reader racing a writer sees one whole version or the other, never a mixture,
    and no temporary file is left behind."""
    skins = Skins(tmp_path / "var")
    big = {c: c.encode() * 300_000 for c in "AB"}
    skins.store(None, "", "big.css", big["A"])
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = skins.find(None, "", "big.css").data
            seen.add(data[:1] + data[-1:] if data in big.values() else b"torn")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            skins.store(None, "", "big.css", big["AB"[i % 2]])
    finally:
        stop.set()
        thread.join()
    assert seen <= {b"AA", b"BB"} and seen
    directory = tmp_path / "var/skins/server/unnamed"
    assert sorted(os.listdir(directory)) == ["big.css"]
    # A failed write (the name is a directory) leaves nothing behind.
    (directory / "dir.css").mkdir()
    with pytest.raises((SkinError, OSError)):
        skins.store(None, "", "dir.css", b"x")
    assert sorted(os.listdir(directory)) == ["big.css", "dir.css"]


def test_skins_are_created_renamed_and_removed(tmp_path: Path) -> None:
    skins = Skins(tmp_path / "var")
    with pytest.raises(SkinError, match="does not exist"):
        skins.store(None, "Lite", "login.wssp", b"x")
    skins.create(None, "Lite")
    with pytest.raises(SkinError, match="already exists"):
        skins.create(None, "Lite")
    assert skins.list_skins() == ["", "Lite"] and skins.list_files(None, "Lite") == []
    # An empty named skin inherits everything from the unnamed one.
    assert skins.find(None, "Lite", "login.wssp").level == "stock:"
    skins.store(None, "Lite", "login.wssp", b"lite login")
    skins.store(None, "Lite", "logo.png", b"\x89PNG\r\n\x1a\n\xff")
    assert skins.find("d.dom", "Lite", "login.wssp").level == "server:Lite"
    assert skins.read(None, "Lite", "logo.png") == b"\x89PNG\r\n\x1a\n\xff"
    assert [name for name, _s, _m in skins.list_files(None, "Lite")] == ["login.wssp",
                                                                         "logo.png"]
    skins.rename(None, "Lite", "Light")
    assert skins.list_skins() == ["", "Light"]
    assert skins.find(None, "Lite", "login.wssp").level == "stock:"
    assert skins.find(None, "Light", "login.wssp").data == b"lite login"
    with pytest.raises(SkinError, match="does not exist"):
        skins.rename(None, "Lite", "Other")
    skins.create(None, "Other")
    with pytest.raises(SkinError, match="already exists"):
        skins.rename(None, "Light", "Other")
    with pytest.raises(SkinError, match="cannot be renamed"):
        skins.rename(None, "", "Other")
    skins.remove(None, "Light")
    assert skins.list_skins() == ["", "Other"]
    assert skins.find(None, "Light", "login.wssp").level == "stock:"
    with pytest.raises(SkinError, match="does not exist"):
        skins.remove(None, "Light")
    # Removing the unnamed skin of a level drops its own files only.
    skins.store(None, "", "login.wssp", b"server login")
    skins.remove(None, "")
    assert skins.find(None, "", "login.wssp").level == "stock:"
    assert not [p for p in (tmp_path / "var/skins/server").iterdir() if p.name.startswith(".")]


def test_wssp_files_must_be_utf8(tmp_path: Path) -> None:
    skins = Skins(tmp_path / "var")
    with pytest.raises(SkinError, match="not UTF-8"):
        skins.store(None, "", "login.wssp", "caf\xe9".encode("latin-1"))
    skins.store(None, "", "logo.gif", b"GIF89a\xe9")  # other files are bytes


def test_domain_skins_need_an_existing_domain(svc: Services) -> None:
    skins = Skins(svc.data_dir, directory=svc.directory)
    svc.directory.add_domain_alias("client.dom", "www.client.dom")
    with pytest.raises(SkinError, match=r"nowhere\.dom"):
        skins.store("nowhere.dom", "", "login.wssp", b"x")
    with pytest.raises(SkinError, match=r"nowhere\.dom"):
        skins.list_skins("nowhere.dom")
    assert not (svc.data_dir / "skins/domains/nowhere.dom").exists()
    # A Domain Alias stands for its domain.
    assert skins.canonical_domain("WWW.Client.Dom") == "client.dom"
    skins.store(skins.canonical_domain("www.client.dom"), "", "login.wssp", b"client")
    assert skins.find("client.dom", "", "login.wssp").data == b"client"
    assert skins.find("other.dom", "", "login.wssp").level == "stock:"
    assert skins.list_files("www.client.dom", "") == skins.list_files("client.dom", "")


def test_a_domains_skins_follow_its_rename_and_deletion(tmp_path: Path) -> None:
    """Domain skins move with a renamed domain and go with a deleted one; a
    domain created again under the old name does not inherit them."""
    from waypost.services.container import open_services

    svc = open_services(tmp_path / "var", create=True)
    try:
        svc.directory.init_server("main.dom")
        svc.directory.create_domain("client.com")
        skins = Skins(svc.data_dir, directory=svc.directory)
        skins.store("client.com", "", "login.wssp", b"client login")
        svc.directory.rename_domain("client.com", "client.org")
        assert skins.read("client.org", "", "login.wssp") == b"client login"
        assert not (svc.data_dir / "skins" / "domains" / "client.com").exists()
        # a rename the store refuses (the name is taken) leaves the files where they were
        svc.directory.create_domain("taken.org")
        with pytest.raises(AlreadyExists):
            svc.directory.rename_domain("client.org", "taken.org")
        assert skins.read("client.org", "", "login.wssp") == b"client login"
        svc.directory.delete_domain("client.org")
        assert not (svc.data_dir / "skins" / "domains" / "client.org").exists()
        assert not [p for p in (svc.data_dir / "skins" / "domains").iterdir()
                    if p.name.startswith(".removed-")]
        svc.directory.create_domain("client.org")
        found = skins.find("client.org", "", "login.wssp")
        assert found is not None and found.level != "domain:client.org"
    finally:
        svc.close()
