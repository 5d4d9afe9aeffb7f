"""UTF8=ACCEPT (RFC 6855) over real sockets against ``waypost serve``.

After ``ENABLE UTF8=ACCEPT`` mailbox names are UTF-8 quoted strings in both
directions (§3), ``&`` is an ordinary character, names are put in NFC, and
SEARCH with a conflicting CHARSET is BAD (§3, erratum 4029); IMAP4rev1
clients on the same mailboxes still see and use modified UTF-7. Python's
imaplib switches to UTF-8 itself after ``enable("UTF8=ACCEPT")``; IMAPClient
stays a modified-UTF-7 client. The server here runs without the rev2 test
switch, so IMAP4rev2 is offered only if ``rev2.REV2_REQUIRES`` is complete.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from imapclient import IMAPClient
from tests.support.imap_lines import TIMEOUT, ImapLines, login, server_fixture
from tests.support.mutt import muttrc as mutt_config
from tests.support.server import WaypostServer

from waypost.protocols.imap import rev2

PW = "utf8-pw-1234"
DOMAIN = "utf8.dom"
USERS = ("uma", "vic", "wes", "xia", "zoe")
SUBJECT = "Grüße aus Zürich"


server = server_fixture(DOMAIN, USERS, PW)


def connect(server: WaypostServer, user: str, *, utf8: bool) -> ImapLines:
    enable = "UTF8=ACCEPT" if utf8 else None
    return login(server.port("IMAPPort"), f"{user}@{DOMAIN}", PW, enable=enable)


def test_capability_utf8_accept_and_rev2_rule(server: WaypostServer) -> None:
    imap = ImapLines(server.port("IMAPPort"))
    imap.ok("L", f'LOGIN "uma@{DOMAIN}" "{PW}"')
    caps = imap.ok("c", "CAPABILITY")[0].decode()
    assert "UTF8=ACCEPT" in caps.split()
    complete = rev2.missing(caps) == []
    assert ("IMAP4rev2" in caps.split()) == complete
    # ENABLE turns on only what is advertised (RFC 5161 §3.1)
    expected = [b"* ENABLED IMAP4REV2"] if complete else [b"* ENABLED"]
    assert imap.ok("e", "ENABLE IMAP4rev2") == expected
    assert imap.ok("e2", "ENABLE UTF8=ACCEPT") == [b"* ENABLED UTF8=ACCEPT"]
    assert imap.ok("e3", "ENABLE UTF8=ACCEPT") == [b"* ENABLED"]
    imap.close()


def test_utf8_names_and_rev1_clients_on_the_same_mailboxes(server: WaypostServer) -> None:
    utf8 = connect(server, "vic", utf8=True)
    utf8.ok("c1", 'CREATE "Grüße/台北"'.encode())
    utf8.ok("c2", b'CREATE "A&B"')
    utf8.ok("c3", b'CREATE "&ZeVnLIqe-"')  # after UTF8=ACCEPT: the name as written
    assert utf8.ok("l", 'LIST "" "*"') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren) "/" "&ZeVnLIqe-"',
        b'* LIST (\\HasNoChildren) "/" "A&B"',
        '* LIST (\\Noselect \\HasChildren) "/" "Grüße"'.encode(),
        '* LIST (\\HasNoChildren) "/" "Grüße/台北"'.encode(),
    ]
    assert utf8.ok("st", 'STATUS "Grüße/台北" (MESSAGES)'.encode()) == [
        '* STATUS "Grüße/台北" (MESSAGES 0)'.encode()
    ]
    assert utf8.ok("m", 'MYRIGHTS "Grüße/台北"'.encode())[0].startswith(
        '* MYRIGHTS "Grüße/台北" '.encode()
    )
    old = connect(server, "vic", utf8=False)
    assert old.ok("l", 'LIST "" "*"') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren) "/" "&-ZeVnLIqe-"',
        b'* LIST (\\HasNoChildren) "/" "A&-B"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Gr&APwA3w-e"',
        b'* LIST (\\HasNoChildren) "/" "Gr&APwA3w-e/&U,BTFw-"',
    ]
    old.ok("s", b'SELECT "Gr&APwA3w-e/&U,BTFw-"')
    # the rev1 session's modified UTF-7 form is just a name in the UTF-8 session
    assert tagged(utf8.run("s", b'SELECT "Gr&APwA3w-e/&U,BTFw-"')).startswith(b"s NO [NONEXISTENT]")
    # a rev1 session sending UTF-8 gets NO (invalid modified UTF-7), not BAD
    line = tagged(old.run("s2", 'SELECT "Grüße/台北"'.encode()))
    assert line.startswith(b"s2 NO [NONEXISTENT]")
    # bytes that are not UTF-8 in a UTF8=ACCEPT session: a syntax error
    assert tagged(utf8.run("b", b'CREATE "caf\xe9"')).startswith(b"b BAD")
    # IMAPClient (a modified UTF-7 client) sees the same mailboxes decoded
    client = IMAPClient("127.0.0.1", port=server.port("IMAPPort"), ssl=False, timeout=TIMEOUT)
    client.login(f"vic@{DOMAIN}", PW)
    names = {f[2] for f in client.list_folders()}
    assert names == {"INBOX", "A&B", "&ZeVnLIqe-", "Grüße", "Grüße/台北"}
    assert client.select_folder("Grüße/台北")[b"EXISTS"] == 0
    client.logout()
    utf8.close()
    old.close()


def test_nfc_names(server: WaypostServer) -> None:
    utf8 = connect(server, "wes", utf8=True)
    created = utf8.ok("c", 'CREATE "Re\u0301sume\u0301"'.encode())  # decomposed
    oldname = '("OLDNAME" ("Re\u0301sume\u0301"))'
    assert created == [f'* LIST (\\HasNoChildren) "/" "Résumé" {oldname}'.encode()]
    assert utf8.ok("l", 'LIST "" "R*"') == ['* LIST (\\HasNoChildren) "/" "Résumé"'.encode()]
    utf8.ok("s", 'SELECT "Résumé"'.encode())
    lines = utf8.ok("s2", 'SELECT "Re\u0301sume\u0301"'.encode())
    assert not any(line.startswith(b"* LIST") for line in lines)  # LIST on SELECT: rev2 only
    old = connect(server, "wes", utf8=False)
    assert old.ok("l", 'LIST "" "R*"') == [b'* LIST (\\HasNoChildren) "/" "R&AOk-sum&AOk-"']
    utf8.close()
    old.close()


def test_search_charset_after_utf8_accept(server: WaypostServer) -> None:
    message = (
        "From: a@example.com\r\nSubject: " + SUBJECT + "\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"
    ).encode()
    old = connect(server, "xia", utf8=False)
    old.ok("a", b"APPEND INBOX {%d+}\r\n" % len(message) + message)
    old.ok("s", "SELECT INBOX")
    line = tagged(old.run("k", "SEARCH CHARSET KOI8-R ALL"))
    assert line.startswith(b"k NO [BADCHARSET (US-ASCII UTF-8)]")
    utf8 = connect(server, "xia", utf8=True)
    utf8.ok("s", "SELECT INBOX")
    # RFC 6855 §3: a conflicting charset label is BAD once UTF-8 is on
    assert tagged(utf8.run("k", "SEARCH CHARSET KOI8-R ALL")).startswith(b"k BAD")
    # [waypost] UTF-8 (and its subset US-ASCII) do not conflict: accepted
    assert utf8.ok("u", 'SEARCH CHARSET UTF-8 SUBJECT "Zürich"'.encode()) == [b"* SEARCH 1"]
    assert utf8.ok("v", 'SEARCH SUBJECT "Grüße"'.encode()) == [b"* SEARCH 1"]
    utf8.close()
    old.close()


def test_imaplib_in_utf8_mode(server: WaypostServer) -> None:
    """Python's imaplib sends UTF-8 names itself after enable("UTF8=ACCEPT")."""
    imap = imaplib.IMAP4("127.0.0.1", server.port("IMAPPort"), timeout=TIMEOUT)
    imap.login(f"uma@{DOMAIN}", PW)
    assert imap.enable("UTF8=ACCEPT")[0] == "OK"
    assert imap.untagged_responses.pop("ENABLED") == [b"UTF8=ACCEPT"]
    assert imap.create('"Ärger/Ω"')[0] == "OK"
    typ, listed = imap.list('""', '"Ä*"')
    assert typ == "OK" and listed == [
        '(\\Noselect \\HasChildren) "/" "Ärger"'.encode(),
        '(\\HasNoChildren) "/" "Ärger/Ω"'.encode(),
    ]
    message = b"Subject: hi\r\n\r\nbody\r\n"
    assert imap.append('"Ärger/Ω"', None, None, message)[0] == "OK"
    typ, data = imap.select('"Ärger/Ω"')
    assert typ == "OK" and data == [b"1"]
    typ, data = imap.status('"Ärger/Ω"', "(MESSAGES)")
    assert data == ['"Ärger/Ω" (MESSAGES 1)'.encode()]
    imap.logout()


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


@pytest.mark.peer
@pytest.mark.skipif(not (shutil.which("mutt") and shutil.which("script")), reason="needs mutt")
def test_mutt_enables_utf8_and_opens_a_utf8_folder(server: WaypostServer, tmp_path: Path) -> None:
    """mutt 2.x sends ENABLE UTF8=ACCEPT when it is advertised, then names
    folders in UTF-8; it runs in a pseudo-terminal (``script``), keys from
    ``push``, bounded by a timeout; its protocol trace (``-d 5``) is read."""
    owner = connect(server, "zoe", utf8=True)
    owner.ok("c", 'CREATE "Grüße/Büro"'.encode())
    for subject in (b"first", b"second"):
        message = b"From: a@example.com\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
        owner.ok("a", 'APPEND "Grüße/Büro" {%d+}\r\n'.encode() % len(message) + message)
    owner.close()
    home = tmp_path / "home"
    home.mkdir()
    saved = tmp_path / "saved.mbox"
    port = server.port("IMAPPort")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(mutt_config(f"zoe@{DOMAIN}", PW, port))
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"
    url = f"imap://127.0.0.1:{port}/Grüße/Büro"
    mutt = f"mutt -d 5 -n -F {muttrc} -f '{url}' -e 'push \"{keys}\"'"
    env = {"HOME": str(home), "TERM": "xterm", "LANG": "C.UTF-8", "PATH": os.environ["PATH"]}
    proc = subprocess.Popen(
        ["script", "-qec", mutt, "/dev/null"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        screen = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        screen = proc.communicate(timeout=10)[0]
    trace = b"".join(p.read_bytes() for p in home.glob(".muttdebug*"))
    assert b"ENABLE UTF8=ACCEPT" in trace, screen[-2000:]
    assert 'SELECT "Grüße/Büro"'.encode() in trace or 'EXAMINE "Grüße/Büro"'.encode() in trace
    mbox = saved.read_bytes()
    assert b"Subject: first" in mbox and b"Subject: second" in mbox
