"""CONDSTORE (RFC 7162 §3.1) over real sockets: ENABLE and the
CONDSTORE-enabling commands, HIGHESTMODSEQ in SELECT and STATUS, FETCH
MODSEQ and CHANGEDSINCE, STORE UNCHANGEDSINCE with ``[MODIFIED ...]`` (also
``UNCHANGEDSINCE 0`` and ``.SILENT``), MODSEQ in every FETCH response that
reports a flag change once enabled, SEARCH MODSEQ with ``(MODSEQ n)``, bad
input answered BAD, MODSEQs that survive a restart and never go backwards,
and a fuzz target for the new parsers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.imap import Raw, append_cmd, connect, highest, modseqs, ok, serve
from tests.support.server import WaypostServer

from waypost.protocols.imap import wire

DOMAIN = "cs.dom"
USERS = ("amy", "bea", "cal", "deb", "eli", "fay", "gil", "hal", "ida")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, DOMAIN, USERS)


def session(server: WaypostServer, user: str) -> Raw:
    return connect(server, f"{user}@{DOMAIN}")


def filled(server: WaypostServer, user: str, count: int) -> Raw:
    raw = session(server, user)
    for i in range(count):
        ok(raw.cmd(f"p{i}", append_cmd("INBOX", b"Subject: %d\r\n\r\nbody\r\n" % i)), f"p{i}")
    ok(raw.cmd("r", "SELECT INBOX"), "r")  # claims \Recent: the tests compare exact FLAGS
    ok(raw.cmd("r2", "UNSELECT"), "r2")
    return raw


def test_advertised_and_enabled(server: WaypostServer) -> None:
    raw = session(server, "amy")
    caps = ok(raw.cmd("c", "CAPABILITY"), "c")[0]
    assert b" CONDSTORE " in caps + b" " and b" QRESYNC" in caps
    assert ok(raw.cmd("e", "ENABLE CONDSTORE"), "e") == [b"* ENABLED CONDSTORE"]
    assert ok(raw.cmd("e2", "ENABLE QRESYNC CONDSTORE"), "e2") == [b"* ENABLED QRESYNC"]
    other = session(server, "amy")
    assert ok(other.cmd("e", "ENABLE QRESYNC"), "e") == [b"* ENABLED QRESYNC CONDSTORE"]
    raw.close()
    other.close()


def test_select_reports_highestmodseq_only_with_condstore(server: WaypostServer) -> None:
    raw = filled(server, "bea", 3)
    plain = ok(raw.cmd("s", "SELECT INBOX"), "s")
    assert not any(b"HIGHESTMODSEQ" in line for line in plain)
    status = ok(raw.cmd("t", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)"), "t")
    value = int(re.search(rb"HIGHESTMODSEQ (\d+)", status[0]).group(1))
    lines = ok(raw.cmd("s2", "EXAMINE INBOX (CONDSTORE)"), "s2")
    assert highest(lines) == value >= 3
    fresh = session(server, "bea")
    ok(fresh.cmd("c", "CREATE Empty"), "c")
    assert highest(ok(fresh.cmd("s", "SELECT Empty (CONDSTORE)"), "s")) == 1  # never 0
    raw.close()
    fresh.close()


def test_fetch_modseq_enables_condstore_and_changedsince_filters(server: WaypostServer) -> None:
    raw = filled(server, "cal", 3)
    ok(raw.cmd("s", "SELECT INBOX"), "s")
    lines = ok(raw.cmd("f", "FETCH 1:* (UID MODSEQ)"), "f")
    # the enabling command in a selected mailbox says HIGHESTMODSEQ first (§3.1.2)
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ ")
    before = modseqs(lines)
    assert sorted(before) == [1, 2, 3] and len(set(before.values())) == 3
    top = highest(lines)
    assert top == max(before.values())
    stored = ok(raw.cmd("k", "STORE 2 +FLAGS (\\Flagged)"), "k")
    # CONDSTORE on: the STORE's FETCH carries UID and MODSEQ (§3.1.3)
    assert len(stored) == 1 and re.fullmatch(
        rb"\* 2 FETCH \(UID 2 MODSEQ \((\d+)\) FLAGS \(\\Flagged\)\)", stored[0]
    ), stored
    changed = ok(raw.cmd("g", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {top})"), "g")
    assert changed == [b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (%d))" % (top + 1)]
    uid_changed = ok(raw.cmd("h", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {top + 1})"), "h")
    assert uid_changed == []
    everything = ok(raw.cmd("i", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0)"), "i")
    assert len(everything) == 3
    raw.close()


def test_store_unchangedsince_modified(server: WaypostServer) -> None:
    a, b = filled(server, "deb", 4), session(server, "deb")
    lines = ok(a.cmd("s", "SELECT INBOX (CONDSTORE)"), "s")
    top = highest(lines)
    ok(b.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("k", "STORE 1 +FLAGS (\\Answered)"), "k")  # message 1 changes behind a's back
    result = a.cmd("u", f"STORE 1:2 (UNCHANGEDSINCE {top}) +FLAGS.SILENT (\\Flagged)")
    assert result[-1].startswith(b"u OK [MODIFIED 1]"), result
    # .SILENT under CONDSTORE: still UID and MODSEQ of what changed (§3.1.3)
    assert any(re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\)\)", x) for x in result), result
    flags = ok(a.cmd("f", "FETCH 1:2 (FLAGS)"), "f")
    assert b"* 1 FETCH (FLAGS (\\Answered))" in b"\n".join(flags) or any(
        line.startswith(b"* 1 FETCH") and b"\\Flagged" not in line for line in flags
    ), flags
    assert any(line.startswith(b"* 2 FETCH") and b"\\Flagged" in line for line in flags)
    # UID STORE names UIDs; UNCHANGEDSINCE 0 fails every message
    result = a.cmd("z", "UID STORE 3:4 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert result[-1].startswith(b"z OK [MODIFIED 3:4]"), result
    assert not any(b"FETCH" in line for line in result[:-1])
    after = ok(a.cmd("f2", "FETCH 3:4 (FLAGS)"), "f2")
    assert all(b"\\Seen" not in line for line in after), after
    a.close()
    b.close()


def test_unsolicited_changes_carry_modseq(server: WaypostServer) -> None:
    a, b = filled(server, "eli", 2), session(server, "eli")
    ok(a.cmd("e", "ENABLE CONDSTORE"), "e")
    ok(a.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("k", "STORE 2 +FLAGS (\\Deleted)"), "k")
    lines = ok(a.cmd("n", "NOOP"), "n")
    assert any(
        re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\) FLAGS \(\\Deleted\)\)", x) for x in lines
    ), lines
    # a FETCH that sets \Seen reports UID, MODSEQ and the new FLAGS (§3.1)
    seen = ok(a.cmd("f", "FETCH 1 (BODY[TEXT])"), "f")
    assert re.match(rb"\* 1 FETCH \(UID 1 MODSEQ \((\d+)\) BODY\[TEXT\]", seen[0]), seen
    assert b"FLAGS (\\Seen)" in seen[0]
    a.close()
    b.close()


def test_search_modseq(server: WaypostServer) -> None:
    raw = filled(server, "fay", 3)
    top = highest(ok(raw.cmd("s", "SELECT INBOX (CONDSTORE)"), "s"))
    ok(raw.cmd("k", "STORE 1,3 +FLAGS.SILENT (\\Flagged)"), "k")
    found = ok(raw.cmd("f", f"SEARCH MODSEQ {top + 1}"), "f")
    assert found == [b"* SEARCH 1 3 (MODSEQ %d)" % (top + 1)]
    found = ok(raw.cmd("g", f'UID SEARCH MODSEQ "/flags/\\\\flagged" all {top}'), "g")
    assert found == [b"* SEARCH 1 3 (MODSEQ %d)" % (top + 1)]
    assert ok(raw.cmd("h", f"SEARCH MODSEQ {top + 2}"), "h") == [b"* SEARCH"]
    second = modseqs(ok(raw.cmd("m", "FETCH 2 (UID MODSEQ)"), "m"))[2]
    found = ok(raw.cmd("i", f"SEARCH NOT MODSEQ {second + 1}"), "i")
    assert found == [b"* SEARCH 2 (MODSEQ %d)" % second]
    assert raw.cmd("j", 'SEARCH MODSEQ "/flags/x" nobody 5')[-1].startswith(b"j BAD")
    assert raw.cmd("j2", 'SEARCH MODSEQ "nothing" all 5')[-1].startswith(b"j2 BAD")
    raw.close()


@pytest.mark.parametrize(
    "command",
    [
        "FETCH 1 (FLAGS) (CHANGEDSINCE)",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 99999999999999999999)",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 5 VANISHED)",
        "UID FETCH 1 (FLAGS) (VANISHED)",
        "FETCH 1 (FLAGS) (FOO 1)",
        "STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)",
        "STORE 1 (CHANGEDSINCE 5) +FLAGS (\\Seen)",
        "STORE 1 (UNCHANGEDSINCE 5 +FLAGS (\\Seen)",
        "SELECT INBOX (FOO)",
        "SELECT INBOX (CONDSTORE CONDSTORE)",
        "SEARCH MODSEQ",
        "SEARCH MODSEQ -1",
        "STATUS INBOX (HIGHESTMODSEQ FOO)",
    ],
)
def test_bad_input_is_bad(server: WaypostServer, command: str) -> None:
    raw = filled(server, "gil", 1) if command.startswith("FETCH") else session(server, "gil")
    ok(raw.cmd("s", "SELECT INBOX"), "s")
    lines = raw.cmd("x", command)
    assert lines[-1].startswith(b"x BAD"), lines
    assert ok(raw.cmd("n", "NOOP"), "n") is not None  # the connection goes on
    raw.close()


def test_modseqs_survive_a_restart_and_never_go_back(server: WaypostServer) -> None:
    raw = filled(server, "hal", 2)
    lines = ok(raw.cmd("s", "SELECT INBOX (CONDSTORE)"), "s")
    top = highest(lines)
    before = modseqs(ok(raw.cmd("f", "FETCH 1:* (UID MODSEQ)"), "f"))
    raw.close()
    server.stop()
    server.start()
    raw = session(server, "hal")
    assert highest(ok(raw.cmd("s", "SELECT INBOX (CONDSTORE)"), "s")) == top
    assert modseqs(ok(raw.cmd("f", "FETCH 1:* (UID MODSEQ)"), "f")) == before
    stored = ok(raw.cmd("k", "STORE 1 +FLAGS (\\Seen)"), "k")
    assert modseqs(stored) == {1: top + 1}
    raw.close()


# -- the parsers, fuzzed --------------------------------------------------------------------

PIECES = st.sampled_from([
    b"(", b")", b" ", b"CHANGEDSINCE", b"UNCHANGEDSINCE", b"VANISHED", b"MODSEQ", b"QRESYNC",
    b"CONDSTORE", b"0", b"1", b"9223372036854775807", b"9223372036854775808", b"1:*", b"*",
    b"$", b'"/flags/\\\\seen"', b"all", b"priv", b"+FLAGS", b"(\\Seen)", b"\"", b"{3}",
])  # fmt: skip
HEADS = st.sampled_from([
    b"a FETCH 1:* (FLAGS) ", b"a UID FETCH 1:* (FLAGS) ", b"a STORE 1 ", b"a UID STORE 1:* ",
    b"a SELECT INBOX ", b"a EXAMINE INBOX ", b"a SEARCH ", b"a UID SEARCH MODSEQ ",
    b"a STATUS INBOX ",
])  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HEADS, st.lists(PIECES, max_size=14))
def test_modseq_parsers_never_crash(head: bytes, pieces: list[bytes]) -> None:
    data = head + b"".join(pieces)
    try:
        command = wire.parse(data)
    except wire.ParseError as exc:
        assert exc.response().endswith(b"\r\n")
        return
    args = command.args
    for value in (
        getattr(args, "changedsince", None),
        getattr(args, "unchangedsince", None),
        getattr(getattr(args, "qresync", None), "modseq", None),
    ):
        assert value is None or 0 <= value <= wire.MAX_MODSEQ
    if getattr(args, "vanished", False):
        assert command.uid and args.changedsince is not None
