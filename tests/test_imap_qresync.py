"""QRESYNC (RFC 7162 §3.2) over real sockets: the QRESYNC parameter of
SELECT/EXAMINE (VANISHED (EARLIER) for the known UIDs expunged since, FETCH
with MODSEQ for what changed, nothing for another UIDVALIDITY, BAD before
ENABLE QRESYNC), ``* OK [CLOSED]`` when a SELECT replaces a mailbox (never
for IMAP4rev1 clients without QRESYNC), ``* VANISHED`` instead of ``* n
EXPUNGE`` for EXPUNGE, UID EXPUNGE, MOVE and other sessions' expunges, a
silent CLOSE, HIGHESTMODSEQ in the tagged OK of EXPUNGE and CLOSE, and UID
FETCH ... (CHANGEDSINCE n VANISHED).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
from tests.support.imap import Raw, append_cmd, connect, highest, modseqs, ok, serve
from tests.support.server import WaypostServer

DOMAIN = "qr.dom"
USERS = ("ada", "bo", "cy", "di", "ed", "flo")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    yield from serve(tmp_path_factory, DOMAIN, USERS)


def session(server: WaypostServer, user: str, *, qresync: bool = True) -> Raw:
    raw = connect(server, f"{user}@{DOMAIN}")
    if qresync:
        assert ok(raw.cmd("e", "ENABLE QRESYNC"), "e") == [b"* ENABLED QRESYNC CONDSTORE"]
    return raw


def fill(raw: Raw, count: int, mailbox: str = "INBOX") -> None:
    for i in range(count):
        ok(raw.cmd(f"p{i}", append_cmd(mailbox, b"Subject: %d\r\n\r\nbody\r\n" % i)), f"p{i}")


def stored_modseq(server: WaypostServer, user: str) -> int:
    """INBOX's HIGHESTMODSEQ, asked by a session of its own."""
    raw = session(server, user, qresync=False)
    line = ok(raw.cmd("t", "STATUS INBOX (HIGHESTMODSEQ)"), "t")[0]
    raw.close()
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", line).group(1))


def uidvalidity(lines: list[bytes]) -> int:
    return int(next(re.search(rb"UIDVALIDITY (\d+)", x).group(1) for x in lines if b"UIDVAL" in x))


def test_select_qresync_reports_vanished_and_changed(server: WaypostServer) -> None:
    a = session(server, "ada")
    fill(a, 5)
    lines = ok(a.cmd("s", "SELECT INBOX"), "s")
    validity, top = uidvalidity(lines), highest(lines)
    a.close()
    b = session(server, "ada", qresync=False)  # the changes happen while a is away
    ok(b.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("k", "STORE 2 +FLAGS (\\Flagged)"), "k")
    ok(b.cmd("d", "STORE 3:4 +FLAGS (\\Deleted)"), "d")
    ok(b.cmd("x", "EXPUNGE"), "x")
    b.close()
    a = session(server, "ada")
    lines = ok(a.cmd("q", f"SELECT INBOX (QRESYNC ({validity} {top}))"), "q")
    assert b"* VANISHED (EARLIER) 3:4" in lines, lines
    changed = modseqs(lines)
    assert sorted(changed) == [2], lines
    assert any(re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\) FLAGS \(\\Flagged\)\)", x)
               for x in lines), lines  # fmt: skip
    assert highest(lines) > max(changed.values())  # the expunge came later
    # VANISHED only for the known UIDs; the sequence match data is accepted
    lines = ok(a.cmd("r", f"EXAMINE INBOX (QRESYNC ({validity} {top} 1:3 (1:2 1:2)))"), "r")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b"* VANISHED (EARLIER) 3" in lines, lines
    # another UIDVALIDITY: a plain SELECT (with HIGHESTMODSEQ)
    lines = ok(a.cmd("t", f"SELECT INBOX (QRESYNC ({validity + 1} {top}))"), "t")
    assert not any(b"VANISHED" in x or b"FETCH" in x for x in lines), lines
    a.close()


def test_qresync_needs_enable(server: WaypostServer) -> None:
    raw = session(server, "bo", qresync=False)
    lines = raw.cmd("s", "SELECT INBOX (QRESYNC (1 1))")
    assert lines[-1].startswith(b"s BAD"), lines
    ok(raw.cmd("e", "ENABLE CONDSTORE"), "e")
    assert raw.cmd("s2", "SELECT INBOX (QRESYNC (1 1))")[-1].startswith(b"s2 BAD")
    ok(raw.cmd("s3", "SELECT INBOX"), "s3")
    assert raw.cmd("f", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"f BAD")
    raw.close()


def test_closed_only_with_qresync(server: WaypostServer) -> None:
    plain = session(server, "cy", qresync=False)
    ok(plain.cmd("c", "CREATE Other"), "c")
    ok(plain.cmd("s", "SELECT INBOX"), "s")
    assert not any(b"CLOSED" in x for x in ok(plain.cmd("s2", "SELECT Other"), "s2"))
    plain.close()
    raw = session(server, "cy")
    ok(raw.cmd("s", "SELECT INBOX"), "s")
    lines = ok(raw.cmd("s2", "EXAMINE Other"), "s2")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed", lines
    # a SELECT that fails still closed the mailbox: CLOSED, then NO
    lines = raw.cmd("s3", "SELECT Nowhere")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed" and lines[-1].startswith(b"s3 NO")
    assert not any(b"CLOSED" in x for x in ok(raw.cmd("s4", "SELECT INBOX"), "s4"))
    raw.close()


def test_expunges_are_vanished(server: WaypostServer) -> None:
    a, b = session(server, "di"), session(server, "di", qresync=False)
    fill(a, 6)
    ok(a.cmd("c", "CREATE Dest"), "c")
    ok(a.cmd("s", "SELECT INBOX"), "s")
    ok(b.cmd("s", "SELECT INBOX"), "s")
    ok(a.cmd("d", "STORE 2,4 +FLAGS.SILENT (\\Deleted)"), "d")
    lines = a.cmd("x", "EXPUNGE")
    assert b"* VANISHED 2,4" in lines and not any(b"EXPUNGE" in x for x in lines[:-1]), lines
    # the tagged OK carries the new HIGHESTMODSEQ (what QRESYNC clients keep)
    after_expunge = int(re.match(rb"x OK \[HIGHESTMODSEQ (\d+)\]", lines[-1]).group(1))
    assert stored_modseq(server, "di") == after_expunge
    # the IMAP4rev1 session sees EXPUNGE as before
    plain = ok(b.cmd("n", "NOOP"), "n")
    assert plain.count(b"* 2 EXPUNGE") == 1 and b"* 3 EXPUNGE" in plain, plain
    # another session's expunge, UID EXPUNGE, MOVE: VANISHED
    ok(b.cmd("d", "STORE 1 +FLAGS (\\Deleted)"), "d")
    assert b.cmd("x", "EXPUNGE")[-1] == b"x OK EXPUNGE completed"  # no CONDSTORE: no code
    assert b"* VANISHED 1" in ok(a.cmd("n", "NOOP"), "n")
    ok(a.cmd("d2", "UID STORE 3 +FLAGS (\\Deleted)"), "d2")
    assert b"* VANISHED 3" in ok(a.cmd("u", "UID EXPUNGE 3"), "u")
    lines = ok(a.cmd("m", "UID MOVE 5 Dest"), "m")
    assert b"* VANISHED 5" in lines and not any(b"EXPUNGE" in x for x in lines), lines
    # CLOSE expunges silently
    ok(a.cmd("d3", "STORE 1 +FLAGS (\\Deleted)"), "d3")
    lines = a.cmd("z", "CLOSE")
    assert len(lines) == 1, lines
    closed = int(re.match(rb"z OK \[HIGHESTMODSEQ (\d+)\] CLOSE", lines[0]).group(1))
    assert stored_modseq(server, "di") == closed
    a.close()
    b.close()


def test_uid_fetch_changedsince_vanished(server: WaypostServer) -> None:
    a = session(server, "ed")
    fill(a, 5)
    top = highest(ok(a.cmd("s", "SELECT INBOX"), "s"))
    ok(a.cmd("d", "STORE 2,5 +FLAGS.SILENT (\\Deleted)"), "d")
    ok(a.cmd("x", "EXPUNGE"), "x")
    ok(a.cmd("k", "UID STORE 3 +FLAGS.SILENT (\\Seen)"), "k")
    lines = ok(a.cmd("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {top} VANISHED)"), "f")
    assert lines[0] == b"* VANISHED (EARLIER) 2,5", lines
    assert len(lines) == 2 and re.fullmatch(
        rb"\* 2 FETCH \(UID 3 FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)", lines[1]
    ), lines
    lines = ok(a.cmd("g", f"UID FETCH 1:3 (FLAGS) (VANISHED CHANGEDSINCE {top})"), "g")
    assert lines[0] == b"* VANISHED (EARLIER) 2", lines
    a.close()


def flags_of(lines: list[bytes]) -> dict[int, frozenset[bytes]]:
    """UID -> flags (without \\Recent) of the FETCH responses."""
    out = {}
    for line in lines:
        m = re.match(rb"\* \d+ FETCH \(.*?UID (\d+).*?FLAGS \(([^)]*)\)", line)
        if m:
            out[int(m.group(1))] = frozenset(m.group(2).split()) - {b"\\Recent"}
    return out


def test_resynchronised_cache_matches_the_mailbox(server: WaypostServer) -> None:
    """A client cache kept only by QRESYNC (VANISHED (EARLIER) and FETCH of
    what changed) equals the mailbox after every round of random changes."""
    rng = random.Random(7162)
    writer = session(server, "flo", qresync=False)
    fill(writer, 8)
    ok(writer.cmd("s", "SELECT INBOX"), "s")
    reader = session(server, "flo")
    lines = ok(reader.cmd("s", "SELECT INBOX"), "s")
    validity, modseq = uidvalidity(lines), highest(lines)
    cache = flags_of(ok(reader.cmd("f", "UID FETCH 1:* (FLAGS)"), "f"))
    reader.close()
    for round_ in range(6):  # bounded
        for step in range(5):
            tag = f"w{round_}{step}"
            action = rng.choice(("flag", "flag", "unflag", "expunge", "append"))
            if action == "append":
                ok(writer.cmd(tag, append_cmd("INBOX", b"Subject: r\r\n\r\nx\r\n")), tag)
            elif action == "expunge":
                ok(writer.cmd(tag, "STORE 1 +FLAGS.SILENT (\\Deleted)"), tag)
                ok(writer.cmd(tag + "x", "EXPUNGE"), tag + "x")
            else:
                sign = "+" if action == "flag" else "-"
                flag = rng.choice(("\\Flagged", "\\Seen", "$Work"))
                ok(writer.cmd(tag, f"STORE 1:* {sign}FLAGS.SILENT ({flag})"), tag)
        reader = session(server, "flo")
        lines = ok(reader.cmd("q", f"SELECT INBOX (QRESYNC ({validity} {modseq}))"), "q")
        for line in lines:
            if line.startswith(b"* VANISHED (EARLIER) "):
                for part in line.split()[3].split(b","):
                    low, _, high = part.partition(b":")
                    for uid in range(int(low), int(high or low) + 1):
                        cache.pop(uid, None)
        cache.update(flags_of(lines))
        modseq = highest(lines)
        truth = flags_of(ok(reader.cmd("t", "UID FETCH 1:* (FLAGS)"), "t"))
        new = {uid: f for uid, f in truth.items() if uid not in cache}  # arrived: fetched by UID
        cache.update(new)
        assert cache == truth, (round_, lines)
        reader.close()
    writer.close()
