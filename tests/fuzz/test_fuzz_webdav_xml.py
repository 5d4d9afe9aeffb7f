"""Fuzz target for WebDAV's XML request bodies (RFC 4918 §14: ``propfind``,
``propertyupdate``, ``lockinfo``), end to end: the bodies are read by the
HTTP handlers themselves, so the target sends them to a real ``waypost
serve`` over a socket.

Property: any body (the RFC's examples mutated, DTDs, wrong roots, broken
XML, other charsets) with PROPFIND, PROPPATCH or LOCK gets an answer below
500 (400 for what cannot be read), and the server keeps answering.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, mutants, seed_ids, seeds
from tests.support.server import WaypostServer

from waypost.services.container import open_services
from waypost.services.files import AccountFiles

PASSWORD = "dav-fuzz-1"
BODIES = seeds("webdav")
TOKENS = ["<", ">", "</", "/>", "D:", 'xmlns:D="DAV:"', "DAV:", "prop", "propfind", "allprop",
          "propname", "set", "remove", "lockinfo", "lockscope", "exclusive", "shared",
          "locktype", "write", "owner", "href", "&lol;", "<!DOCTYPE x>", "<![CDATA[", "]]>",
          '"', "'", "=", " ", "\x00", "\xff", "é", "&#0;", "&#x10FFFF;"]
METHODS = st.sampled_from([("PROPFIND", "/~alice/docs/"), ("PROPFIND", "/~alice/docs/a.html"),
                           ("PROPPATCH", "/~alice/docs/a.html"), ("LOCK", "/~alice/docs/b.html")])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("davfuzz") / "var"
    server = WaypostServer(data).init()
    svc = open_services(data)
    try:
        svc.directory.create_account("alice", PASSWORD)
        svc.set_setting("LoginFailureLimit", "0")
        files = AccountFiles(svc)
        files.mkdir("alice@main.dom", "docs")
        files.write_bytes("alice@main.dom", "docs/a.html", b"<p>a</p>")
    finally:
        svc.close()
    server.start()
    auth = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    try:
        with httpx.Client(base_url=server.url(), timeout=30,
                          headers={"Host": "main.dom", "Authorization": auth}) as c:
            yield c
    finally:
        server.stop()


def check(client: httpx.Client, method: str, path: str, body: bytes) -> None:
    answer = client.request(method, path, content=body, headers={"Depth": "1",
                                                                 "Content-Type": "text/xml"})
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert client.request("PROPFIND", "/~alice/docs/a.html",
                          headers={"Depth": "0"}).status_code == 207


@pytest.mark.parametrize("body", BODIES, ids=seed_ids(BODIES))
def test_body_seeds(client: httpx.Client, body: bytes) -> None:
    for method, path in (("PROPFIND", "/~alice/docs/"), ("PROPPATCH", "/~alice/docs/a.html")):
        check(client, method, path, body)


@TARGET
@given(METHODS, mutants(BODIES, TOKENS))
def test_bodies(client: httpx.Client, target: tuple[str, str], body: bytes) -> None:
    check(client, *target, body)


@pytest.mark.parametrize("encoding", ["proputf-8", "rot13", "base64"])
def test_an_unknown_xml_encoding_is_a_bad_request(client: httpx.Client, encoding: str) -> None:
    """Found by test_bodies: expat's LookupError for the encoding named in
    the XML declaration answered 500."""
    body = f'<?xml version="1.0" encoding="{encoding}"?><D:propfind xmlns:D="DAV:"/>'.encode()
    answer = client.request("PROPFIND", "/~alice/docs/", content=body, headers={"Depth": "0"})
    assert answer.status_code == 400, answer.text[:300]
