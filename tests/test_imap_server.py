"""The IMAP server over real sockets: a ``waypost serve`` process, spoken to
with imaplib, imapclient and raw sockets.

Logins (every name form, SASL PLAIN, TLS), SELECT/EXAMINE, FETCH of every
item on messages delivered by SMTP and by APPEND, SEARCH, STORE, COPY,
MOVE, EXPUNGE with the UIDPLUS codes, APPEND durability across ``kill -9``,
sessions that see each other's changes (also in IDLE), LIST/LSUB, ACLs and
foreign mailboxes, mailbox aliases, administrators, and every kind of bad
input (each answered BAD or NO; the connection stays usable where the RFC
allows, nothing hangs: every socket read has a timeout).

One server for the module; tests that change a mailbox use their own
account, and the few failed logins come from their own loopback addresses,
so the login guard never locks out another test.
"""

from __future__ import annotations

import imaplib
import itertools
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.response_types import BodyData
from tests.support.imap import Raw, append_cmd, tagged
from tests.support.messages import MIXED, NESTED, crlf
from tests.support.server import WaypostServer

PW = "imap-pw-1234"
DOMAIN = "domain.dom"
TIMEOUT = 15
_ips = itertools.count(20)

USERS = (
    "alice", "bob", "carol", "dave", "erin", "frank", "gus", "henry", "ivan", "judy",
    "marketing", "john", "mallory", "kate", "leo",
)  # fmt: skip

UTF8_MESSAGE = crlf(
    "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>",
    "To: bob@domain.dom",
    "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_Z=C3=BCrich?=",
    "Date: Tue, 02 Jan 2024 10:00:00 +0100",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "Die Stra=C3=9Fe ist nass, sagt der B=C3=A4cker.",
    "",
)

BROKEN_MIME = crlf(
    "From: broken@example.com",
    "Subject: broken MIME",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="never-closed"',
    "this header line has no colon",
    "",
    "preamble",
    "--never-closed",
    "Content-Type: text/plain; charset=bogus-charset",
    "Content-Transfer-Encoding: base64",
    "",
    "!!!not base64 at all***",
    "--never-closed",
    "Content-Type: message/rfc822",
    "",
    "garbage without a header end",
    "--never-closed",
    "Content-Type: multipart/alternative",  # no boundary at all
    "",
    "text of a multipart without boundary",
    "",
)


def new_ip() -> str:
    return f"127.0.0.{next(_ips)}"


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class IMAPFrom(imaplib.IMAP4):
    """imaplib.IMAP4 from a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


# -- the server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("imap") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in USERS:
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.cli("alias", "add", f"fred@{DOMAIN}", f"frank@{DOMAIN}")
    srv.cli("account", "set", f"henry@{DOMAIN}", "AccessModes", "Mail,POP")
    srv.cli("account", "add", f"boss@{srv.domain}", "--password", PW)
    srv.cli("account", "rights", f"boss@{srv.domain}", "AllDomains", "CanAccessMailboxes")
    srv.cli("account", "add", f"helper@{srv.domain}", "--password", PW)
    srv.cli("account", "rights", f"helper@{srv.domain}", "AllDomains")
    srv.cli("settings", "set", "IMAPMaxLiteral", "1M")
    srv.cli("settings", "set", "IMAPMaxLine", "8K")
    srv.start()
    yield srv
    srv.stop()


def port(server: WaypostServer) -> int:
    return server.port("IMAPPort")


def client(server: WaypostServer, user: str, source: str = "127.0.0.1") -> IMAPFrom:
    imap = IMAPFrom(port(server), source)
    imap.login(f"{user}@{DOMAIN}" if "@" not in user else user, PW)
    return imap


def iclient(server: WaypostServer, user: str) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=port(server), ssl=False, timeout=TIMEOUT)
    c.login(f"{user}@{DOMAIN}" if "@" not in user else user, PW)
    return c


def deliver(server: WaypostServer, rcpt: str, data: bytes, sender: str = "x@example.com") -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp, timeout=TIMEOUT) as smtp:
        smtp.sendmail(sender, [rcpt], data)


def message_count(server: WaypostServer, user: str, mailbox: str = "INBOX") -> int:
    imap = client(server, user)
    try:
        typ, data = imap.status(mailbox, "(MESSAGES)")
        assert typ == "OK", data
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    finally:
        imap.logout()


def wait_messages(server: WaypostServer, user: str, count: int) -> None:
    server.wait_for(lambda: message_count(server, user) >= count, what=f"{count} in {user}")


def ok(result: tuple[str, list]) -> list:
    typ, data = result
    assert typ == "OK", data
    return data


# -- logins ----------------------------------------------------------------------------------


def test_login_forms_route_through_the_router(server: WaypostServer) -> None:
    # '%' is a list wildcard, not an atom character: clients quote such names
    for login in (f"frank@{DOMAIN}", f'"frank%{DOMAIN}"', f"fred@{DOMAIN}"):
        imap = IMAPFrom(port(server))
        typ, data = imap.login(login, PW)
        assert typ == "OK" and b"CAPABILITY" in data[0], (login, data)
        ok(imap.select("INBOX"))
        imap.logout()


def test_wrong_password_and_access_modes(server: WaypostServer) -> None:
    ip = new_ip()
    imap = IMAPFrom(port(server), ip)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(f"gus@{DOMAIN}", "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(f"nobody@{DOMAIN}", PW)
    imap.logout()
    imap = IMAPFrom(port(server), new_ip())
    with pytest.raises(imaplib.IMAP4.error, match="not enabled"):
        imap.login(f"henry@{DOMAIN}", PW)  # AccessModes without IMAP
    imap.logout()


def test_authenticate_plain_with_and_without_initial_response(server: WaypostServer) -> None:
    imap = IMAPFrom(port(server))
    # imaplib sends the response after the "+" continuation
    typ, _ = imap.authenticate("PLAIN", lambda _: f"\0frank@{DOMAIN}\0{PW}".encode())
    assert typ == "OK"
    imap.logout()
    raw = Raw(port(server))
    import base64

    token = base64.b64encode(f"\0frank@{DOMAIN}\0{PW}".encode()).decode()
    assert tagged(raw.cmd("a", f"AUTHENTICATE PLAIN {token}")).startswith(b"a OK")
    assert tagged(raw.cmd("b", "SELECT INBOX")).startswith(b"b OK")
    raw.close()
    raw = Raw(port(server))
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"*\r\n")
    assert tagged(raw.until(b"a")).startswith(b"a BAD")  # cancelled
    assert tagged(raw.cmd("b", "AUTHENTICATE CRAM-MD5")).startswith(b"b NO")
    raw.close()


def test_capability_and_tls(server: WaypostServer) -> None:
    imap = IMAPFrom(port(server))
    caps = set(imap.capabilities)
    for cap in (
        "IMAP4REV1",
        "LITERAL+",
        "SASL-IR",
        "ID",
        "ENABLE",
        "IDLE",
        "NAMESPACE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "UNSELECT",
        "ACL",
        "RIGHTS=TEXK",
        "CHILDREN",
        "LIST-EXTENDED",
        "STARTTLS",
        "AUTH=PLAIN",
    ):
        assert cap in caps, cap
    typ, data = imap.starttls(unverified())
    assert typ == "OK"
    assert "STARTTLS" not in imap.capabilities
    imap.login(f"frank@{DOMAIN}", PW)
    typ, data = imap.capability()
    assert "STARTTLS" not in data[0].decode() and "AUTH=PLAIN" not in data[0].decode()
    imap.logout()
    imaps = imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("IMAPSPort"), ssl_context=unverified(), timeout=TIMEOUT
    )
    assert "STARTTLS" not in imaps.capabilities
    imaps.login(f"frank@{DOMAIN}", PW)
    ok(imaps.select("INBOX"))
    imaps.logout()


def test_starttls_refuses_pipelined_plaintext(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.send(b"a STARTTLS\r\nb NOOP\r\n")
    lines = raw.until(b"a")
    assert tagged(lines).startswith(b"a BAD")
    assert tagged(raw.cmd("c", "NOOP")).startswith(b"c OK")
    raw.close()


# -- SELECT, FETCH -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(server: WaypostServer) -> dict[str, object]:
    """alice's INBOX: a multipart by SMTP, a nested one and a plain one by APPEND."""
    deliver(server, f"alice@{DOMAIN}", MIXED)
    wait_messages(server, "alice", 1)
    imap = client(server, "alice")
    when = imaplib.Time2Internaldate(time.mktime((2023, 5, 17, 12, 30, 15, 0, 0, -1)))
    plain = crlf("From: me@example.com", "Subject: appended", "", "just text", "")
    appended = [
        ok(imap.append("INBOX", None, when, NESTED)),
        ok(imap.append("INBOX", r"(\Flagged $Label1)", None, plain)),
        ok(imap.append("INBOX", None, None, BROKEN_MIME)),
    ]
    imap.logout()
    return {"appended": appended, "plain": plain}


def test_select_and_examine_responses(server: WaypostServer, alice: dict) -> None:
    raw = Raw(port(server))
    raw.login(f"alice@{DOMAIN}")
    lines = raw.cmd("s", "SELECT INBOX")
    text = b"\n".join(lines)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)" in text
    assert re.search(rb"\* OK \[PERMANENTFLAGS \([^)]*\\\*\)\]", text)
    assert b"* 4 EXISTS" in text
    assert re.search(rb"\* \d+ RECENT", text)
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", text)
    assert b"* OK [UIDNEXT 5]" in text
    assert b"* OK [UNSEEN 1]" in text
    assert lines[-1].startswith(b"s OK [READ-WRITE]")
    lines = raw.cmd("e", "EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()]" in b"\n".join(lines)
    assert lines[-1].startswith(b"e OK [READ-ONLY]")
    # EXAMINE never changes anything
    assert tagged(raw.cmd("f", "STORE 1 +FLAGS (\\Seen)")).startswith(b"f NO")
    lines = raw.cmd("g", "FETCH 1 BODY[TEXT]")
    assert b"\\Seen" not in b"\n".join(lines)
    assert tagged(raw.cmd("h", "EXPUNGE")).startswith(b"h NO")
    assert tagged(raw.cmd("i", "SELECT nonexistent")).startswith(b"i NO [NONEXISTENT]")
    assert tagged(raw.cmd("j", "FETCH 1 FLAGS")).startswith(b"j BAD")  # no longer selected
    raw.close()


def test_fetch_every_item(server: WaypostServer, alice: dict) -> None:
    imap = client(server, "alice")
    ok(imap.select("INBOX", readonly=True))
    data = ok(imap.fetch("1", "(RFC822.SIZE BODY.PEEK[])"))
    whole = data[0][1]
    assert whole.endswith(MIXED)  # Return-Path and Received were prepended at delivery
    assert int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1)) == len(whole)
    header = ok(imap.fetch("1", "(BODY.PEEK[HEADER])"))[0][1]
    text = ok(imap.fetch("1", "(BODY.PEEK[TEXT])"))[0][1]
    assert header + text == whole
    assert ok(imap.fetch("1", "(RFC822.HEADER)"))[0][1] == header
    assert ok(imap.fetch("1", "(RFC822.TEXT)"))[0][1] == text
    assert ok(imap.fetch("1", "(BODY.PEEK[]<10.20>)"))[0][1] == whole[10:30]
    assert b"BODY[]<10>" in ok(imap.fetch("1", "(BODY.PEEK[]<10.20>)"))[0][0]
    fields = ok(imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject To)])"))[0][1]
    assert fields == b"To: b@example.com\r\nSubject: report\r\n\r\n"
    nots = ok(imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (Subject)])"))[0][1]
    assert b"Subject" not in nots and b"To: b@example.com" in nots
    part1 = ok(imap.fetch("1", "(BODY.PEEK[1])"))[0][1]
    mime1 = ok(imap.fetch("1", "(BODY.PEEK[1.MIME])"))[0][1]
    assert mime1 + part1 in whole
    assert ok(imap.fetch("1", "(BODY.PEEK[9])"))[0].endswith(b"BODY[9] NIL)")
    # the appended messages come back byte for byte
    for seq, sent in ((2, NESTED), (3, alice["plain"]), (4, BROKEN_MIME)):
        assert ok(imap.fetch(str(seq), "(BODY.PEEK[])"))[0][1] == sent
        assert ok(imap.fetch(str(seq), "(RFC822)"))[0][1] == sent
    date = ok(imap.fetch("2", "(INTERNALDATE)"))[0]
    assert b'INTERNALDATE "17-May-2023' in date
    flags = ok(imap.fetch("3", "(FLAGS UID)"))[0]
    assert b"\\Flagged" in flags and b"$Label1" in flags and b"UID 3" in flags
    uid = ok(imap.uid("FETCH", "2:3", "(FLAGS)"))
    assert [re.search(rb"UID (\d+)", d).group(1) for d in uid] == [b"2", b"3"]
    imap.logout()


def test_fetch_sets_seen_only_without_peek(server: WaypostServer, alice: dict) -> None:
    imap = client(server, "alice")
    ok(imap.select("INBOX"))
    ok(imap.fetch("3", "(BODY.PEEK[TEXT])"))
    assert b"\\Seen" not in ok(imap.fetch("3", "(FLAGS)"))[0]
    data = ok(imap.fetch("3", "(BODY[TEXT])"))
    assert b"\\Seen" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)
    assert b"\\Seen" in ok(imap.fetch("3", "(FLAGS)"))[0]
    ok(imap.store("3", "-FLAGS", "(\\Seen)"))
    imap.logout()


def test_envelope_and_bodystructure_parse_in_imapclient(server: WaypostServer, alice: dict) -> None:
    c = iclient(server, "alice")
    c.select_folder("INBOX", readonly=True)
    result = c.fetch([1, 2, 3, 4], ["ENVELOPE", "BODYSTRUCTURE", "BODY"])
    env = result[1][b"ENVELOPE"]
    assert env.subject == b"report"
    assert env.to[0].mailbox == b"b" and env.to[0].host == b"example.com"
    mixed = result[1][b"BODYSTRUCTURE"]
    assert isinstance(mixed, BodyData) and mixed.is_multipart
    assert mixed[1].lower() == b"mixed"
    nested = result[2][b"BODYSTRUCTURE"]
    assert nested.is_multipart
    broken = result[4][b"BODYSTRUCTURE"]  # malformed MIME still FETCHes
    assert isinstance(broken, BodyData)
    assert result[4][b"ENVELOPE"].subject == b"broken MIME"
    # the cached structure (second FETCH) answers the same
    again = c.fetch([4], ["BODYSTRUCTURE"])[4][b"BODYSTRUCTURE"]
    assert again == broken
    parts = c.fetch([4], ["BODY.PEEK[1]", "BODY.PEEK[2]", "BODY.PEEK[1.MIME]"])[4]
    assert b"!!!not base64" in parts[b"BODY[1]"]
    c.logout()


def test_status(server: WaypostServer, alice: dict) -> None:
    imap = client(server, "alice")
    data = ok(imap.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"))[0]
    assert re.search(rb"MESSAGES 4 RECENT \d+ UIDNEXT 5 UIDVALIDITY \d+ UNSEEN \d+", data)
    typ, data = imap.status("missing", "(MESSAGES)")
    assert typ == "NO"
    imap.logout()


# -- SEARCH -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bob(server: WaypostServer) -> None:
    deliver(server, f"bob@{DOMAIN}", UTF8_MESSAGE)  # 1
    wait_messages(server, "bob", 1)
    imap = client(server, "bob")
    early = imaplib.Time2Internaldate(time.mktime((2020, 1, 10, 12, 0, 0, 0, 0, -1)))
    ok(imap.append("INBOX", r"(\Seen \Answered)", early, MIXED))  # 2
    ok(imap.append("INBOX", r"(\Flagged \Draft $Work)", None, NESTED))  # 3
    big = crlf(
        "From: big@example.com",
        "To: bob@domain.dom",
        "Cc: carol@example.com",
        "Bcc: hidden@example.com",
        "Subject: large one",
        "X-Custom: marker-42",
        "Date: Sun, 05 Mar 2023 08:00:00 +0000",
        "",
        "x" * 5000,
        "",
    )
    ok(imap.append("INBOX", r"(\Deleted)", None, big))  # 4
    imap.logout()


def test_search_every_key(server: WaypostServer, bob: None) -> None:
    c = iclient(server, "bob")
    c.select_folder("INBOX")

    def s(*criteria: object) -> list[int]:
        return sorted(c.search(list(criteria)))

    assert s("ALL") == [1, 2, 3, 4]
    assert s("SEEN") == [2] and s("UNSEEN") == [1, 3, 4]
    assert s("ANSWERED") == [2] and s("UNANSWERED") == [1, 3, 4]
    assert s("FLAGGED") == [3] and s("UNFLAGGED") == [1, 2, 4]
    assert s("DRAFT") == [3] and s("UNDRAFT") == [1, 2, 4]
    assert s("DELETED") == [4] and s("UNDELETED") == [1, 2, 3]
    assert s("KEYWORD", "$Work") == [3] and s("UNKEYWORD", "$Work") == [1, 2, 4]
    assert s("FROM", "big@example") == [4]
    assert s("TO", "b@example.com") == [2]
    assert s("CC", "carol") == [4] and s("BCC", "hidden") == [4]
    assert s("SUBJECT", "LARGE") == [4]
    assert s("HEADER", "X-Custom", "marker-42") == [4]
    assert s("BODY", "xxxxxxxx") == [4]
    assert s("TEXT", "marker-42") == [4]
    assert s("LARGER", 4000) == [4] and 4 not in s("SMALLER", 4000)
    assert s("BEFORE", "1-Jan-2021") == [2] and 2 not in s("SINCE", "1-Jan-2021")
    assert s("ON", "10-Jan-2020") == [2]
    assert s("SENTON", "5-Mar-2023") == [4]
    assert s("SENTBEFORE", "1-Jan-2024") == [4]
    assert s("SENTSINCE", "2-Jan-2024") == [1]
    assert s("UID", "2:3") == [2, 3] and s("2:3") == [2, 3] and s("*") == [4]
    assert s("NOT", "SEEN", "NOT", "DELETED") == [1, 3]
    assert s("OR", "FLAGGED", "ANSWERED") == [2, 3]
    assert s("NEW") == sorted(set(s("RECENT")) & set(s("UNSEEN")))
    assert set(s("OLD")) | set(s("RECENT")) == {1, 2, 3, 4}
    assert sorted(c.search(["SUBJECT", "report"])) == [2]
    # UID SEARCH answers UIDs
    raw = c._imap
    typ, data = raw.uid("SEARCH", "FLAGGED")
    assert typ == "OK" and data[0].split() == [b"3"]
    c.logout()


def test_search_charset_utf8(server: WaypostServer, bob: None) -> None:
    c = iclient(server, "bob")
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "Grüße"], charset="UTF-8") == [1]
    assert c.search(["FROM", "jürgen"], charset="UTF-8") == [1]
    assert c.search(["BODY", "straße"], charset="UTF-8") == [1]
    assert c.search(["TEXT", "BÄCKER"], charset="UTF-8") == [1]
    c.logout()
    raw = Raw(port(server))
    raw.login(f"bob@{DOMAIN}")
    raw.cmd("s", "SELECT INBOX")
    assert tagged(raw.cmd("t", "SEARCH CHARSET KOI8-R ALL")).startswith(b"t NO [BADCHARSET")
    assert tagged(raw.cmd("u", "SEARCH FOO")).startswith(b"u BAD")
    raw.close()


# -- STORE, EXPUNGE, COPY, MOVE, APPEND ------------------------------------------------------


def test_store_expunge_copy_move_with_uidplus(server: WaypostServer) -> None:
    imap = client(server, "carol")
    ok(imap.create("Archive"))
    for i in range(1, 6):
        typ, data = imap.append("INBOX", None, None, crlf(f"Subject: m{i}", "", f"body {i}", ""))
        assert typ == "OK" and re.search(rb"\[APPENDUID \d+ %d\]" % i, data[0]), data
    ok(imap.select("INBOX"))
    data = ok(imap.store("1:2", "+FLAGS", r"(\Flagged)"))
    assert all(b"\\Flagged" in d for d in data)
    data = ok(imap.store("1", "-FLAGS", r"(\Flagged)"))
    assert b"\\Flagged" not in data[0]
    data = ok(imap.store("3", "FLAGS", r"(\Answered $Done)"))
    assert b"\\Answered" in data[0] and b"$Done" in data[0]
    typ, data = imap.store("4", "+FLAGS.SILENT", r"(\Seen)")
    assert typ == "OK" and data == [None]
    data = ok(imap.uid("STORE", "5", "+FLAGS", r"(\Draft)"))
    assert b"UID 5" in data[0]
    # COPY -> COPYUID
    typ, data = imap.copy("1:2", "Archive")
    assert typ == "OK"
    code = imap.untagged_responses.get("COPYUID") or []
    assert re.search(rb"COPYUID \d+ 1:2 1:2", data[0] + b"".join(code)), data
    typ, data = imap.copy("1", "NoSuchBox")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    # MOVE -> untagged COPYUID, EXPUNGE
    raw = Raw(port(server))
    raw.login(f"carol@{DOMAIN}")
    raw.cmd("s", "SELECT INBOX")
    lines = raw.cmd("m", "UID MOVE 2 Archive")
    text = b"\n".join(lines)
    assert re.search(rb"\* OK \[COPYUID \d+ 2 3\]", text), text
    assert b"* 2 EXPUNGE" in text and lines[-1].startswith(b"m OK")
    # UID EXPUNGE removes only the given UIDs
    raw.cmd("f", "STORE 1:2 +FLAGS (\\Deleted)")  # UIDs 1 and 3
    lines = raw.cmd("x", "UID EXPUNGE 3")
    assert b"* 2 EXPUNGE" in b"\n".join(lines) and lines[-1].startswith(b"x OK")
    lines = raw.cmd("y", "EXPUNGE")
    assert b"* 1 EXPUNGE" in b"\n".join(lines)
    lines = raw.cmd("z", "UID SEARCH ALL")
    assert lines[0] == b"* SEARCH 4 5"
    lines = raw.cmd("c", "CLOSE")
    assert lines == [b"c OK CLOSE completed"]
    raw.close()
    imap.logout()
    assert message_count(server, "carol", "Archive") == 3


def test_close_expunges_unselect_does_not(server: WaypostServer) -> None:
    imap = client(server, "kate")
    for i in range(3):
        ok(imap.append("INBOX", r"(\Deleted)", None, crlf(f"Subject: d{i}", "", "x", "")))
    ok(imap.select("INBOX"))
    ok(imap.unselect())
    assert message_count(server, "kate") == 3
    ok(imap.select("INBOX"))
    ok(imap.close())
    assert message_count(server, "kate") == 0
    imap.logout()


def test_append_edge_cases(server: WaypostServer) -> None:
    imap = client(server, "leo")
    typ, data = imap.append("NoSuchBox", None, None, b"Subject: x\r\n\r\ny\r\n")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    raw = Raw(port(server))
    raw.login(f"leo@{DOMAIN}")
    # LITERAL+: the client does not wait for "+"
    msg = b"Subject: literal plus\r\n\r\nbody\r\n"
    raw.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert re.match(rb"a OK \[APPENDUID \d+ 1\]", tagged(raw.until(b"a")))
    # synchronizing literal
    raw.send(b"b APPEND INBOX {%d}\r\n" % len(msg))
    assert raw.line().startswith(b"+")
    raw.send(msg + b"\r\n")
    assert re.match(rb"b OK \[APPENDUID \d+ 2\]", tagged(raw.until(b"b")))
    assert tagged(raw.cmd("c", 'APPEND INBOX "bad-date" {3+}\r\nabc')).startswith(b"c BAD")
    # APPEND into the selected mailbox: EXISTS before the tagged OK
    raw.cmd("s", "SELECT INBOX")
    lines = raw.cmd("s2", append_cmd("INBOX"))
    assert b"* 3 EXISTS" in lines and re.match(rb"s2 OK \[APPENDUID \d+ 3\]", lines[-1])
    assert tagged(raw.cmd("d", "APPEND INBOX {0+}\r\n")).startswith(b"d NO")
    raw.close()
    imap.logout()


def test_append_is_durable_before_ok(tmp_path: Path) -> None:
    srv = WaypostServer(tmp_path / "var").init()
    srv.cli("domain", "add", DOMAIN)
    srv.cli("account", "add", f"dur@{DOMAIN}", "--password", PW)
    srv.start()
    try:
        imap = IMAPFrom(srv.port("IMAPPort"))
        imap.login(f"dur@{DOMAIN}", PW)
        body = crlf("Subject: survive kill -9", "", "durable " * 100, "")
        typ, data = imap.append("INBOX", r"(\Flagged)", None, body)
        assert typ == "OK", data
        srv.kill()  # no chance to flush anything after the OK
        srv.start()
        imap = IMAPFrom(srv.port("IMAPPort"))
        imap.login(f"dur@{DOMAIN}", PW)
        ok(imap.select("INBOX"))
        data = ok(imap.fetch("1", "(FLAGS BODY.PEEK[])"))
        assert data[0][1] == body and b"\\Flagged" in data[0][0]
        imap.logout()
    finally:
        srv.stop()


# -- sessions see each other ---------------------------------------------------------------


def test_sessions_see_each_others_changes(server: WaypostServer) -> None:
    writer = client(server, "dave")
    for i in range(2):
        ok(writer.append("INBOX", None, None, crlf(f"Subject: s{i}", "", "x", "")))
    ok(writer.select("INBOX"))
    watcher = iclient(server, "dave")
    watcher.select_folder("INBOX")
    reader = Raw(port(server))
    reader.login(f"dave@{DOMAIN}")
    reader.cmd("s", "SELECT INBOX")

    watcher.idle()
    try:
        ok(writer.append("INBOX", None, None, crlf("Subject: s2", "", "x", "")))
        events = _idle_until(watcher, lambda ev: (3, b"EXISTS") in ev)
        assert (3, b"EXISTS") in events
        ok(writer.store("1", "+FLAGS", r"(\Flagged)"))
        events = _idle_until(watcher, lambda ev: any(e[1] == b"FETCH" for e in ev))
        fetch = next(e for e in events if e[1] == b"FETCH")
        assert fetch[0] == 1 and b"\\Flagged" in fetch[2][fetch[2].index(b"FLAGS") + 1]
        ok(writer.store("2", "+FLAGS", r"(\Deleted)"))
        ok(writer.expunge())
        events = _idle_until(watcher, lambda ev: (2, b"EXPUNGE") in ev)
        assert (2, b"EXPUNGE") in events
        # a delivery from outside the IMAP sessions is noticed too (polled)
        deliver(server, f"dave@{DOMAIN}", crlf("Subject: by smtp", "", "x", ""))
        events = _idle_until(watcher, lambda ev: (3, b"EXISTS") in ev, timeout=20)
        assert (3, b"EXISTS") in events
    finally:
        watcher.idle_done()

    # a session that is not idling hears about it at its next command, but no
    # EXPUNGE during FETCH/STORE/SEARCH (RFC 3501 §7.4.1)
    lines = reader.cmd("f", "FETCH 1:* (FLAGS)")
    assert not any(re.fullmatch(rb"\* \d+ EXPUNGE", line) for line in lines), lines
    assert b"* 4 EXISTS" in lines
    # message 2 is gone already but keeps its number until the NOOP
    assert lines[-1].startswith(b"f NO [EXPUNGEISSUED]")
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in lines  # the other session's STORE
    lines = reader.cmd("n", "NOOP")
    assert b"* 2 EXPUNGE" in b"\n".join(lines)
    lines = reader.cmd("g", "FETCH 1:* (UID FLAGS)")
    assert [line for line in lines if line.startswith(b"* ")] == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged))",
        b"* 2 FETCH (UID 3 FLAGS ())",
        b"* 3 FETCH (UID 4 FLAGS ())",
    ]
    reader.close()
    watcher.logout()
    writer.logout()


def _idle_until(c: IMAPClient, done, timeout: float = 10) -> list:
    seen: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += c.idle_check(timeout=1)
        if done(seen):
            break
    return seen


def test_idle_ends_with_done_and_refuses_other_lines(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"dave@{DOMAIN}")
    raw.send(b"i IDLE\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"DONE\r\n")
    assert tagged(raw.until(b"i")).startswith(b"i OK")
    raw.send(b"j IDLE\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"k NOOP\r\n")
    assert tagged(raw.until(b"j")).startswith(b"j BAD")
    assert tagged(raw.cmd("l", "NOOP")).startswith(b"l OK")
    raw.close()


# -- LIST, LSUB, subscriptions, aliases, namespaces ------------------------------------------


@pytest.fixture(scope="module")
def shared(server: WaypostServer) -> None:
    """marketing shares announce with john (lr) and, via anyone@, nothing else."""
    m = iclient(server, "marketing")
    m.create_folder("announce")
    m.create_folder("private")
    m.append(
        "announce",
        crlf("Subject: All hands friday", "From: marketing@domain.dom", "", "Be there.", ""),
    )
    m.setacl("announce", "john", "lr")
    m.logout()


def test_list_patterns_and_modified_utf7(server: WaypostServer) -> None:
    c = iclient(server, "erin")
    for name in ("Work", "Work/2024", "Work/2024/Q1", "Grüße", "Sent"):
        c.create_folder(name)
    names = {f[2] for f in c.list_folders("", "*")}
    assert names >= {"INBOX", "Work", "Work/2024", "Work/2024/Q1", "Grüße", "Sent"}
    top = {f[2] for f in c.list_folders("", "%")}
    assert "Work/2024" not in top and "Work" in top and "Grüße" in top
    assert {f[2] for f in c.list_folders("Work/", "%")} == {"Work/2024"}
    flags = {f[2]: f[0] for f in c.list_folders("", "*")}
    assert b"\\HasChildren" in flags["Work"] and b"\\HasNoChildren" in flags["Work/2024/Q1"]
    assert b"\\Sent" in flags["Sent"]
    c.logout()
    raw = Raw(port(server))
    raw.login(f"erin@{DOMAIN}")
    lines = raw.cmd("a", 'LIST "" "Gr*"')
    assert b'"Gr&APwA3w-e"' in lines[0]  # modified UTF-7 on the wire
    lines = raw.cmd("b", 'LIST "" ""')
    assert lines[0] == b'* LIST (\\Noselect) "/" ""'
    lines = raw.cmd("c", 'LIST "" "*" RETURN (SPECIAL-USE CHILDREN)')
    assert any(b"\\Sent" in line and b'"Sent"' in line for line in lines)
    lines = raw.cmd("d", 'LIST (SPECIAL-USE) "" "*"')
    assert [line for line in lines if line.startswith(b"* LIST")] == [
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"'
    ]
    assert tagged(raw.cmd("e", 'SELECT "Gr&APwA3w-e"')).startswith(b"e OK")
    lines = raw.cmd("f", 'LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT))')
    assert any(line.startswith(b'* STATUS "INBOX" (MESSAGES') for line in lines)
    raw.close()


def test_lsub_and_subscriptions_with_foreign_names(server: WaypostServer, shared: None) -> None:
    c = iclient(server, "john")
    c.subscribe_folder("INBOX")
    c.subscribe_folder("~marketing/announce")
    c.subscribe_folder("~marketing/private")  # not visible to john
    assert {f[2] for f in c.list_sub_folders("", "%")} >= {"INBOX"}
    assert "~marketing/announce" not in {f[2] for f in c.list_sub_folders("", "%")}
    subs = {f[2]: f[0] for f in c.list_sub_folders("", "*")}
    assert "~marketing/announce" in subs and "INBOX" in subs
    assert b"\\Noselect" in subs["~marketing/private"]
    raw = Raw(port(server))
    raw.login(f"john@{DOMAIN}")
    lines = raw.cmd("a", 'LIST (SUBSCRIBED) "" "*"')
    text = b"\n".join(lines)
    assert b'\\Subscribed) "/" "~marketing/announce"' in text
    assert b"\\NonExistent" in text  # ~marketing/private
    lines = raw.cmd("b", 'LIST "" "*" RETURN (SUBSCRIBED)')
    assert any(b"\\Subscribed" in line and b'"INBOX"' in line for line in lines)
    c.unsubscribe_folder("~marketing/private")
    assert "~marketing/private" not in {f[2] for f in c.list_sub_folders("", "*")}
    raw.close()
    c.logout()


def test_namespace_id_enable(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"erin@{DOMAIN}")
    lines = raw.cmd("n", "NAMESPACE")
    assert lines[0] == b'* NAMESPACE (("" "/")) (("~" "/")) NIL'
    lines = raw.cmd("i", 'ID ("name" "pytest")')
    assert lines[0].startswith(b'* ID ("name" "Waypost" "version"')
    lines = raw.cmd("e", "ENABLE X-NOT-AN-EXTENSION")  # ignored (RFC 5161 §3.1)
    assert lines[0] == b"* ENABLED" and lines[-1].startswith(b"e OK")
    raw.cmd("s", "SELECT INBOX")
    assert tagged(raw.cmd("e2", "ENABLE UTF8=ACCEPT")).startswith(b"e2 BAD")
    assert tagged(raw.cmd("c", "CHECK")).startswith(b"c OK")
    assert tagged(raw.cmd("u", "UNSELECT")).startswith(b"u OK")
    assert tagged(raw.cmd("u2", "UNSELECT")).startswith(b"u2 BAD")
    lines = raw.cmd("z", "LOGOUT")
    assert lines[0].startswith(b"* BYE") and lines[-1].startswith(b"z OK")
    assert raw.eof()
    raw.close()


def test_create_delete_rename(server: WaypostServer) -> None:
    imap = client(server, "judy")
    ok(imap.create("Projects/Alpha"))
    typ, data = imap.create("Projects/Alpha")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    ok(imap.rename("Projects/Alpha", "Projects/Beta"))
    names = [d.decode() for d in ok(imap.list('""', "Projects/*"))]
    assert any('"Projects/Beta"' in n for n in names)
    assert not any('"Projects/Alpha"' in n for n in names)
    ok(imap.delete("Projects/Beta"))
    typ, data = imap.delete("INBOX")
    assert typ == "NO"
    typ, data = imap.delete("nothing-here")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    imap.logout()


# -- ACL, foreign mailboxes, aliases, administrators ------------------------------------------


def test_acl_scenario_read_only_share(server: WaypostServer, shared: None) -> None:
    m = iclient(server, "marketing")
    acl = dict(m.getacl("announce"))
    assert acl[b"john"] == b"lr"
    raw = Raw(port(server))
    raw.login(f"marketing@{DOMAIN}")
    lines = raw.cmd("l", "LISTRIGHTS announce john")
    assert lines[0] == b'* LISTRIGHTS "announce" john "" l r s w i p kxc ted a'
    lines = raw.cmd("m", "MYRIGHTS announce")
    assert lines[0] == b'* MYRIGHTS "announce" lrswipkxcteda'
    assert tagged(raw.cmd("s", "SETACL announce kate +lrk")).startswith(b"s OK")
    acl = dict(m.getacl("announce"))
    assert acl[b"kate"] == b"lrkxc"
    assert tagged(raw.cmd("d", "DELETEACL announce kate")).startswith(b"d OK")
    assert b"kate" not in dict(m.getacl("announce"))
    assert tagged(raw.cmd("x", "SETACL announce kate lrz")).startswith(b"x BAD")
    raw.close()
    m.logout()

    john = Raw(port(server))
    john.login(f"john@{DOMAIN}")
    lines = john.cmd("a", 'SELECT "~marketing/announce"')
    assert lines[-1].startswith(b"a OK [READ-ONLY]"), lines
    assert b"* 1 EXISTS" in b"\n".join(lines)
    assert b"* OK [PERMANENTFLAGS ()]" in b"\n".join(lines)
    lines = john.cmd("b", "FETCH 1 (BODY[] FLAGS)")
    assert b"All hands friday" in lines[0] and b"\\Seen" not in lines[0]  # no s right
    assert tagged(john.cmd("c", "STORE 1 +FLAGS (\\Flagged)")).startswith(b"c NO [NOPERM]")
    assert tagged(john.cmd("c2", "STORE 1 +FLAGS (\\Seen)")).startswith(b"c2 NO [NOPERM]")
    assert tagged(john.cmd("d", "EXPUNGE")).startswith(b"d NO [NOPERM]")
    lines = john.cmd("e", append_cmd('"~marketing/announce"'))
    assert tagged(lines).startswith(b"e NO [NOPERM]")
    lines = john.cmd("f", 'MYRIGHTS "~marketing/announce"')
    assert lines[0] == b'* MYRIGHTS "~marketing/announce" lr'
    assert tagged(john.cmd("g", 'GETACL "~marketing/announce"')).startswith(b"g NO [NOPERM]")
    lines = john.cmd("h", 'LIST "" "~marketing/*"')
    assert [line for line in lines if line.startswith(b"* LIST")] == [
        b'* LIST (\\HasNoChildren) "/" "~marketing/announce"'
    ]
    # COPY out of the share into his own INBOX works (i on his own)
    assert tagged(john.cmd("i", "COPY 1 INBOX")).startswith(b"i OK [COPYUID")
    assert tagged(john.cmd("j", "MOVE 1 INBOX")).startswith(b"j NO [NOPERM]")
    john.close()


def test_no_rights_means_no_such_mailbox(server: WaypostServer, shared: None) -> None:
    raw = Raw(port(server))
    raw.login(f"mallory@{DOMAIN}")
    for tag, command in (("a", "SELECT"), ("b", "EXAMINE")):
        line = tagged(raw.cmd(tag, f'{command} "~marketing/announce"'))
        assert line.startswith(tag.encode() + b" NO [NONEXISTENT]"), line
    # exactly the answer for a mailbox that does not exist
    assert tagged(raw.cmd("c", 'SELECT "~marketing/nothing"')).startswith(b"c NO [NONEXISTENT]")
    assert tagged(raw.cmd("d", "FETCH 1 FLAGS")).startswith(b"d BAD")  # not selected
    assert tagged(raw.cmd("e", 'STATUS "~marketing/announce" (MESSAGES)')).startswith(b"e NO")
    lines = raw.cmd("f", 'LIST "" "~marketing/*"')
    assert lines == [b"f OK LIST completed"]
    assert tagged(raw.cmd("g", 'MYRIGHTS "~marketing/announce"')).startswith(b"g NO")
    raw.cmd("s", "SELECT INBOX")
    raw.cmd("p", append_cmd("INBOX"))
    lines = raw.cmd("h", 'COPY 1 "~marketing/announce"')
    assert tagged(lines).startswith(b"h NO [TRYCREATE]")
    lines = raw.cmd("i", append_cmd('"~marketing/announce"'))
    assert tagged(lines).startswith(b"i NO")
    raw.close()


def test_mailbox_alias_listed_and_selectable(server: WaypostServer, shared: None) -> None:
    server.cli("mailbox", "alias", f"john@{DOMAIN}", "Announce", "~marketing/announce")
    c = iclient(server, "john")
    names = {f[2] for f in c.list_folders("", "*")}
    assert "Announce" in names
    info = c.select_folder("Announce", readonly=True)
    assert info[b"EXISTS"] == 1
    raw = Raw(port(server))
    raw.login(f"john@{DOMAIN}")
    assert tagged(raw.cmd("a", "SELECT Announce")).startswith(b"a OK [READ-ONLY]")
    raw.close()
    env = c.fetch([1], ["ENVELOPE"])[1][b"ENVELOPE"]
    assert env.subject == b"All hands friday"
    c.logout()


def test_administrator_opens_any_mailbox_in_scope(
    server: WaypostServer, shared: None, alice: dict
) -> None:
    boss = Raw(port(server))
    boss.login(f"boss@{server.domain}")
    lines = boss.cmd("i", f'SELECT "~alice@{DOMAIN}/INBOX"')
    assert lines[-1].startswith(b"i OK [READ-WRITE]") and b"* 4 EXISTS" in lines, lines
    lines = boss.cmd("j", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: report" in lines[0]
    lines = boss.cmd("a", f'SELECT "~marketing@{DOMAIN}/private"')
    assert lines[-1].startswith(b"a OK [READ-WRITE]"), lines
    lines = boss.cmd("b", f'LIST "" "~marketing@{DOMAIN}/*"')
    text = b"\n".join(lines)
    assert b"/private" in text and b"/announce" in text
    boss.close()
    helper = Raw(port(server))  # AllDomains without CanAccessMailboxes
    helper.login(f"helper@{server.domain}")
    line = tagged(helper.cmd("a", f'SELECT "~marketing@{DOMAIN}/private"'))
    assert line.startswith(b"a NO [NONEXISTENT]")
    helper.close()


# -- bad input ------------------------------------------------------------------------------


def test_wrong_state_commands(server: WaypostServer) -> None:
    raw = Raw(port(server))
    assert tagged(raw.cmd("a", "SELECT INBOX")).startswith(b"a BAD")
    assert tagged(raw.cmd("b", "FETCH 1 FLAGS")).startswith(b"b BAD")
    assert tagged(raw.cmd("c", 'LIST "" *')).startswith(b"c BAD")
    raw.login(f"ivan@{DOMAIN}")
    assert tagged(raw.cmd("d", f'LOGIN "ivan@{DOMAIN}" "{PW}"')).startswith(b"d BAD")
    assert tagged(raw.cmd("e", "STARTTLS")).startswith(b"e BAD")
    assert tagged(raw.cmd("f", "EXPUNGE")).startswith(b"f BAD")
    assert tagged(raw.cmd("g", "CLOSE")).startswith(b"g BAD")
    assert tagged(raw.cmd("h", "FROBNICATE")).startswith(b"h BAD")
    raw.send(b"\r\n")
    assert raw.line().startswith(b"* BAD")
    assert tagged(raw.cmd("i", "NOOP")).startswith(b"i OK")
    raw.close()


def test_invalid_sequence_sets(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"ivan@{DOMAIN}")
    raw.cmd("n", "CREATE empty")
    raw.cmd("o", "SELECT empty")  # 1:* of an empty mailbox is no error, 1 is
    assert raw.cmd("o1", "FETCH 1:* FLAGS") == [b"o1 OK FETCH completed"]
    assert raw.cmd("o2", "UID FETCH 1:* FLAGS") == [b"o2 OK UID FETCH completed"]
    assert tagged(raw.cmd("o3", "FETCH 1 FLAGS")).startswith(b"o3 BAD")
    raw.cmd("p", append_cmd("INBOX"))
    raw.cmd("s", "SELECT INBOX")
    for tag, seqset in (
        ("a", "0"),
        ("b", "1:x"),
        ("c", "1,,2"),
        ("d", "99"),
        ("e", "-1"),
        ("f", "4294967296"),
        ("g", "1:"),
    ):
        line = tagged(raw.cmd(tag, f"FETCH {seqset} FLAGS"))
        assert line.startswith(tag.encode() + b" BAD"), (seqset, line)
    assert tagged(raw.cmd("h", "UID FETCH 99 FLAGS")).startswith(b"h OK")  # UIDs may be absent
    assert tagged(raw.cmd("i", "STORE 0 +FLAGS (\\Seen)")).startswith(b"i BAD")
    assert tagged(raw.cmd("j", "COPY 5:7 INBOX")).startswith(b"j BAD")
    assert tagged(raw.cmd("k", "FETCH 1 FLAGS")).startswith(b"k OK")
    raw.close()


def test_invalid_modified_utf7(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"ivan@{DOMAIN}")
    # valid astrings that name no mailbox: NO, not BAD (tests/test_imap_rev2.py has the rest)
    for tag, name in (("a", '"&Jjo"'), ("b", '"&AGE-"'), ("c", '"&-&"'), ("d", '"caf\xc3\xa9"')):
        line = tagged(raw.cmd(tag, f"CREATE {name}".encode("latin-1")))
        assert line.startswith(tag.encode() + b" NO [CANNOT]"), (name, line)
    assert tagged(raw.cmd("e", 'SELECT "&Jjo"')).startswith(b"e NO [NONEXISTENT]")
    assert raw.cmd("f", 'LIST "" "&Jjo*"') == [b"f OK LIST completed (no mailbox has such a name)"]
    assert tagged(raw.cmd("g", 'CREATE "&ZeVnLIqe-"')).startswith(b"g OK")  # valid: 日本語
    raw.close()


def test_overlong_line_and_literal_limits(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"ivan@{DOMAIN}")
    raw.send(b"a NOOP " + b"x" * 20000 + b"\r\n")  # IMAPMaxLine is 8K here
    assert tagged(raw.until(b"a")).startswith(b"a BAD")
    assert tagged(raw.cmd("b", "NOOP")).startswith(b"b OK")
    # a synchronizing literal over IMAPMaxLiteral (1M) is refused before it is sent
    raw.send(b"c APPEND INBOX {2000000}\r\n")
    line = raw.line()
    assert line.startswith(b"c NO [TOOBIG]"), line
    assert tagged(raw.cmd("d", "NOOP")).startswith(b"d OK")
    # a LITERAL+ over the limit: NO, then the connection is closed (RFC 7888)
    raw.send(b"e APPEND INBOX {2000000+}\r\n" + b"y" * 100000)
    line = raw.line()
    assert line.startswith(b"e NO [TOOBIG]"), line
    assert raw.line().startswith(b"* BYE")
    raw.close()
    _still_serving(server)


def test_unterminated_literals_and_strings(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.login(f"ivan@{DOMAIN}")
    # the literal swallows the next command's bytes; the rest is then a bad line
    raw.send(b"a LOGIN {40}\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"b NOOP\r\n")
    raw.send(b"c NOOP\r\n" + b"d" * 24 + b"\r\n")
    assert tagged(raw.until(b"a")).startswith(b"a BAD")
    assert tagged(raw.cmd("e", "NOOP")).startswith(b"e OK")
    assert tagged(raw.cmd("f", 'SELECT "INBOX')).startswith(b"f BAD")  # unterminated quote
    assert tagged(raw.cmd("g", "SELECT {5")).startswith(b"g BAD")  # no closing brace
    # a literal that never completes: the client gives up, the server closes cleanly
    raw.send(b"h APPEND INBOX {500}\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"only a few bytes")
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.eof()
    raw.close()
    _still_serving(server)


def test_garbage_bytes_never_crash(server: WaypostServer) -> None:
    raw = Raw(port(server))
    raw.send(b"\x00\xff\xfe garbage\r\n" + b"a LOGIN \x80\x81 x\r\n" + b"b ID (\r\n")
    lines = [raw.line() for _ in range(3)]
    assert all(b"BAD" in line for line in lines), lines
    assert tagged(raw.cmd("c", "CAPABILITY")).startswith(b"c OK")
    raw.close()
    _still_serving(server)


def test_idle_timeout_closes_stalled_connections(tmp_path: Path) -> None:
    srv = WaypostServer(tmp_path / "var").init()
    srv.cli("domain", "add", DOMAIN)
    srv.cli("account", "add", f"slow@{DOMAIN}", "--password", PW)
    srv.cli("settings", "set", "IMAPIdleTimeout", "2")
    srv.start()
    try:
        raw = Raw(srv.port("IMAPPort"))
        raw.login(f"slow@{DOMAIN}")
        raw.send(b"a APPEND INBOX {100}\r\n")
        assert raw.line().startswith(b"+")
        raw.send(b"half")
        started = time.monotonic()
        assert raw.line().startswith(b"* BYE")
        assert raw.eof() and time.monotonic() - started < 10
        raw.close()
        raw = Raw(srv.port("IMAPPort"))
        raw.login(f"slow@{DOMAIN}")
        raw.cmd("s", "SELECT INBOX")
        raw.send(b"i IDLE\r\n")
        assert raw.line().startswith(b"+")
        assert raw.line().startswith(b"* BYE")  # even IDLE ends after the timeout
        raw.close()
    finally:
        srv.stop()


def _still_serving(server: WaypostServer) -> None:
    imap = client(server, "ivan")
    ok(imap.noop())
    imap.logout()


def test_logindisabled_without_tls_from_afar(tmp_path: Path) -> None:
    """From a non-loopback address, passwords need TLS: LOGINDISABLED, and
    LOGIN / AUTHENTICATE are refused with [PRIVACYREQUIRED] until STARTTLS."""
    import asyncio

    from waypost import tls
    from waypost.protocols.imap.session import ImapContext, Session
    from waypost.services.container import open_services
    from waypost.services.login_guard import LoginGuard

    services = open_services(tmp_path / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("far", password=PW)
    cert, key = tls.ensure_certificate(tmp_path / "var", "main.dom")
    ctx = ImapContext(services, LoginGuard(), tls=tls.server_context(str(cert), str(key)))

    async def scenario() -> list[bytes]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = Session(ctx, reader, writer)
            session.client_ip = "192.0.2.7"  # as if from another host
            await session.run()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        host, number = srv.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.open_connection(host, number)
        seen = [await reader.readline()]

        async def cmd(text: bytes, tag: bytes) -> None:
            writer.write(text + b"\r\n")
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                seen.append(line)
                if line.startswith(tag + b" ") or not line:
                    return

        await cmd(f'a LOGIN "far@main.dom" "{PW}"'.encode(), b"a")
        await cmd(b"b AUTHENTICATE PLAIN AGZhcgB4", b"b")
        await cmd(b"c STARTTLS", b"c")
        await writer.start_tls(unverified())
        await cmd(b"d CAPABILITY", b"d")
        await cmd(f'e LOGIN "far@main.dom" "{PW}"'.encode(), b"e")
        writer.close()
        srv.close()
        await srv.wait_closed()
        return seen

    try:
        lines = asyncio.run(scenario())
    finally:
        ctx.close()
        services.close()
    assert b"LOGINDISABLED" in lines[0] and b"AUTH=PLAIN" not in lines[0]
    assert lines[1].startswith(b"a NO [PRIVACYREQUIRED]")
    assert lines[2].startswith(b"b NO [PRIVACYREQUIRED]")
    assert lines[3].startswith(b"c OK")
    assert b"AUTH=PLAIN" in lines[4] and b"LOGINDISABLED" not in lines[4]
    assert lines[-1].startswith(b"e OK")


def test_random_garbage_never_hangs_or_crashes(server: WaypostServer) -> None:
    """Seeded random command lines (braces, quotes, parentheses, 8-bit bytes,
    stray CRs): every line gets an answer, and the session still works."""
    import random

    rng = random.Random(5)
    alphabet = b'abcXYZ019 *%:,()[]<>{}"\\~&-+.\r\x00\x80\xff'
    words = [b"FETCH", b"UID", b"STORE", b"SEARCH", b"SELECT", b"LIST", b"APPEND", b"BODY[",
             b"{3}", b"{2+}", b"1:*", b"(FLAGS", b'"INBOX"', b"CHARSET", b"NIL"]  # fmt: skip
    raw = Raw(port(server))
    raw.login(f"ivan@{DOMAIN}")
    raw.cmd("s", "SELECT INBOX")
    for n in range(150):
        parts = [rng.choice(words) if rng.random() < 0.5 else
                 bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
                 for _ in range(rng.randint(1, 6))]  # fmt: skip
        line = b"g%d " % n + b" ".join(parts)
        line = re.sub(rb"\{\d+\+?\}", b"", line).replace(b"\n", b"")  # no literals announced
        raw.send(line + b"\r\n")
        answer = raw.line()
        while answer.startswith(b"* ") and not answer.startswith(b"* BAD"):
            answer = raw.line()  # untagged data of a command that happened to parse
        assert answer.startswith((b"g%d " % n, b"* BAD")), (line, answer)
        if b"BAD" not in answer and b" OK" not in answer and b" NO" not in answer:
            raise AssertionError((line, answer))
        if not raw.cmd(f"p{n}", "NOOP")[-1].startswith(b"p%d OK" % n):
            raise AssertionError(f"session unusable after {line!r}")
    raw.close()
    _still_serving(server)


def test_delete_then_create_is_a_new_mailbox_everywhere(server: WaypostServer) -> None:
    """Issue 12's first point: DELETE then CREATE of a name within a second is
    a new mailbox (new UIDVALIDITY), and STATUS, SELECT, FETCH and SEARCH all
    see only its own messages, also in another session that saw the old one."""
    user = USERS[0]
    a, b = client(server, user), client(server, user)
    try:
        assert a.create("Phoenix")[0] == "OK"
        for n in range(3):
            a.append("Phoenix", None, None, f"Subject: old {n}\r\n\r\nx\r\n".encode())
        b.select("Phoenix")
        old = a.status("Phoenix", "(UIDVALIDITY)")[1][0]
        assert a.delete("Phoenix")[0] == "OK"
        assert a.create("Phoenix")[0] == "OK"
        a.append("Phoenix", None, None, b"Subject: new\r\n\r\nx\r\n")
        new = a.status("Phoenix", "(MESSAGES UIDNEXT UIDVALIDITY)")[1][0]
        assert new != old and b"MESSAGES 1" in new and b"UIDNEXT 2" in new
        b.close()
        typ, data = b.select("Phoenix")
        assert typ == "OK" and data[0] == b"1"
        typ, found = b.uid("SEARCH", "ALL")
        assert found[0] == b"1"
        typ, fetched = b.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: new" in fetched[0][1]
    finally:
        for imap in (a, b):
            imap.logout()
