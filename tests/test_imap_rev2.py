"""IMAP4rev2 (RFC 9051) per session, over real sockets against ``waypost serve``.

A session that sends ``ENABLE IMAP4rev2`` gets the rev2 answers (no RECENT,
no \\Recent, a LIST response on SELECT, UTF-8 mailbox names, HASCHILDREN);
the same commands in an IMAP4rev1 session on the same mailboxes give the
rev1 answers, unchanged. Mailbox names that are valid astrings but name no
mailbox (invalid modified UTF-7, control characters) are answered NO with
the right RFC 5530 code, and a failing SELECT deselects.
"""

from __future__ import annotations

import itertools

import pytest
from tests.support.imap_lines import ImapLines, login, server_fixture
from tests.support.server import WaypostServer

from waypost.protocols.imap import rev2, session

PW = "rev2-pw-1234"
DOMAIN = "rev2.dom"
USERS = ("ann", "ben", "cat", "dan", "eve", "fay")
MESSAGE = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
_tags = itertools.count(1)


server = server_fixture(DOMAIN, USERS, PW)


def connect(server: WaypostServer, user: str, *, as_rev2: bool) -> ImapLines:
    enable = "IMAP4rev2" if as_rev2 else None
    return login(server.port("IMAPPort"), f"{user}@{DOMAIN}", PW, enable=enable)


def append(imap: ImapLines, mailbox: bytes, message: bytes = MESSAGE) -> None:
    tag = f"A{next(_tags)}"
    imap.ok(tag, b"APPEND %s {%d+}\r\n" % (mailbox, len(message)) + message)


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


# -- advertisement -------------------------------------------------------------------


def test_rev2_advertised_only_when_complete() -> None:
    full = " ".join(("IMAP4rev1", *rev2.REV2_REQUIRES))
    assert rev2.missing(full) == []
    assert rev2.advertise(full).split()[-1] == "IMAP4rev2"
    for cap in rev2.REV2_REQUIRES:
        partial = " ".join(c for c in full.split() if c != cap)
        assert rev2.missing(partial) == [cap]
        assert "IMAP4rev2" not in rev2.advertise(partial).split()
    # LITERAL+ is a superset of LITERAL- (RFC 7888 §5)
    plus = full.replace("LITERAL-", "LITERAL+")
    assert "IMAP4rev2" in rev2.advertise(plus).split()
    # the server's own capabilities hold every one of them: rev2 is offered
    assert rev2.missing(session.CAPABILITIES) == []
    assert "IMAP4rev2" in session.CAPABILITIES.split() and "IMAP4REV2" in session.ENABLABLE


def test_capability_and_enable(server: WaypostServer) -> None:
    imap = ImapLines(server.port("IMAPPort"))
    assert b"IMAP4rev1" in imap.greeting and b"IMAP4rev2" in imap.greeting
    imap.ok("L", f'LOGIN "ann@{DOMAIN}" "{PW}"')
    caps = imap.ok("c", "CAPABILITY")[0].split()
    assert b"IMAP4rev2" in caps and b"IMAP4rev1" in caps and b"UTF8=ACCEPT" in caps
    assert imap.ok("e1", "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4REV2"]
    assert imap.ok("e2", "ENABLE imap4rev2") == [b"* ENABLED"]  # already on
    imap.ok("s", "SELECT INBOX")
    assert tagged(imap.run("e3", "ENABLE UTF8=ACCEPT")).startswith(b"e3 BAD")  # RFC 5161
    imap.close()


# -- SELECT, FETCH, STATUS: no RECENT, no \Recent -----------------------------------------


def test_select_fetch_status_rev2_and_rev1(server: WaypostServer) -> None:
    writer = connect(server, "ben", as_rev2=False)
    append(writer, b"INBOX")
    append(writer, b"INBOX")

    old = connect(server, "ben", as_rev2=False)
    lines = old.ok("s", "SELECT INBOX")
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines
    assert any(line.startswith(b"* OK [UNSEEN 1]") for line in lines)
    assert not any(line.startswith(b"* LIST") for line in lines)
    assert old.ok("f", "FETCH 1:* FLAGS") == [
        b"* 1 FETCH (FLAGS (\\Recent))",
        b"* 2 FETCH (FLAGS (\\Recent))",
    ]
    assert old.ok("st", "STATUS INBOX (MESSAGES RECENT)") == [
        b'* STATUS "INBOX" (MESSAGES 2 RECENT 0)'
    ]

    new = connect(server, "ben", as_rev2=True)
    lines = new.ok("s", "SELECT INBOX")
    assert b"* 2 EXISTS" in lines
    assert not any(b"RECENT" in line or b"[UNSEEN" in line for line in lines)
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in lines  # RFC 9051 §6.3.2
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    assert new.ok("f", "FETCH 1:* (FLAGS)") == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())"]
    assert tagged(new.run("st", "STATUS INBOX (MESSAGES RECENT)")).startswith(b"st BAD")
    listed = new.run("ls", 'LIST "" INBOX RETURN (STATUS (RECENT))')
    assert tagged(listed).startswith(b"ls BAD") and len(listed) == 1
    assert new.ok("st2", "STATUS INBOX (MESSAGES UIDNEXT)") == [
        b'* STATUS "INBOX" (MESSAGES 2 UIDNEXT 3)'
    ]

    line = tagged(new.run("k", "SEARCH CHARSET KOI8-R ALL"))  # RFC 9051 §6.4.4
    assert line.startswith(b"k NO [BADCHARSET (US-ASCII UTF-8)]")

    append(writer, b"INBOX")  # a third message, seen by both selected sessions
    lines = new.ok("n", "NOOP")
    assert lines == [b"* 3 EXISTS"]  # no "* n RECENT" in rev2
    assert new.ok("f2", "FETCH 3 FLAGS") == [b"* 3 FETCH (FLAGS ())"]
    lines = old.ok("n", "NOOP")
    assert lines == [b"* 3 EXISTS", b"* 3 RECENT"]  # the rev2 session claimed nothing
    assert old.ok("f2", "FETCH 3 FLAGS") == [b"* 3 FETCH (FLAGS (\\Recent))"]
    # STORE echoes flags without \Recent in rev2, with it in rev1
    assert new.ok("t", "STORE 3 +FLAGS (\\Flagged)") == [b"* 3 FETCH (FLAGS (\\Flagged))"]
    assert old.ok("t", "STORE 3 +FLAGS (\\Seen)") == [
        b"* 3 FETCH (FLAGS (\\Flagged \\Seen \\Recent))"
    ]
    # UID EXPUNGE is part of rev2 (RFC 9051 §6.4.9)
    new.ok("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert new.ok("x", "UID EXPUNGE 1") == [b"* 1 EXPUNGE"]
    for imap in (writer, old, new):
        imap.close()


# -- UTF-8 mailbox names in rev2 ------------------------------------------------------------


def test_utf8_mailbox_names_rev2(server: WaypostServer) -> None:
    new = connect(server, "cat", as_rev2=True)
    old = connect(server, "cat", as_rev2=False)
    new.ok("c1", 'CREATE "Grüße/日本語"'.encode())
    new.ok("c2", b'CREATE "A&B"')  # "&" is an ordinary character in rev2
    listed = new.ok("l", 'LIST "" "*"')
    assert '* LIST (\\Noselect \\HasChildren) "/" "Grüße"'.encode() in listed
    assert '* LIST (\\HasNoChildren) "/" "Grüße/日本語"'.encode() in listed
    assert b'* LIST (\\HasNoChildren) "/" "A&B"' in listed
    # the same mailboxes in modified UTF-7 for the rev1 session
    listed = old.ok("l", 'LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "/" "Gr&APwA3w-e/&ZeVnLIqe-"' in listed
    assert b'* LIST (\\HasNoChildren) "/" "A&-B"' in listed
    lines = new.ok("s", 'SELECT "Grüße/日本語"'.encode())
    assert '* LIST (\\HasNoChildren) "/" "Grüße/日本語"'.encode() in lines
    assert new.ok("st", b'STATUS "A&B" (MESSAGES)') == [b'* STATUS "A&B" (MESSAGES 0)']
    old.ok("s", b'EXAMINE "Gr&APwA3w-e/&ZeVnLIqe-"')
    # Net-Unicode: a decomposed name is the same mailbox as its NFC form (RFC 9051 §5.1)
    # CREATE and SELECT announce the name used, with OLDNAME (RFC 9051 §6.3.2, §6.3.4)
    created = new.ok("c3", 'CREATE "Cafe\u0301"'.encode())
    assert created == ['* LIST (\\HasNoChildren) "/" "Café" ("OLDNAME" ("Cafe\u0301"))'.encode()]
    assert new.ok("l2", 'LIST "" "Caf*"') == ['* LIST (\\HasNoChildren) "/" "Café"'.encode()]
    selected = new.ok("s2", 'SELECT "Cafe\u0301"'.encode())
    assert created[0] in selected
    selected = new.ok("s3", 'SELECT "Café"'.encode())
    assert '* LIST (\\HasNoChildren) "/" "Café"'.encode() in selected
    assert new.ok("c5", 'CREATE "Caf\u00e9/x"'.encode()) == []  # sent in NFC: no LIST
    assert tagged(new.run("c4", 'CREATE "Café"'.encode())).startswith(b"c4 NO [ALREADYEXISTS]")
    # bytes that are not UTF-8 are a syntax error in rev2
    assert tagged(new.run("b", b'SELECT "Gr\xfc\xdfe"')).startswith(b"b BAD")
    # LSUB is still answered in rev2 [waypost], with UTF-8 names
    new.ok("sub", 'SUBSCRIBE "Grüße/日本語"'.encode())
    assert new.ok("lsub", 'LSUB "" "*"') == ['* LSUB (\\HasNoChildren) "/" "Grüße/日本語"'.encode()]
    assert old.ok("lsub", 'LSUB "" "*"') == [
        b'* LSUB (\\HasNoChildren) "/" "Gr&APwA3w-e/&ZeVnLIqe-"'
    ]
    new.close()
    old.close()


# -- response codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_rev2", [True, False])
def test_response_codes(server: WaypostServer, as_rev2: bool) -> None:
    user = "dan" if as_rev2 else "eve"
    imap = connect(server, user, as_rev2=as_rev2)
    imap.ok("c", "CREATE Box")
    assert tagged(imap.run("c2", "CREATE Box")).startswith(b"c2 NO [ALREADYEXISTS]")
    assert tagged(imap.run("s", "SELECT Missing")).startswith(b"s NO [NONEXISTENT]")
    assert tagged(imap.run("r", "RENAME Missing Other")).startswith(b"r NO [NONEXISTENT]")
    imap.ok("c3", "CREATE Parent/Child")  # Parent: only the directory entity (\Noselect)
    deleted = tagged(imap.run("d", "DELETE Parent"))
    expected = b"d NO [HASCHILDREN]" if as_rev2 else b"d NO [CANNOT]"  # RFC 9051 §7.1
    assert deleted.startswith(expected), deleted
    imap.ok("d2", "DELETE Parent/Child")
    imap.ok("d3", "DELETE Parent")
    imap.close()


# -- names that name nothing: NO, not BAD; a failing SELECT deselects -------------------------


INVALID_UTF7 = ('"&Jjo"', '"&AGE-"', '"caf\u00e9"', "&U,BTFw")


@pytest.mark.parametrize("name", INVALID_UTF7)
def test_invalid_modified_utf7_is_no(server: WaypostServer, name: str) -> None:
    imap = connect(server, "fay", as_rev2=False)
    wire_name = name.encode()
    imap.ok("s0", "SELECT INBOX")
    for tag, command, code in (
        ("s", b"SELECT %s", b"NONEXISTENT"),
        ("e", b"EXAMINE %s", b"NONEXISTENT"),
        ("st", b"STATUS %s (MESSAGES)", b"NONEXISTENT"),
        ("c", b"CREATE %s", b"CANNOT"),
        ("d", b"DELETE %s", b"NONEXISTENT"),
        ("r", b"RENAME %s Other", b"NONEXISTENT"),
        ("r2", b"RENAME INBOX %s", b"CANNOT"),
        ("sb", b"SUBSCRIBE %s", b"CANNOT"),
        ("u", b"UNSUBSCRIBE %s", b"NONEXISTENT"),
        ("g", b"GETACL %s", b"NONEXISTENT"),
        ("m", b"MYRIGHTS %s", b"NONEXISTENT"),
        ("a", b"APPEND %s {5+}\r\nhello", b"NONEXISTENT"),
    ):
        line = tagged(imap.run(tag, command % wire_name))
        assert line.startswith(tag.encode() + b" NO [" + code + b"]"), (command, line)
        assert line.isascii()  # a rev1 session's resp-text is 7-bit (RFC 3501 §9)
    # the SELECT above failed: nothing is selected any more (RFC 3501 §6.3.1)
    assert tagged(imap.run("f", "FETCH 1 FLAGS")).startswith(b"f BAD")
    imap.ok("s1", "SELECT INBOX")
    assert tagged(imap.run("cp", b"COPY 1:* %s" % wire_name)).startswith(b"cp NO [NONEXISTENT]")
    # LIST with such a reference or pattern matches nothing
    assert imap.ok("l", b'LIST "" %s' % wire_name) == []
    assert imap.ok("l2", b'LIST %s "*"' % wire_name) == []
    imap.ok("n", "NOOP")  # the connection is fine
    imap.close()


def test_control_character_in_utf8_name_is_no(server: WaypostServer) -> None:
    imap = connect(server, "fay", as_rev2=True)
    assert tagged(imap.run("s", b'SELECT "a\x01b"')).startswith(b"s NO [NONEXISTENT]")
    assert tagged(imap.run("c", b'CREATE "a\x7fb"')).startswith(b"c NO [CANNOT]")
    # in rev2 "&Jjo" is a plain name: it can be created and selected
    imap.ok("c2", b'CREATE "&Jjo"')
    assert any(line.startswith(b"* LIST") for line in imap.ok("s2", b'SELECT "&Jjo"'))
    imap.close()


def test_shared_mailbox_with_utf8_name(server: WaypostServer) -> None:
    owner = connect(server, "ann", as_rev2=True)
    owner.ok("c", 'CREATE "Geteilt/Büro"'.encode())
    owner.ok("a", f'SETACL "Geteilt/Büro" ben@{DOMAIN} lr'.encode())
    reader = connect(server, "ben", as_rev2=True)
    lines = reader.ok("s", 'EXAMINE "~ann/Geteilt/Büro"'.encode())
    assert '* LIST (\\HasNoChildren) "/" "~ann/Geteilt/Büro"'.encode() in lines
    assert reader.ok("m", 'MYRIGHTS "~ann/Geteilt/Büro"'.encode()) == [
        '* MYRIGHTS "~ann/Geteilt/Büro" lr'.encode()
    ]
    rev1 = connect(server, "ben", as_rev2=False)
    assert rev1.ok("m", b'MYRIGHTS "~ann/Geteilt/B&APw-ro"') == [
        b'* MYRIGHTS "~ann/Geteilt/B&APw-ro" lr'
    ]
    for imap in (owner, reader, rev1):
        imap.close()


# -- the other extensions' rev2 behaviour, end to end ---------------------------------


def test_rev2_search_answers_esearch_and_has_no_recent(server: WaypostServer) -> None:
    """RFC 9051 §6.4.4: SEARCH without RETURN is ``RETURN (ALL)``, answered
    with ESEARCH; RECENT, NEW and OLD are gone from rev2's grammar."""
    port = server.port("IMAPPort")
    rev1 = login(port, f"fay@{DOMAIN}", PW)
    for _ in range(3):
        rev1.ok("a", f"APPEND INBOX {{{len(MESSAGE)}+}}\r\n".encode() + MESSAGE)
    rev1.ok("s", "SELECT INBOX")
    rev1.ok("f", "STORE 2 +FLAGS (\\Seen)")
    assert rev1.ok("x", "SEARCH UNSEEN") == [b"* SEARCH 1 3"]
    assert rev1.ok("y", "SEARCH RECENT")[0].startswith(b"* SEARCH")
    imap = login(port, f"fay@{DOMAIN}", PW, enable="IMAP4rev2")
    imap.ok("s", "EXAMINE INBOX")
    assert imap.ok("x", "SEARCH UNSEEN") == [b'* ESEARCH (TAG "x") ALL 1,3']
    assert imap.ok("u", "UID SEARCH UNSEEN") == [b'* ESEARCH (TAG "u") UID ALL 1,3']
    assert imap.ok("n", "SEARCH SEEN UNSEEN") == [b'* ESEARCH (TAG "n")']
    for key in ("RECENT", "NEW", "OLD"):
        assert tagged(imap.run("r", f"SEARCH {key}")).startswith(b"r BAD"), key
    imap.close()
    rev1.close()


def test_rev2_reselect_says_closed(server: WaypostServer) -> None:
    """RFC 9051 §6.3.2: SELECT while a mailbox is selected closes it with
    ``* OK [CLOSED]`` before the new mailbox's responses; rev1 has no such line."""
    port = server.port("IMAPPort")
    imap = login(port, f"eve@{DOMAIN}", PW, enable="IMAP4rev2")
    imap.ok("c", 'CREATE "Other"')
    imap.ok("s1", "SELECT INBOX")
    lines = imap.ok("s2", 'SELECT "Other"')
    assert lines[0].startswith(b"* OK [CLOSED]"), lines
    imap.close()
    rev1 = login(port, f"eve@{DOMAIN}", PW)
    rev1.ok("s1", "SELECT INBOX")
    assert not any(b"[CLOSED]" in line for line in rev1.ok("s2", 'SELECT "Other"'))
    rev1.close()


def test_rev2_plain_list_marks_missing_levels_nonexistent(server: WaypostServer) -> None:
    """RFC 9051 §6.3.9: a level "%" shows only because a visible child is
    under it is ``\\NonExistent`` in a rev2 plain LIST; rev1 keeps ``\\Noselect``."""
    port = server.port("IMAPPort")
    owner = login(port, f"dan@{DOMAIN}", PW)
    owner.ok("c", 'CREATE "Hidden/Shown"')
    owner.ok("a", f'SETACL "Hidden/Shown" cat@{DOMAIN} lr')
    owner.close()
    rev1 = login(port, f"cat@{DOMAIN}", PW)
    assert rev1.ok("l", 'LIST "" "~dan/H%"') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "~dan/Hidden"'
    ]
    rev1.close()
    imap = login(port, f"cat@{DOMAIN}", PW, enable="IMAP4rev2")
    assert imap.ok("l", 'LIST "" "~dan/H%"') == [
        b'* LIST (\\NonExistent \\HasChildren) "/" "~dan/Hidden"'
    ]
    imap.close()
