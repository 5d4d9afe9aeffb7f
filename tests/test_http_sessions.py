"""WebUser sessions (web.md §2, issue 10 point 8): fresh ids, the cookie and
address binding, the idle timeout, logout; and the skin page cache of
``web/pages.py`` (compiled once, recompiled when a file changes)."""

from __future__ import annotations

import os
from pathlib import Path

from waypost.protocols.http.sessions import SessionStore
from waypost.protocols.http.webuser import login_dataset, safe_text, valid_file_name
from waypost.services.skins import SkinFile
from waypost.web.pages import Pages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_needs_its_cookie_and_address() -> None:
    store = SessionStore(60, clock=Clock())
    s = store.create("alice@main.dom", "main.dom", skin="", client_ip="127.0.0.1", secure=False)
    assert store.check(s.id, s.cookie, "127.0.0.1", bind_ip=True) == s
    assert store.check(s.id, None, "127.0.0.1", bind_ip=True) is None
    assert store.check(s.id, "", "127.0.0.1", bind_ip=True) is None
    assert store.check(s.id, s.cookie + "x", "127.0.0.1", bind_ip=True) is None
    assert store.check(s.id, "é", "127.0.0.1", bind_ip=True) is None
    assert store.check(s.id, s.cookie, "127.0.0.2", bind_ip=True) is None
    assert store.check(s.id, s.cookie, "127.0.0.2", bind_ip=False) == s
    other = store.create("alice@main.dom", "main.dom", skin="", client_ip="127.0.0.1",
                         secure=False)
    assert other.id != s.id and other.cookie != s.cookie and other.csrf != s.csrf
    assert store.check(s.id, other.cookie, "127.0.0.1", bind_ip=True) is None
    assert store.check("not-an-id", s.cookie, "127.0.0.1", bind_ip=True) is None
    assert s.csrf_ok(s.csrf) and not s.csrf_ok(other.csrf)
    assert not s.csrf_ok("") and not s.csrf_ok(None) and not s.csrf_ok(s.csrf + "é")


def test_idle_timeout_and_logout() -> None:
    clock = Clock()
    store = SessionStore(60, clock=clock)
    s = store.create("alice@main.dom", "main.dom", skin="", client_ip="127.0.0.1", secure=True)
    clock.now += 59
    assert store.check(s.id, s.cookie, "127.0.0.1", bind_ip=True) == s  # use refreshes it
    clock.now += 59
    assert store.check(s.id, s.cookie, "127.0.0.1", bind_ip=True) == s
    clock.now += 61
    assert store.check(s.id, s.cookie, "127.0.0.1", bind_ip=True) is None
    assert len(store.rows) == 0
    t = store.create("alice@main.dom", "main.dom", skin="", client_ip="127.0.0.1", secure=True)
    u = store.create("bob@main.dom", "main.dom", skin="", client_ip="127.0.0.1", secure=True)
    assert store.end(t.id) and not store.end(t.id)
    assert store.check(t.id, t.cookie, "127.0.0.1", bind_ip=True) is None
    clock.now += 61
    assert store.expire() == 1 and len(store.rows) == 0
    assert store.check(u.id, u.cookie, "127.0.0.1", bind_ip=True) is None


def test_the_store_is_bounded() -> None:
    store = SessionStore(60, clock=Clock(), max_sessions=3)
    made = [store.create(f"u{i}@d", "d", skin="", client_ip="::1", secure=False)
            for i in range(5)]
    assert len(store.rows) == 3
    assert store.check(made[0].id, made[0].cookie, "::1", bind_ip=True) is None
    assert store.check(made[4].id, made[4].cookie, "::1", bind_ip=True) == made[4]


def test_user_text_is_made_safe_for_raw_output() -> None:
    assert safe_text('<script>alert("x")</script>') == "scriptalert(x)/script"
    assert safe_text("alice%client.com") == "alice%client.com"
    assert safe_text("a'b&c\"d\x00e") == "abcde"
    assert safe_text("no mailbox ~bob/INBOX (not allowed)") == \
        "no mailbox ~bob/INBOX (not allowed)"  # the same raw and escaped
    for bad in ("", ".", "..", "../x", "a/b", "a\\b", "a\x00b", ".htaccess", "x..y", "a b",
                "a" * 300):
        assert not valid_file_name(bad), bad
    for good in ("style.css", "logo.png", "strings.data", "favicon.ico", "a-b_c.v2.js"):
        assert valid_file_name(good), good


class DirSkins:
    """The skins interface pages need (``find``/``version``) over one directory
    per domain, so the cache can be watched without the skins service."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, domain: str, name: str) -> Path | None:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad name {name!r}")
        for level in (domain, "stock"):
            path = self.root / level / name
            if path.is_file():
                return path
        return None

    def find(self, domain: str, skin: str, name: str) -> SkinFile | None:
        path = self._path(domain, name)
        if path is None:
            return None
        return SkinFile(name, path.parent.name, path.read_bytes(), path.stat().st_mtime)

    def version(self, domain: str, skin: str, name: str) -> tuple[str, float] | None:
        path = self._path(domain, name)
        return None if path is None else (path.parent.name, path.stat().st_mtime)


def test_pages_are_compiled_once_and_recompiled_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "stock").mkdir()
    (tmp_path / "d1").mkdir()
    (tmp_path / "stock" / "login.wssp").write_text("stock <!--%%INCLUDE \"part.wssi\"-->")
    (tmp_path / "stock" / "part.wssi").write_text("part for %%HTML:domainName%%")
    pages = Pages(DirSkins(tmp_path))
    assert pages.render("d1", "", "login.wssp", {"domainName": "<d1>"}) == \
        "stock part for &lt;d1&gt;"
    assert pages.render("d1", "", "login.wssp", {"domainName": "d1"}) == "stock part for d1"
    assert pages.compiled == 2  # the page and its include, once each
    # a domain's own copy takes over at the next request
    (tmp_path / "d1" / "part.wssi").write_text("own part")
    assert pages.render("d1", "", "login.wssp", {}) == "stock own part"
    assert pages.render("d2", "", "login.wssp", {}) == "stock part for "
    assert pages.compiled == 5  # d1 recompiles its include; d2 has entries of its own
    # a changed file (new mtime) is recompiled; a deleted one falls back
    path = tmp_path / "d1" / "part.wssi"
    path.write_text("changed part")

    os.utime(path, (path.stat().st_mtime + 5, path.stat().st_mtime + 5))
    assert pages.render("d1", "", "login.wssp", {}) == "stock changed part"
    path.unlink()
    assert pages.render("d1", "", "login.wssp", {"domainName": "d1"}) == "stock part for d1"
    assert pages.render("d1", "", "missing.wssp", {}) is None
    assert pages.render("d1", "", "../login.wssp", {}) is None
    assert pages.static("d1", "", "login.wssp") is None and pages.static("d1", "", "part.wssi") is None
    assert pages.version("d1", "", "part.wssi") is None


def test_the_page_cache_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "stock").mkdir()
    for i in range(5):
        (tmp_path / "stock" / f"p{i}.wssp").write_text(f"page {i}")
    pages = Pages(DirSkins(tmp_path), max_cached=2)
    for i in range(5):
        assert pages.render("d", "", f"p{i}.wssp", {}) == f"page {i}"
    assert len(pages._cache) == 2


def test_the_login_dataset() -> None:
    clear = login_dataset("main.dom", secure=False, has_certificate=True, csrf="t")
    assert clear == {"domainName": "main.dom", "csrfToken": "t", "skinName": "",
                     "hasCertificate": True}
    secure = login_dataset("main.dom", secure=True, has_certificate=True, csrf="t",
                           error_code="badPassword", login_name='al"ice<b>')
    assert secure["secureChannel"] is True
    assert (secure["errorCode"], secure["loginName"]) == ("badPassword", "aliceb")
