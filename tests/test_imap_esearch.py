"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182), WITHIN (RFC 5032) and address
searches through comments, over real sockets against a ``waypost serve``.

Each test has its own account (so its own INBOX); answers are compared
exactly where the RFCs fix them. Every socket read has a timeout.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from tests.support.imap_raw import RawImap, append_command
from tests.support.server import WaypostServer

from waypost.protocols.imap import searching, wire
from waypost.services.mailaccess import search
from waypost.services.mailaccess.search import LazyMessage, SearchContext

PW = "esearch-pw-1234"
DOMAIN = "esearch.dom"
USERS = tuple(f"u{i}" for i in range(24))
_users = iter(USERS)
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("esearch") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for name in USERS:
        srv.cli("account", "add", f"{name}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


class Client(RawImap):
    def do(self, text: str) -> tuple[list[bytes], bytes]:
        """Untagged lines and the tagged line of one command."""
        tag = f"t{next(_tags)}"
        lines = self.cmd(tag, text)
        return lines[:-1], lines[-1][len(tag) + 1 :]

    def ok(self, text: str) -> list[bytes]:
        untagged, done = self.do(text)
        assert done.startswith(b"OK"), (text, untagged, done)
        return untagged

    def esearch(self, text: str) -> list[bytes]:
        """The ESEARCH lines of a command, with its tag replaced by ``T``."""
        tag = f"t{next(_tags)}"
        lines = self.cmd(tag, text)
        assert lines[-1].startswith(tag.encode() + b" OK"), lines
        return [
            line.replace(b'(TAG "%s")' % tag.encode(), b'(TAG "T")')
            for line in lines
            if line.startswith(b"* ESEARCH")
        ]

    def search(self, text: str) -> list[int]:
        lines = [line for line in self.ok(text) if line.startswith(b"* SEARCH")]
        assert len(lines) == 1, lines
        return [int(n) for n in lines[0].split()[2:]]


def session(server: WaypostServer, user: str) -> Client:
    c = Client(server.port("IMAPPort"))
    c.login(f"{user}@{DOMAIN}", PW)
    return c


def fill(c: Client, flags: list[str], box: str = "INBOX") -> list[int]:
    """APPEND one message per entry of ``flags``; their UIDs."""
    uids = []
    for i, f in enumerate(flags):
        msg = b"From: sender%d@example.com\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (i, i, i)
        lines = c.cmd("A", append_command(box, msg, f))
        assert lines[-1].startswith(b"A OK"), lines
        uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", lines[-1]).group(1)))
    return uids


@pytest.fixture
def box(server: WaypostServer) -> Iterator[tuple[Client, list[int]]]:
    """A session with INBOX selected: 1 seen, 2 unseen, 3 seen, 4 seen and
    flagged, 5 unseen and flagged."""
    c = session(server, next(_users))
    uids = fill(c, ["\\Seen", "", "\\Seen", "\\Seen \\Flagged", "\\Flagged"])
    c.ok("SELECT INBOX")
    yield c, uids
    c.close()


# -- ESEARCH ------------------------------------------------------------------------------


def test_capabilities_are_advertised(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    caps = c.ok("CAPABILITY")[0].split()
    for cap in (b"ESEARCH", b"SEARCHRES", b"WITHIN"):
        assert cap in caps


def test_esearch_result_options(box: tuple[Client, list[int]]) -> None:
    c, uids = box
    assert c.esearch("SEARCH RETURN (MIN MAX ALL COUNT) SEEN") == [
        b'* ESEARCH (TAG "T") MIN 1 MAX 4 ALL 1,3:4 COUNT 3'
    ]
    assert c.esearch("SEARCH RETURN (COUNT) ALL") == [b'* ESEARCH (TAG "T") COUNT 5']
    assert c.esearch("SEARCH RETURN (max) UNSEEN") == [b'* ESEARCH (TAG "T") MAX 5']
    u = uids
    assert c.esearch("UID SEARCH RETURN (ALL MIN) FLAGGED") == [
        b'* ESEARCH (TAG "T") UID MIN %d ALL %d:%d' % (u[3], u[3], u[4])
    ]


def test_return_empty_list_means_all(box: tuple[Client, list[int]]) -> None:
    c, uids = box
    assert c.esearch("SEARCH RETURN () SEEN") == [b'* ESEARCH (TAG "T") ALL 1,3:4']
    assert c.esearch("UID SEARCH RETURN () 2:3") == [
        b'* ESEARCH (TAG "T") UID ALL %s' % wire.compact_set(uids[1:3]).encode()
    ]


def test_nothing_found_leaves_out_min_max_all(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    assert c.esearch("SEARCH RETURN (MIN MAX ALL COUNT) KEYWORD $nothing") == [
        b'* ESEARCH (TAG "T") COUNT 0'
    ]
    assert c.esearch("UID SEARCH RETURN (MIN MAX ALL) DELETED") == [b'* ESEARCH (TAG "T") UID']


def test_plain_search_unchanged_and_bad_return_options(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    assert c.ok("SEARCH UNSEEN") == [b"* SEARCH 2 5"]
    for bad in ("SEARCH RETURN (FOO) ALL", "SEARCH RETURN MIN ALL", "SEARCH RETURN (MIN"):
        untagged, done = c.do(bad)
        assert done.startswith(b"BAD"), (bad, done)
        assert not untagged
    assert c.ok("SEARCH RETURN (MIN) CHARSET UTF-8 UNSEEN")[0].endswith(b"MIN 2")


# -- SEARCHRES ----------------------------------------------------------------------------


def test_save_alone_returns_nothing_and_dollar_works_everywhere(
    box: tuple[Client, list[int]],
) -> None:
    c, uids = box
    assert c.ok("SEARCH RETURN (SAVE) UNSEEN") == []
    assert c.search("SEARCH $") == [2, 5]
    assert c.search("UID SEARCH UID $") == [uids[1], uids[4]]
    assert c.search("SEARCH OR $ 1") == [1, 2, 5]
    fetched = c.ok("FETCH $ (UID)")
    assert fetched == [b"* 2 FETCH (UID %d)" % uids[1], b"* 5 FETCH (UID %d)" % uids[4]]
    assert c.ok("UID FETCH $ (FLAGS)") == [
        b"* 2 FETCH (UID %d FLAGS (\\Recent))" % uids[1],
        b"* 5 FETCH (UID %d FLAGS (\\Flagged \\Recent))" % uids[4],
    ]
    c.ok("STORE $ +FLAGS.SILENT ($Saved)")
    assert c.search("SEARCH KEYWORD $Saved") == [2, 5]
    c.ok("CREATE Copies")
    copied = c.do("COPY $ Copies")[1]
    assert copied.startswith(b"OK [COPYUID"), copied
    assert c.ok("STATUS Copies (MESSAGES)") == [b'* STATUS "Copies" (MESSAGES 2)']


def test_save_with_min_max_saves_only_those(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    assert c.esearch("SEARCH RETURN (SAVE MIN) SEEN") == [b'* ESEARCH (TAG "T") MIN 1']
    assert c.search("SEARCH $") == [1]
    assert c.esearch("SEARCH RETURN (MAX SAVE) SEEN") == [b'* ESEARCH (TAG "T") MAX 4']
    assert c.search("SEARCH $") == [4]
    assert c.esearch("SEARCH RETURN (MIN MAX SAVE) SEEN") == [b'* ESEARCH (TAG "T") MIN 1 MAX 4']
    assert c.search("SEARCH $") == [1, 4]
    assert c.esearch("SEARCH RETURN (MIN SAVE COUNT) SEEN") == [
        b'* ESEARCH (TAG "T") MIN 1 COUNT 3'
    ]
    assert c.search("SEARCH $") == [1, 3, 4]
    assert c.esearch("SEARCH RETURN (SAVE ALL) FLAGGED") == [b'* ESEARCH (TAG "T") ALL 4:5']
    assert c.search("SEARCH $") == [4, 5]


def test_dollar_is_reset_by_select_and_unselect(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    c.ok("SEARCH RETURN (SAVE) ALL")
    assert c.search("SEARCH $") == [1, 2, 3, 4, 5]
    c.ok("EXAMINE INBOX")
    assert c.search("SEARCH $") == []
    assert c.ok("FETCH $ (UID)") == []
    c.ok("SELECT INBOX")
    c.ok("SEARCH RETURN (SAVE) SEEN")
    c.ok("UNSELECT")
    c.ok("SELECT INBOX")
    assert c.search("SEARCH $") == []


def test_expunged_messages_leave_dollar(box: tuple[Client, list[int]]) -> None:
    c, uids = box
    c.ok("SEARCH RETURN (SAVE) FLAGGED")  # 4 and 5
    c.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert c.ok(f"UID EXPUNGE {uids[3]}") == [b"* 4 EXPUNGE"]
    assert c.search("SEARCH $") == [4]  # the old 5
    assert c.search("UID SEARCH $") == [uids[4]]
    # UID EXPUNGE $ and MOVE $ take what is left
    c.ok("SEARCH RETURN (SAVE) 1")
    c.ok("STORE $ +FLAGS.SILENT (\\Deleted)")
    assert c.ok("UID EXPUNGE $") == [b"* 1 EXPUNGE"]
    c.ok("CREATE Moved")
    c.ok("SEARCH RETURN (SAVE) UNSEEN")
    moved = c.ok("MOVE $ Moved")
    assert [m for m in moved if m.endswith(b"EXPUNGE")] == [b"* 1 EXPUNGE", b"* 2 EXPUNGE"]
    assert c.search("SEARCH ALL") == [1]


def test_failed_search_with_save_empties_dollar(box: tuple[Client, list[int]]) -> None:
    c, _ = box
    c.ok("SEARCH RETURN (SAVE) UNSEEN")
    done = c.do("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")[1]
    assert done.startswith(b"NO [BADCHARSET"), done
    assert c.search("SEARCH $") == []
    # a syntax error (BAD) leaves $ as it was
    c.ok("SEARCH RETURN (SAVE) UNSEEN")
    assert c.do("SEARCH RETURN (SAVE) FOO")[1].startswith(b"BAD")
    assert c.search("SEARCH $") == [2, 5]


def test_dollar_without_selected_mailbox_and_in_sets(server: WaypostServer) -> None:
    c = session(server, next(_users))
    try:
        assert c.do("FETCH $ (UID)")[1].startswith(b"BAD")
        c.ok("SELECT INBOX")
        assert c.do("FETCH 1,$ (UID)")[1].startswith(b"BAD")  # $ only alone
        assert c.ok("FETCH $ (UID)") == []
    finally:
        c.close()


# -- WITHIN --------------------------------------------------------------------------------


def test_older_and_younger(server: WaypostServer) -> None:
    c = session(server, next(_users))
    try:
        old = datetime.fromtimestamp(time.time() - 3 * 86400, UTC).strftime(
            "%d-%b-%Y %H:%M:%S +0000"
        )
        msg = b"Subject: old\r\n\r\nx\r\n"
        lines = c.cmd("A", b'APPEND INBOX "%s" {%d+}\r\n%s' % (old.encode(), len(msg), msg))
        assert lines[-1].startswith(b"A OK"), lines
        fill(c, [""])
        c.ok("SELECT INBOX")
        assert c.search("SEARCH YOUNGER 3600") == [2]
        assert c.search("SEARCH OLDER 3600") == [1]
        assert c.search("SEARCH OLDER 400000") == []
        assert c.search("SEARCH YOUNGER 400000") == [1, 2]
        assert c.search("SEARCH NOT OLDER 3600") == [2]
        assert c.do("SEARCH OLDER 0")[1].startswith(b"BAD")
        assert c.do("SEARCH YOUNGER x")[1].startswith(b"BAD")
    finally:
        c.close()


# -- address searches see through comments ----------------------------------------------------


def test_from_with_comments_inside_the_address(server: WaypostServer) -> None:
    c = session(server, next(_users))
    try:
        for sender in (
            b"<user-from (comment)@ (comment) domain.org>",
            b'"Some One" <other@domain.org>',
            b"plain@elsewhere.example (Real Name)",
        ):
            msg = b"From: " + sender + b"\r\nTo: a (x) @ b.example\r\nSubject: s\r\n\r\nx\r\n"
            assert c.cmd("A", append_command("INBOX", msg))[-1].startswith(b"A OK")
        c.ok("SELECT INBOX")
        assert c.search('SEARCH FROM "user-from@domain.org"') == [1]
        assert c.search('SEARCH FROM "<user-from@domain.org>"') == [1]
        assert c.search("SEARCH FROM comment") == [1]  # the header as written still counts
        assert c.search('SEARCH FROM "some one <other@"') == [2]
        assert c.search('SEARCH FROM "real name"') == [3]
        assert c.search('SEARCH TO "a@b.example"') == [1, 2, 3]
        assert c.search('SEARCH SUBJECT "s"') == [1, 2, 3]
        assert c.search('SEARCH FROM "user-from@domain.orgx"') == []
    finally:
        c.close()


# -- the pieces, without a server ----------------------------------------------------------


def test_result_items_and_what_save_keeps() -> None:
    assert searching.esearch_items([2, 3, 4, 9], ("MIN", "MAX", "ALL", "COUNT")) == [
        ("MIN", 2), ("MAX", 9), ("ALL", "2:4,9"), ("COUNT", 4),
    ]  # fmt: skip
    assert searching.esearch_items([], ("MIN", "MAX", "ALL", "COUNT")) == [("COUNT", 0)]
    assert searching.saved_result([5, 7, 9], ("SAVE",)) == {5, 7, 9}
    assert searching.saved_result([5, 7, 9], ("SAVE", "MIN")) == {5}
    assert searching.saved_result([5, 7, 9], ("MAX", "SAVE")) == {9}
    assert searching.saved_result([5, 7, 9], ("MIN", "MAX", "SAVE")) == {5, 9}
    assert searching.saved_result([5, 7, 9], ("MIN", "COUNT", "SAVE")) == {5, 7, 9}
    assert searching.saved_result([], ("MIN", "SAVE")) == frozenset()
    assert searching.saved_pairs([3, 5, 8], {1, 5, 8, 99}) == [(2, 5), (3, 8)]
    assert wire.esearch_line("a1", True, [("COUNT", 0)]) == b'* ESEARCH (TAG "a1") UID COUNT 0\r\n'


def test_rev2_has_no_recent_new_old_keys() -> None:
    for program in (b"RECENT", b"NEW", b"NOT OLD", b"OR SEEN (FLAGGED RECENT)"):
        key = wire.parse(b"a SEARCH " + program).args.key
        searching.check_key(key, rev2=False)  # IMAP4rev1 keeps them
        with pytest.raises(wire.ParseError) as info:
            searching.check_key(key, rev2=True)
        assert info.value.status == "BAD"
    searching.check_key(wire.parse(b"a SEARCH SEEN UNSEEN 1:*").args.key, rev2=True)


def test_within_counts_from_the_given_now() -> None:
    now = 1_000_000.0
    ctx = SearchContext(2, 2, now=now)
    messages = [
        LazyMessage(1, 1, (), now - 100, 1, lambda: b""),
        LazyMessage(2, 2, (), datetime.fromtimestamp(now - 50, UTC), 1, lambda: b""),
    ]

    def hits(program: bytes) -> list[int]:
        key = wire.parse(b"a SEARCH " + program).args.key
        return [m.seq for m in search.search(key, messages, ctx)]

    assert hits(b"YOUNGER 100") == [1, 2]  # within: the boundary counts
    assert hits(b"YOUNGER 99") == [2]
    assert hits(b"OLDER 99") == [1]
    assert hits(b"OLDER 100") == []
    assert hits(b"OLDER 10 YOUNGER 60") == [2]


@pytest.mark.parametrize(
    ("value", "forms"),
    [
        ("<user-from (comment)@ (comment) domain.org>", "<user-from@domain.org>"),
        (
            '"Joe (not a comment)" <joe@x.org>, ann@y.org (Ann)',
            "Joe (not a comment) <joe@x.org>, Ann <ann@y.org>",
        ),
        ("team: a@b.c, d (x) @ e.f;", "<a@b.c>, x <d@e.f>"),  # a comment names a bare address
        ("", ""),
    ],
)
def test_address_forms(value: str, forms: str) -> None:
    assert search.address_forms(value) == forms
