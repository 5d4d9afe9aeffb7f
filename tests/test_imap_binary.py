"""BINARY (RFC 3516; part of IMAP4rev2, RFC 9051 §6.4.5) over real sockets:
``FETCH BINARY[section]<partial>``, ``BINARY.PEEK``, ``BINARY.SIZE`` with the
content decoded from base64 and quoted-printable, ``~{n}`` when it holds NUL,
``NO [UNKNOWN-CTE]`` for an encoding that cannot be decoded, and APPEND of
literal8 data (NUL allowed) that reads back byte for byte."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from tests.support.imap import PW, Raw, tagged
from tests.support.messages import MIXED, crlf
from tests.support.server import WaypostServer

from waypost.protocols.imap import fetch, wire

DOMAIN = "binary.dom"

QP = crlf(
    "Subject: qp",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "Stra=C3=9Fe ist na=",
    "ss=3D",
)
NUL = crlf("Subject: nul", "Content-Transfer-Encoding: base64", "", "AAEC/w==")
LF_TEXT = crlf("Subject: lf", "Content-Transfer-Encoding: base64", "", "b25lCnR3bwp0aHJlZQ==")
UUENCODED = crlf("Subject: uu", "Content-Transfer-Encoding: x-uuencode", "", "begin 644 x", "end")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("binary") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in ("bin", "raw8"):
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def box(server: WaypostServer) -> Iterator[Raw]:
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"bin@{DOMAIN}")
    for message in (MIXED, QP, NUL, UUENCODED, LF_TEXT):
        lines = raw.cmd("a", b"APPEND INBOX {%d+}\r\n%s" % (len(message), message))
        assert tagged(lines).startswith(b"a OK"), lines
    assert tagged(raw.cmd("s", "SELECT INBOX")).startswith(b"s OK [READ-WRITE]")
    yield raw
    raw.close()


def test_binary_decodes_base64_and_quoted_printable(box: Raw) -> None:
    lines = box.cmd("f", "FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.1])")
    assert lines[0] == (
        b"* 1 FETCH (BINARY[2] {9}\r\n%PDF-1.4\n BINARY.SIZE[2] 9 BINARY[1.1] {10}\r\nplain text)"
    )
    decoded = "Straße ist nass=".encode()
    lines = box.cmd("g", "FETCH 2 (BINARY.SIZE[1] BINARY.PEEK[1])")
    assert lines[0] == b"* 2 FETCH (BINARY.SIZE[1] %d BINARY[1] {%d}\r\n%s)" % (
        len(decoded),
        len(decoded),
        decoded,
    )
    assert tagged(lines) == b"g OK FETCH completed"


def test_binary_partial_and_literal8_for_nul(box: Raw) -> None:
    lines = box.cmd("f", "UID FETCH 1 (BINARY.PEEK[2]<1.3>)")
    assert lines[0] == b"* 1 FETCH (UID 1 BINARY[2]<1> {3}\r\nPDF)"
    # literal8 only where the content sent holds NUL (RFC 3516 §4.3)
    lines = box.cmd("g", "FETCH 3 (BINARY.PEEK[1] BINARY.PEEK[1]<1.2> BINARY.SIZE[1])")
    assert lines[0] == (
        b"* 3 FETCH (BINARY[1] ~{4}\r\n\x00\x01\x02\xff BINARY[1]<1> {2}\r\n\x01\x02"
        b" BINARY.SIZE[1] 4)"
    )


def test_binary_sets_seen_and_peek_does_not(box: Raw) -> None:
    lines = box.cmd("f", "FETCH 2 (FLAGS)")
    assert b"\\Seen" not in lines[0]
    lines = box.cmd("g", "FETCH 2 (BINARY[1]<0.4>)")
    assert lines[0] == b"* 2 FETCH (BINARY[1]<0> {4}\r\nStra FLAGS (\\Recent \\Seen))"
    lines = box.cmd("h", "FETCH 1 (BINARY.SIZE[1.1] FLAGS)")
    assert b"\\Seen" not in lines[0]  # BINARY.SIZE reads nothing


def test_unknown_transfer_encoding_is_unknown_cte(box: Raw) -> None:
    lines = box.cmd("f", "FETCH 4 (BINARY.PEEK[1])")
    assert re.match(rb"f NO \[UNKNOWN-CTE\] ", tagged(lines)), lines
    lines = box.cmd("g", "FETCH 4 (BINARY.SIZE[1])")
    assert re.match(rb"g NO \[UNKNOWN-CTE\] ", tagged(lines)), lines
    lines = box.cmd("h", "FETCH 4 (BODY.PEEK[1])")  # BODY still gives it as stored
    assert lines[0] == b"* 4 FETCH (BODY[1] {16}\r\nbegin 644 x\r\nend)"


@pytest.mark.parametrize(
    "items",
    ["BINARY[HEADER]", "BINARY.PEEK[1.MIME]", "BINARY.SIZE[1]<0.1>", "BINARY[1", "BINARY.SIZE"],
)
def test_binary_syntax_errors_are_bad(box: Raw, items: str) -> None:
    assert tagged(box.cmd("b", f"FETCH 1 ({items})")).startswith(b"b BAD ")


def test_append_literal8_round_trips_nul(server: WaypostServer) -> None:
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"raw8@{DOMAIN}")
    body = b"Subject: raw\r\n\r\n\x00\x01binary\xff\x00\r\n"
    raw.send(b"a APPEND INBOX ~{%d}\r\n" % len(body))
    assert raw.line().startswith(b"+")
    raw.send(body + b"\r\n")
    assert tagged(raw.until(b"a")).startswith(b"a OK [APPENDUID ")
    raw.cmd("s", "EXAMINE INBOX")
    lines = raw.cmd("f", "FETCH 1 (BINARY.PEEK[] BINARY.SIZE[] RFC822.SIZE)")
    assert lines[0] == b"* 1 FETCH (BINARY[] ~{%d}\r\n%s BINARY.SIZE[] %d RFC822.SIZE %d)" % (
        len(body),
        body,
        len(body),
        len(body),
    )
    # BODY has no literal8: NUL goes as 0x80, the size stays (as Dovecot does)
    lines = raw.cmd("g", "FETCH 1 (BODY.PEEK[TEXT])")
    assert lines[0] == b"* 1 FETCH (BODY[TEXT] {12}\r\n\x80\x01binary\xff\x80\r\n)"
    raw.close()


def test_binary_text_goes_in_crlf_lines(box: Raw) -> None:
    # base64 of "one\ntwo\nthree": a text part is sent in CRLF lines (RFC 3516 §4.2)
    lines = box.cmd("f", "FETCH 5 (BINARY.SIZE[1] BINARY.PEEK[1])")
    assert lines[0] == b"* 5 FETCH (BINARY.SIZE[1] 15 BINARY[1] {15}\r\none\r\ntwo\r\nthree)"


def _binary_of(message: bytes, item: str, *, leaf_only: bool) -> bytes:
    atts = wire.parse(b"a FETCH 1 " + item.encode()).args.atts
    msg = fetch.FetchMessage(1, 1, (), 0.0, len(message), message)
    return fetch.fetch(atts, msg, leaf_only=leaf_only).response


def test_binary_of_a_non_leaf_part_is_refused_under_rev2() -> None:
    """RFC 9051 §6.4.5: BINARY only of leaf parts (not multipart/*, message/*)."""
    for item in ("BINARY.PEEK[1]", "BINARY.SIZE[1]"):
        with pytest.raises(fetch.FetchError) as info:
            _binary_of(MIXED, item, leaf_only=True)
        assert info.value.code == "CANNOT"
    assert _binary_of(MIXED, "BINARY.PEEK[1.1]", leaf_only=True) == (
        b"* 1 FETCH (BINARY[1.1] {10}\r\nplain text)\r\n"
    )
    # IMAP4rev1 (RFC 3516) gives the body of a multipart part as it is
    assert _binary_of(MIXED, "BINARY.PEEK[1]", leaf_only=False).startswith(
        b"* 1 FETCH (BINARY[1] {"
    )


def test_rev2_session_binary_of_a_non_leaf_part(box: Raw, server: WaypostServer) -> None:
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"bin@{DOMAIN}")
    enabled = raw.cmd("e", "ENABLE IMAP4rev2")[0]
    raw.cmd("s", "EXAMINE INBOX")
    lines = raw.cmd("f", "FETCH 1 (BINARY.PEEK[1])")
    assert enabled == b"* ENABLED IMAP4REV2", enabled
    assert re.match(rb"f NO \[CANNOT\] ", tagged(lines)), lines
    assert tagged(raw.cmd("g", "FETCH 1 (BINARY.PEEK[1.1])")) == b"g OK FETCH completed"
    raw.close()


def test_a_delivery_status_part_is_a_leaf() -> None:
    report = crlf(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B",
        "",
        "--B",
        "Content-Type: message/delivery-status",
        "Content-Transfer-Encoding: base64",
        "",
        "UmVwb3J0aW5nLU1UQTogZG5zOyB4",
        "--B--",
        "",
    )
    assert _binary_of(report, "BINARY.PEEK[1]", leaf_only=True) == (
        b"* 1 FETCH (BINARY[1] {21}\r\nReporting-MTA: dns; x)\r\n"
    )
