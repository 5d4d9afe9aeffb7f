"""The How To's Access recipe over HTTP (issue 10 point 5, without the
browser part): an administrator copies a domain's ``login.wssp`` to
``login.wssi`` and replaces it with a page that sends clear-text visitors to
``https://<domain>/``; from the next request on, HTTP shows the redirect and
HTTPS the login form, and other domains keep the stock page. Also: a changed
skin file takes effect on the next request, with no restart."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from tests.support.howto import HOWTO_LOGIN
from tests.support.server import WaypostServer

REFRESH = re.compile(r'<META HTTP-EQUIV="REFRESH" CONTENT="0;URL=https://([^/"]+)/">')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("access") / "var").init()
    srv.cli("domain", "add", "client.com")
    srv.cli("domain", "add", "other.com")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def page(server: WaypostServer, host: str, *, secure: bool) -> str:
    with httpx.Client(base_url=server.url(secure=secure), verify=False, timeout=30) as client:
        response = client.get("/", headers={"Host": host})
    assert response.status_code == 200, response.text
    return response.text


def test_the_access_recipe_sends_clear_text_visitors_to_https(server: WaypostServer) -> None:
    stock = page(server, "client.com", secure=True)
    assert 'name="csrfToken"' in stock and not REFRESH.search(stock)

    original = server.cli("skin", "get", "--domain", "client.com", "login.wssp").stdout
    server.cli("skin", "put", "--domain", "client.com", "login.wssi", input=original)
    server.cli("skin", "put", "--domain", "client.com", "login.wssp", input=HOWTO_LOGIN)

    clear = page(server, "client.com", secure=False)
    found = REFRESH.search(clear)
    assert found and found.group(1) == "client.com"
    assert 'name="csrfToken"' not in clear  # no form over clear text any more

    secure = page(server, "client.com", secure=True)
    assert not REFRESH.search(secure)
    assert 'name="csrfToken"' in secure and 'name="Password"' in secure  # login.wssi

    other = page(server, "other.com", secure=False)
    assert not REFRESH.search(other) and 'name="csrfToken"' in other  # stock, untouched


def test_a_changed_skin_file_takes_effect_on_the_next_request(server: WaypostServer) -> None:
    server.cli("skin", "put", "--domain", "other.com", "login.wssp",
               input="<p>first %%HTML:domainName%%</p>")
    assert "first other.com" in page(server, "other.com", secure=False)
    server.cli("skin", "put", "--domain", "other.com", "login.wssp",
               input="<p>second %%HTML:domainName%%</p>")
    assert "second other.com" in page(server, "other.com", secure=False)
    server.cli("skin", "delete", "--domain", "other.com", "login.wssp")
    assert 'name="csrfToken"' in page(server, "other.com", secure=False)  # stock again
