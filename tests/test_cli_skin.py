"""`waypost skin ...` as an administrator runs it (the real command, as a subprocess):
the How To's Access recipe, the levels, binary files, and one-line refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.cli import Waypost
from tests.support.howto import HOWTO_LOGIN

from waypost.services.skins import Skins


@pytest.fixture(scope="module")
def wp(tmp_path_factory: pytest.TempPathFactory) -> Waypost:
    cmd = Waypost(tmp_path_factory.mktemp("cli-skin") / "var")
    cmd("init", "--domain", "main.dom")
    cmd("domain", "add", "client.com")
    cmd("domain", "add", "other.com")
    cmd("domain", "alias", "add", "client.com", "www.client.com")
    return cmd


def rows(out: str) -> list[list[str]]:
    """Table rows (after the header) split on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()[1:]]


def refused(wp: Waypost, *args: str, input: str | None = None) -> str:
    """The one error line of a refused command (exit 1, nothing on stdout)."""
    proc = wp(*args, input=input, check=1)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
    return proc.stderr.strip()


def test_the_access_recipe(wp: Waypost, tmp_path: Path) -> None:
    stock = wp("skin", "get", "login.wssp").stdout
    assert stock.startswith("<!DOCTYPE html>") and 'action="/login"' in stock

    # 1. waypost skin get --domain client.com login.wssp > login.wssi
    login_wssi = tmp_path / "login.wssi"
    login_wssi.write_text(wp("skin", "get", "--domain", "client.com", "login.wssp").stdout)
    assert login_wssi.read_text() == stock
    # 2. waypost skin put --domain client.com login.wssi   (the file on standard input)
    out = wp("skin", "put", "--domain", "client.com", "login.wssi",
             input=login_wssi.read_text()).stdout
    assert out.strip() == (f"login.wssi stored in the unnamed skin of domain client.com"
                           f" ({len(stock.encode())} bytes)")
    # 3. waypost skin put --domain client.com login.wssp   with the How To page
    wp("skin", "put", "--domain", "client.com", "login.wssp", input=HOWTO_LOGIN)

    # The domain now gets the new page and keeps the old one as login.wssi ...
    assert wp("skin", "get", "--domain", "client.com", "login.wssp").stdout == HOWTO_LOGIN
    assert wp("skin", "get", "--domain", "client.com", "login.wssi").stdout == stock
    assert wp("skin", "get", "--domain", "www.client.com", "login.wssp").stdout == HOWTO_LOGIN
    # ... while other domains and the server level still get the stock page.
    assert wp("skin", "get", "--domain", "other.com", "login.wssp").stdout == stock
    assert wp("skin", "get", "login.wssp").stdout == stock
    assert refused(wp, "skin", "get", "--domain", "other.com", "login.wssi") == (
        "error: no file 'login.wssi' for the unnamed skin of domain other.com at any level")

    own = rows(wp("skin", "files", "--domain", "client.com").stdout)
    assert [(r[0], r[1]) for r in own] == [("login.wssi", str(len(stock.encode()))),
                                           ("login.wssp", str(len(HOWTO_LOGIN.encode())))]
    every = {r[0]: r[1] for r in rows(wp("skin", "files", "--all", "--domain",
                                         "client.com").stdout)}
    assert every["login.wssp"] == every["login.wssi"] == "domain"
    assert every["style.css"] == every["error.wssp"] == "stock"

    # Undo: delete the domain's login.wssp and the stock one shows through again.
    assert wp("skin", "delete", "--domain", "client.com", "login.wssp").stdout.strip() == (
        "login.wssp deleted from the unnamed skin of domain client.com")
    assert wp("skin", "get", "--domain", "client.com", "login.wssp").stdout == stock
    wp("skin", "put", "--domain", "client.com", "login.wssp", input=HOWTO_LOGIN)


def test_put_from_a_file_and_binary_round_trip(wp: Waypost, tmp_path: Path) -> None:
    page = tmp_path / "page.wssp"
    page.write_text("<p>server-wide %%HTML:domainName%%</p>\n")
    wp("skin", "put", "error.wssp", str(page))
    assert wp("skin", "get", "--domain", "other.com", "error.wssp").stdout == page.read_text()
    logo = bytes(range(256)) * 4
    env = dict(os.environ)
    env.pop("WAYPOST_DATA", None)
    base = [sys.executable, "-m", "waypost", "--data", str(wp.data), "skin"]
    subprocess.run([*base, "put", "logo.png", "-"], input=logo, check=True, env=env,
                   capture_output=True)
    got = subprocess.run([*base, "get", "--domain", "client.com", "logo.png"], check=True,
                         env=env, capture_output=True)
    assert got.stdout == logo
    latin = subprocess.run([*base, "put", "login.wssp"], input="caf\xe9".encode("latin-1"),
                           env=env, capture_output=True)
    assert latin.returncode == 1 and b"not UTF-8" in latin.stderr
    wp("skin", "delete", "error.wssp")
    wp("skin", "delete", "logo.png")


def test_named_skins_create_rename_remove(wp: Waypost) -> None:
    assert wp("skin", "create", "--domain", "other.com", "Lite", "Dark").stdout.splitlines() == [
        "skin 'Lite' of domain other.com created", "skin 'Dark' of domain other.com created"]
    wp("skin", "put", "--domain", "other.com", "--skin", "Lite", "login.wssp", input="lite\n")
    assert wp("skin", "get", "--domain", "other.com", "--skin", "Lite",
              "login.wssp").stdout == "lite\n"
    # A named skin falls back to the unnamed one for the files it lacks.
    assert wp("skin", "get", "--domain", "other.com", "--skin", "Lite",
              "style.css").stdout.startswith("/*")
    listing = rows(wp("skin", "list", "--domain", "other.com").stdout)
    assert ["Dark", "domain other.com", "0"] in listing
    assert ["Lite", "domain other.com", "1"] in listing
    stock = len(Skins(wp.data).stock_files(""))  # grows as the stock skin gets pages
    assert ['"" (unnamed)', "stock", str(stock)] in listing
    assert ["Lite", "server", "0"] not in listing
    wp("skin", "rename", "--domain", "other.com", "Lite", "Light")
    assert wp("skin", "get", "--domain", "other.com", "--skin", "Light",
              "login.wssp").stdout == "lite\n"
    assert wp("skin", "remove", "--domain", "other.com", "Light", "Dark").stdout.splitlines() == [
        "skin 'Light' of domain other.com removed", "skin 'Dark' of domain other.com removed"]
    assert [r[0] for r in rows(wp("skin", "list", "--domain", "other.com").stdout)
            if r[1] != "stock"] == ['"" (unnamed)', '"" (unnamed)']


@pytest.mark.parametrize(("args", "message"), [
    (("get", "--domain", "nowhere.com", "login.wssp"), "domain 'nowhere.com' does not exist"),
    (("put", "--domain", "nowhere.com", "x.css", "-"), "domain 'nowhere.com' does not exist"),
    (("get", "../../waypost.db"), "invalid file name '../../waypost.db'"),
    (("put", "/etc/passwd", "-"), "invalid file name '/etc/passwd'"),
    (("put", "a\\b.css", "-"), "invalid file name 'a\\\\b.css'"),
    (("put", "--skin", "../x", "login.wssp", "-"), "invalid skin name '../x'"),
    (("put", "--skin", "Missing", "login.wssp", "-"), "skin 'Missing' (server-wide) does not"),
    (("create", "unnamed"), "is reserved"),
    (("create", "../up"), "invalid skin name '../up'"),
    (("rename", "Nope", "New"), "skin 'Nope' (server-wide) does not exist"),
    (("remove", "Nope"), "skin 'Nope' (server-wide) does not exist"),
    (("delete", "nothing.css"), "has no file 'nothing.css'"),
    (("put", "x.css", "/nonexistent/source.css"), "cannot read /nonexistent/source.css"),
])
def test_refusals_are_one_line(wp: Waypost, args: tuple[str, ...], message: str) -> None:
    assert message in refused(wp, "skin", *args, input="body{}")
    assert not (wp.data.parent / "x").exists()


def test_every_skin_command_explains_itself(wp: Waypost) -> None:
    out = wp("skin", "--help").stdout
    for verb in ("list", "files", "get", "put", "delete", "create", "rename", "remove"):
        assert verb in out
        assert "Usage: waypost skin " + verb in wp("skin", verb, "--help").stdout
