"""APPEND extensions over real sockets: MULTIAPPEND (RFC 3502), CATENATE
(RFC 4469) with IMAP URLs (RFC 5092), APPENDLIMIT (RFC 7889), literal8 and
UTF8 data in APPEND (RFC 3516 §4.4, RFC 6855 §4), and durability of a
MULTIAPPEND across ``kill -9``.

One ``waypost serve`` for the module (IMAPMaxLiteral 1M, IMAPMaxCommand
1200K); every test appends into its own account, so counts are exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from tests.support.imap import PW, Raw, tagged
from tests.support.messages import MIXED, NESTED, crlf
from tests.support.server import WaypostServer

DOMAIN = "append.dom"
TIMEOUT = 15
LIMIT = 1024 * 1024
COMMAND_LIMIT = 1200 * 1024
USERS = (
    "amy", "ben", "cat", "dan", "eve", "fay", "gil", "hal", "ian", "jon", "kim", "lou", "max",
)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("append") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in USERS:
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.cli("settings", "set", "IMAPMaxLiteral", "1M")
    srv.cli("settings", "set", "IMAPMaxCommand", "1200K")
    srv.start()
    yield srv
    srv.stop()


def login(server: WaypostServer, user: str) -> Raw:
    raw = Raw(server.port("IMAPPort"))
    raw.login(f"{user}@{DOMAIN}")
    return raw


def sync_append(
    raw: Raw, tag: str, head: bytes, messages: list[tuple[bytes, bytes]]
) -> list[bytes]:
    """APPEND with synchronizing literals: ``head`` (``APPEND box``), then each
    (options, data); waits for every ``+`` as a client must."""
    line = tag.encode() + b" " + head
    for i, (opts, data) in enumerate(messages):
        line += (b" " + opts if opts else b"") + b" {%d}\r\n" % len(data)
        raw.send(line)
        answer = raw.line()
        assert answer.startswith(b"+"), answer
        line = data
        if i == len(messages) - 1:
            line += b"\r\n"
    raw.send(line)
    return raw.until(tag.encode())


def count(raw: Raw, mailbox: str = "INBOX") -> int:
    lines = raw.cmd("st", f"STATUS {mailbox} (MESSAGES)")
    m = re.search(rb"MESSAGES (\d+)", lines[0])
    assert m is not None, lines
    return int(m.group(1))


def fetch_bodies(raw: Raw, mailbox: str = "INBOX") -> list[bytes]:
    raw.cmd("sel", f"EXAMINE {mailbox}")
    lines = raw.cmd("fb", "FETCH 1:* (BODY.PEEK[])")
    out = []
    for line in lines[:-1]:
        head, _, rest = line.partition(b"}\r\n")
        assert head.startswith(b"* ") and rest.endswith(b")"), line
        out.append(rest[:-1])
    return out


def uidvalidity(raw: Raw, mailbox: str = "INBOX") -> int:
    lines = raw.cmd("uv", f"STATUS {mailbox} (UIDVALIDITY)")
    m = re.search(rb"UIDVALIDITY (\d+)", lines[0])
    assert m is not None
    return int(m.group(1))


# -- capabilities ------------------------------------------------------------------------


def test_capabilities_advertise_the_extensions(server: WaypostServer) -> None:
    raw = Raw(server.port("IMAPPort"))
    before = raw.cmd("c", "CAPABILITY")[0].split()
    raw.login(f"amy@{DOMAIN}")
    after = raw.cmd("c", "CAPABILITY")[0].split()
    for caps in (before, after):
        for name in (b"MULTIAPPEND", b"CATENATE", b"BINARY", b"APPENDLIMIT=%d" % LIMIT):
            assert name in caps, caps
    raw.close()


# -- MULTIAPPEND -------------------------------------------------------------------------


def test_multiappend_stores_all_with_one_appenduid(server: WaypostServer) -> None:
    raw = login(server, "amy")
    bodies = [crlf(f"Subject: multi {i}", "", f"body {i}", "") for i in range(3)]
    lines = sync_append(
        raw,
        "a",
        b"APPEND INBOX",
        [
            (b"(\\Seen)", bodies[0]),
            (b'(\\Flagged $Work) "17-Jul-1996 02:44:25 -0700"', bodies[1]),
            (b"", bodies[2]),
        ],
    )
    valid = uidvalidity(raw)
    assert tagged(lines) == b"a OK [APPENDUID %d 1:3] APPEND completed" % valid
    assert fetch_bodies(raw) == bodies
    lines = raw.cmd("f", "FETCH 1:3 (UID FLAGS INTERNALDATE)")
    assert lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) INTERNALDATE "), lines
    assert lines[1] == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged $Work \\Recent)"
        b' INTERNALDATE "17-Jul-1996 09:44:25 +0000")'  # stored in UTC
    )
    assert lines[2].startswith(b"* 3 FETCH (UID 3 FLAGS (\\Recent) INTERNALDATE "), lines
    # LITERAL+ and literal8 in the same command
    lines = raw.cmd("b", b"APPEND INBOX {3+}\r\nx\r\n ~{4+}\r\ny\x00\r\n")
    assert tagged(lines) == b"b OK [APPENDUID %d 4:5] APPEND completed" % valid
    raw.close()


def test_multiappend_is_all_or_nothing(server: WaypostServer) -> None:
    raw = login(server, "ben")
    good = crlf("Subject: good", "", "x", "")
    # an empty second message: NO, the first is not stored either
    lines = raw.cmd("a", b"APPEND INBOX {%d+}\r\n%s {0+}\r\n" % (len(good), good))
    assert tagged(lines).startswith(b"a NO "), lines
    # a NUL in a plain literal (literal8 is the way): BAD, nothing stored
    lines = raw.cmd("b", b"APPEND INBOX {%d+}\r\n%s {3+}\r\na\x00b" % (len(good), good))
    assert tagged(lines).startswith(b"b BAD "), lines
    # an unresolvable CATENATE URL in the third message
    lines = raw.cmd(
        "c",
        b'APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s CATENATE (URL "/INBOX/;UID=99")'
        % (len(good), good, len(good), good),
    )
    assert tagged(lines) == b"c NO [BADURL /INBOX/;UID=99] CATENATE URL cannot be resolved"
    # a second literal over the limit is refused before it is sent; nothing stored
    raw.send(b"d APPEND INBOX {%d}\r\n" % len(good))
    assert raw.line().startswith(b"+")
    raw.send(good + b" {%d}\r\n" % (LIMIT + 1))
    answer = raw.line()
    assert answer == b"d NO [TOOBIG] Literal too large (%d octets, at most %d)" % (LIMIT + 1, LIMIT)
    assert count(raw) == 0
    # the connection goes on
    lines = raw.cmd("e", b"APPEND INBOX {%d+}\r\n%s" % (len(good), good))
    assert tagged(lines).startswith(b"e OK [APPENDUID "), lines
    assert count(raw) == 1
    raw.close()


def test_multiappend_whole_command_is_bounded(server: WaypostServer) -> None:
    raw = login(server, "cat")
    big = b"Subject: big\r\n\r\n" + b"y" * (700 * 1024) + b"\r\n"
    raw.send(b"a APPEND INBOX {%d}\r\n" % len(big))
    assert raw.line().startswith(b"+")
    raw.send(big + b" {%d}\r\n" % len(big))  # each fits APPENDLIMIT, both do not fit 1200K
    answer = raw.line()
    assert answer.startswith(b"a NO [TOOBIG] Command too large"), answer
    assert count(raw) == 0
    raw.close()


def test_multiappend_is_durable_before_ok(tmp_path: Path) -> None:
    srv = WaypostServer(tmp_path / "var").init()
    srv.cli("domain", "add", DOMAIN)
    srv.cli("account", "add", f"dur@{DOMAIN}", "--password", PW)
    srv.start()
    try:
        raw = Raw(srv.port("IMAPPort"))
        raw.login(f"dur@{DOMAIN}")
        bodies = [crlf(f"Subject: survive {i}", "", "durable " * (50 + i), "") for i in range(3)]
        lines = sync_append(raw, "a", b"APPEND INBOX", [(b"(\\Flagged)", b) for b in bodies])
        assert tagged(lines).startswith(b"a OK [APPENDUID "), lines
        srv.kill()  # no chance to flush anything after the OK
        srv.start()
        raw = Raw(srv.port("IMAPPort"))
        raw.login(f"dur@{DOMAIN}")
        assert fetch_bodies(raw) == bodies
        lines = raw.cmd("f", "FETCH 1:* (FLAGS)")
        assert sum(b"\\Flagged" in line for line in lines) == 3
        raw.close()
    finally:
        srv.stop()


def test_multiappend_into_the_selected_mailbox_and_shared_ones(server: WaypostServer) -> None:
    owner = login(server, "kim")
    owner.cmd("c", "CREATE drop")
    owner.cmd("c2", "CREATE look")
    assert tagged(owner.cmd("a1", f"SETACL drop lou@{DOMAIN} lri")).startswith(b"a1 OK")
    assert tagged(owner.cmd("a2", f"SETACL look lou@{DOMAIN} lr")).startswith(b"a2 OK")
    raw = login(server, "lou")
    one, two = crlf("Subject: 1", "", "x", ""), crlf("Subject: 2", "", "y", "")
    two_messages = b"(\\Seen \\Flagged) {%d+}\r\n%s (\\Deleted $Kw) {%d+}\r\n%s" % (
        len(one),
        one,
        len(two),
        two,
    )
    # i but neither s, w nor t: stored, the flags the user may not set dropped
    lines = raw.cmd("d", b'APPEND "~kim@%s/drop" ' % DOMAIN.encode() + two_messages)
    assert re.match(rb"d OK \[APPENDUID \d+ 1:2\]", tagged(lines)), lines
    owner.cmd("e", "EXAMINE drop")
    assert owner.cmd("f", "FETCH 1:* (FLAGS)")[:2] == [
        b"* 1 FETCH (FLAGS (\\Recent))",
        b"* 2 FETCH (FLAGS (\\Recent))",
    ]
    # no i: NOPERM, nothing stored
    lines = raw.cmd("g", b'APPEND "~kim@%s/look" ' % DOMAIN.encode() + two_messages)
    assert tagged(lines).startswith(b"g NO [NOPERM]"), lines
    assert count(owner, "look") == 0
    # into the selected mailbox: EXISTS before the tagged OK
    raw.cmd("s", "SELECT INBOX")
    lines = raw.cmd("h", b"APPEND INBOX " + two_messages)
    assert b"* 2 EXISTS" in lines and tagged(lines).startswith(b"h OK [APPENDUID "), lines
    # the new keyword is announced before anything could show it (RFC 3501 §7.2.6)
    assert lines.index(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Kw)") < lines.index(
        b"* 2 EXISTS"
    ), lines
    raw.close()
    owner.close()


# -- CATENATE ----------------------------------------------------------------------------


def _source(raw: Raw, mailbox: str = "INBOX", message: bytes = MIXED) -> tuple[int, int]:
    lines = raw.cmd("src", b"APPEND %s {%d+}\r\n%s" % (mailbox.encode(), len(message), message))
    m = re.match(rb"src OK \[APPENDUID (\d+) (\d+)\]", tagged(lines))
    assert m is not None, lines
    return int(m.group(1)), int(m.group(2))


def test_catenate_builds_from_text_and_urls(server: WaypostServer) -> None:
    raw = login(server, "dan")
    valid, uid = _source(raw)
    header = crlf("Subject: built", "Content-Type: text/plain", "", "")
    url1 = f"/INBOX;UIDVALIDITY={valid}/;UID={uid}/;SECTION=1.1"
    url2 = f"imap://dan@{DOMAIN}/INBOX/;UID={uid}/;SECTION=HEADER.FIELDS%20(SUBJECT)"
    url3 = f"imap://{DOMAIN}:143/INBOX/;UID={uid}/;SECTION=2/;PARTIAL=2.4"
    lines = raw.cmd(
        "a",
        b'APPEND INBOX (\\Draft) CATENATE (TEXT {%d+}\r\n%s URL "%s" TEXT {2+}\r\n\r\n'
        b' URL "%s" URL %s)' % (len(header), header, url1.encode(), url2.encode(), url3.encode()),
    )
    assert tagged(lines) == b"a OK [APPENDUID %d %d] APPEND completed" % (valid, uid + 1)
    built = fetch_bodies(raw)[-1]
    assert (
        built == header + b"plain text" + b"\r\n" + b"Subject: report\r\n\r\n" + b"BERi"
    )  # JVBERi0x...[2:6]
    lines = raw.cmd("f", f"FETCH {uid + 1} (FLAGS)")
    assert lines[0] == b"* %d FETCH (FLAGS (\\Draft \\Recent))" % (uid + 1)
    # the whole message (no section) and a nested message's header
    _, nested = _source(raw, "INBOX", NESTED)
    lines = raw.cmd(
        "b",
        f"APPEND INBOX CATENATE (URL /INBOX/;UID={uid} URL /INBOX/;UID={nested}/;SECTION=2.HEADER)",
    )
    assert tagged(lines).startswith(b"b OK [APPENDUID "), lines
    assert fetch_bodies(raw)[-1] == MIXED + crlf(
        "From: Inner <inner@example.com>",
        "Subject: inner subject",
        "Content-Type: multipart/mixed; boundary=Y",
        "",
        "",
    )
    raw.close()


def test_catenate_inside_multiappend(server: WaypostServer) -> None:
    raw = login(server, "eve")
    valid, uid = _source(raw)
    plain = crlf("Subject: plain", "", "p", "")
    lines = raw.cmd(
        "a",
        b"APPEND INBOX {%d+}\r\n%s CATENATE (URL /INBOX/;UID=%d/;SECTION=1.2 TEXT {2+}\r\n!!)"
        b" (\\Seen) CATENATE (TEXT {%d+}\r\n%s)" % (len(plain), plain, uid, len(plain), plain),
    )
    assert tagged(lines) == b"a OK [APPENDUID %d 2:4] APPEND completed" % valid
    assert fetch_bodies(raw)[1:] == [plain, b"<b>html</b>!!", plain]
    raw.close()


def test_catenate_badurl_says_nothing_about_other_mailboxes(server: WaypostServer) -> None:
    owner = login(server, "fay")
    _, uid = _source(owner)
    owner.cmd("c", "CREATE secret")
    owner.cmd("c2", "CREATE shown")
    _source(owner, "secret")
    _source(owner, "shown")
    assert tagged(owner.cmd("acl", f"SETACL shown gil@{DOMAIN} l")).startswith(b"acl OK")
    owner.close()

    raw = login(server, "gil")
    valid, mine = _source(raw)
    urls = [
        f"/INBOX/;UID={mine + 7}",  # no such message
        f"/INBOX;UIDVALIDITY={valid + 1}/;UID={mine}",  # UIDVALIDITY changed
        f"/INBOX/;UID={mine}/;SECTION=9",  # no such part
        "/Nothing/;UID=1",  # no such mailbox
        f"/~fay@{DOMAIN}/INBOX/;UID={uid}",  # not shared at all
        f"/~fay@{DOMAIN}/secret/;UID=1",
        f"/~fay@{DOMAIN}/shown/;UID=1",  # may look it up, not read it
        f"imap://fay@{DOMAIN}/INBOX/;UID={uid}",  # another user's URL
        f"imap://elsewhere.example/INBOX/;UID={mine}",  # another server
        f"imap://gil@{DOMAIN}/INBOX/;UID={mine};URLAUTH=anonymous:internal:abc",
        "INBOX/;UID=1",  # not server-relative
        f"/INBOX/;UID={mine}/;SECTION=1.MIME.TEXT",
    ]
    answers = set()
    for i, url in enumerate(urls):
        lines = raw.cmd(f"u{i}", f'APPEND INBOX CATENATE (URL "{url}")')
        assert tagged(lines).startswith(f"u{i} NO [BADURL {url}] ".encode()), (url, lines)
        answers.add(tagged(lines).split(b"] ", 1)[1])
    assert answers == {b"CATENATE URL cannot be resolved"}
    assert count(raw) == 1
    raw.close()


def test_catenate_over_the_limit_is_toobig(server: WaypostServer) -> None:
    raw = login(server, "hal")
    big = b"Subject: big\r\n\r\n" + b"z" * (600 * 1024) + b"\r\n"
    _, uid = _source(raw, "INBOX", big)
    lines = raw.cmd("a", f"APPEND INBOX CATENATE (URL /INBOX/;UID={uid} URL /INBOX/;UID={uid})")
    assert tagged(lines).startswith(b"a NO [TOOBIG] CATENATE result too large"), lines
    assert count(raw) == 1
    raw.close()


def test_catenate_syntax_errors_are_bad(server: WaypostServer) -> None:
    raw = login(server, "ian")
    for i, text in enumerate(
        [
            "APPEND INBOX CATENATE ()",
            "APPEND INBOX CATENATE (FOO /INBOX/;UID=1)",
            "APPEND INBOX CATENATE (URL)",
            "APPEND INBOX CATENATE URL /INBOX/;UID=1",
            "APPEND INBOX CATENATE (URL /INBOX/;UID=1",
        ]
    ):
        assert tagged(raw.cmd(f"s{i}", text)).startswith(f"s{i} BAD ".encode())
    assert tagged(raw.cmd("n", "NOOP")) == b"n OK NOOP completed"
    raw.close()


def test_catenate_to_a_missing_mailbox_is_trycreate(server: WaypostServer) -> None:
    raw = login(server, "ian")
    _, uid = _source(raw)
    lines = raw.cmd("a", f"APPEND Missing CATENATE (URL /INBOX/;UID={uid})")
    assert tagged(lines).startswith(b"a NO [TRYCREATE]"), lines
    raw.close()


# -- APPENDLIMIT ---------------------------------------------------------------------------


def test_appendlimit_status_and_toobig_before_the_literal(server: WaypostServer) -> None:
    raw = login(server, "jon")
    lines = raw.cmd("s", "STATUS INBOX (APPENDLIMIT MESSAGES)")
    assert lines[0] == b'* STATUS "INBOX" (APPENDLIMIT NIL MESSAGES 0)'
    raw.send(b"a APPEND INBOX {%d}\r\n" % (LIMIT + 1))
    assert raw.line() == b"a NO [TOOBIG] Literal too large (%d octets, at most %d)" % (
        LIMIT + 1,
        LIMIT,
    )
    exact = b"Subject: x\r\n\r\n" + b"x" * (LIMIT - 16)
    assert len(exact) == LIMIT - 2
    lines = sync_append(raw, "b", b"APPEND INBOX", [(b"", exact)])
    assert tagged(lines).startswith(b"b OK [APPENDUID "), lines
    raw.close()


# -- UTF8 ----------------------------------------------------------------------------------


def test_append_utf8_needs_enable(server: WaypostServer) -> None:
    raw = login(server, "kim")
    body = "Subject: Grüße\r\n\r\nStraße\r\n".encode()
    lines = raw.cmd("a", b"APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(body), body))
    assert tagged(lines).startswith(b"a BAD "), lines
    assert count(raw) == 0
    lines = raw.cmd("b", b"APPEND INBOX UTF8 ({%d+}\r\n%s)" % (len(body), body))
    assert tagged(lines).startswith(b"b BAD "), lines  # UTF8 takes a literal8
    raw.close()


def test_append_utf8_after_enable(server: WaypostServer) -> None:
    raw = login(server, "lou")
    enabled = raw.cmd("e", "ENABLE UTF8=ACCEPT")
    body = "Subject: Grüße\r\n\r\nStraße\r\n".encode()
    lines = raw.cmd("a", b"APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(body), body))
    assert enabled[0] == b"* ENABLED UTF8=ACCEPT", enabled
    assert tagged(lines).startswith(b"a OK [APPENDUID "), lines
    assert fetch_bodies(raw)[-1] == body
    raw.close()


def test_catenate_url_may_name_the_address_the_client_reached(server: WaypostServer) -> None:
    raw = login(server, "eve")
    _, uid = _source(raw)
    port = server.port("IMAPPort")
    lines = raw.cmd("a", f"APPEND INBOX CATENATE (URL imap://127.0.0.1:{port}/INBOX/;UID={uid})")
    assert tagged(lines).startswith(b"a OK [APPENDUID "), lines
    assert fetch_bodies(raw)[-1] == MIXED
    lines = raw.cmd("b", f"APPEND INBOX CATENATE (URL imap://127.0.0.2/INBOX/;UID={uid})")
    assert tagged(lines).startswith(b"b NO [BADURL "), lines
    raw.close()


def test_imapclient_multiappend_and_list_status(server: WaypostServer) -> None:
    """A real client's MULTIAPPEND (imapclient sends every literal synchronizing)."""
    client = IMAPClient("127.0.0.1", port=server.port("IMAPPort"), ssl=False, timeout=TIMEOUT)
    client.login(f"max@{DOMAIN}", PW)
    assert b"MULTIAPPEND" in client.capabilities()
    when = datetime(2024, 2, 29, 12, 0, 0, tzinfo=UTC)
    msgs = [
        crlf("Subject: one", "", "1", ""),
        {"msg": crlf("Subject: two", "", "2", ""), "flags": [b"\\Answered"], "date": when},
    ]
    typ, answer = client.multiappend("INBOX", msgs)
    assert typ == "OK" and re.fullmatch(rb"\[APPENDUID \d+ 1:2\] APPEND completed", answer[0])
    client.select_folder("INBOX", readonly=True)
    got = client.fetch([1, 2], ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"])
    assert [got[n][b"BODY[]"] for n in (1, 2)] == [msgs[0], msgs[1]["msg"]]
    assert b"\\Answered" in got[2][b"FLAGS"]
    assert got[2][b"INTERNALDATE"].astimezone(UTC) == when
    # LIST-STATUS carries the item too (RFC 5819 with RFC 7889)
    typ, _ = client._imap._simple_command(
        "LIST", '""', "INBOX", "RETURN", "(STATUS (APPENDLIMIT MESSAGES))"
    )
    assert typ == "OK"
    status = client._imap.untagged_responses.pop("STATUS", [])
    assert status == [b'"INBOX" (APPENDLIMIT NIL MESSAGES 2)'], status
    client.logout()


def test_concurrent_multiappends_each_get_one_run_of_uids(server: WaypostServer) -> None:
    """Each MULTIAPPEND is one transaction: its UIDs are consecutive, even
    while other sessions append to the same mailbox at the same time."""
    sessions = [login(server, "max") for _ in range(4)]
    assert tagged(sessions[0].cmd("c", "CREATE Concurrent")) == b"c OK CREATE completed"
    message = crlf("Subject: c", "", "c", "")
    five = b" ".join(b"{%d+}\r\n%s" % (len(message), message) for _ in range(5))
    for i, raw in enumerate(sessions):
        raw.send(b"m%d APPEND Concurrent %s\r\n" % (i, five))
    runs = []
    for i, raw in enumerate(sessions):
        lines = raw.until(b"m%d" % i)
        m = re.match(rb"m\d OK \[APPENDUID \d+ (\d+):(\d+)\] ", tagged(lines))
        assert m is not None, lines
        first, last = int(m.group(1)), int(m.group(2))
        assert last - first == 4
        runs.append(range(first, last + 1))
        raw.close()
    assert sorted(uid for run in runs for uid in run) == list(range(1, 21))
