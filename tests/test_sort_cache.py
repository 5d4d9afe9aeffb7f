"""The SORT/THREAD key and answer cache (``sortkeys.py``): the cached path
answers as the pure algorithms do on the messages' own heads, after random
appends, expunges and flag changes made by another session; a replaced
mailbox (new UIDVALIDITY) is never answered from the old one's keys; and
the cache's own bounds."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.imap_raw import RawImap
from tests.support.server import WaypostServer

from waypost.protocols.imap import wire
from waypost.services.mailaccess import sort as sorting
from waypost.services.mailaccess import sortkeys
from waypost.services.mailaccess import thread as threads

PW = "sort-cache-pw-1"
DOMAIN = "sortcache.dom"
_boxes = (f"box{i}" for i in itertools.count())
CACHE_LIMIT = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sortcache") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    srv.cli("account", "add", f"u@{DOMAIN}", "--password", PW)
    # small, so that the random mailboxes below go past it now and then (the cache starts again)
    srv.cli("settings", "set", "SortCacheMessages", str(CACHE_LIMIT))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sessions(server: WaypostServer) -> Iterator[tuple[RawImap, RawImap]]:
    """A reader (SORT, THREAD) and a writer (APPEND, STORE, EXPUNGE)."""
    reader, writer = RawImap(server.port("IMAPPort")), RawImap(server.port("IMAPPort"))
    reader.login(f"u@{DOMAIN}", PW)
    writer.login(f"u@{DOMAIN}", PW)
    yield reader, writer
    reader.close()
    writer.close()


def ok(c: RawImap, command: str | bytes) -> list[bytes]:
    lines = c.cmd("T", command)
    assert lines[-1].startswith(b"T OK"), lines
    return lines


SUBJECTS = ("Plan", "Re: Plan", "Fwd: plan", "[list] Lunch", "lunch (fwd)", "", "Zebra")
SENDERS = ("Carol <carol@x.org>", "bob@x.org", "=?utf-8?q?J=C3=BCrgen?= <j@y.de>", "")
DATES = ("Mon, 1 Jan 2024 10:00:00 +0000", "Sun, 31 Dec 2023 23:00:00 -0500", "bad date", "")


@dataclass
class Message:
    uid: int
    data: bytes
    arrival: float
    flags: set[str] = field(default_factory=set)


def message_bytes(n: int, subject: int, sender: int, to: int, date: int, parent: int) -> bytes:
    head = f"Message-ID: <m{n}@t>\r\nSubject: {SUBJECTS[subject]}\r\n"
    if SENDERS[sender]:
        head += f"From: {SENDERS[sender]}\r\n"
    if SENDERS[to]:
        head += f"To: {SENDERS[to]}\r\nCc: {SENDERS[(to + 1) % len(SENDERS)]}\r\n"
    if DATES[date]:
        head += f"Date: {DATES[date]}\r\n"
    if parent >= 0:
        head += f"References: <m{parent}@t>\r\n"
    return (head + "\r\n" + "x" * (n % 7) + "\r\n").encode()


QUERIES = (
    "SORT (DATE) UTF-8 ALL",
    "SORT (ARRIVAL) UTF-8 FLAGGED",
    "SORT (SUBJECT REVERSE SIZE) UTF-8 ALL",
    "SORT (FROM DATE) UTF-8 UNSEEN",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (TO CC) UTF-8 ALL",
    "SORT (DISPLAYTO REVERSE DATE) UTF-8 NOT FLAGGED",
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD REFERENCES UTF-8 UNSEEN",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
)


def expected(model: list[Message], query: str, uid: bool) -> bytes:
    """The answer of the pure algorithms on the heads the test wrote."""
    command, rest = query.split(" ", 1)
    program = rest.rsplit("UTF-8 ", 1)[1]
    chosen = [
        m for m in model
        if program == "ALL"
        or (program == "FLAGGED" and "\\Flagged" in m.flags)
        or (program == "NOT FLAGGED" and "\\Flagged" not in m.flags)
        or (program == "UNSEEN" and "\\Seen" not in m.flags)
    ]  # fmt: skip
    data = [
        sorting.from_header(m.uid, m.uid, m.arrival, len(m.data), m.data.split(b"\r\n\r\n")[0])
        for m in chosen
    ]
    seqs = {m.uid: i + 1 for i, m in enumerate(model)}
    number = (lambda u: u) if uid else seqs.__getitem__
    if command == "SORT":
        words = rest[1 : rest.index(")")].split()
        criteria, reverse = [], False
        for word in words:
            if word == "REVERSE":
                reverse = True
            else:
                criteria.append((word, reverse))
                reverse = False
        numbers = [number(u) for u in sorting.sort(data, criteria)]
        return b" ".join([b"* SORT", *(b"%d" % n for n in numbers)])
    build = threads.references if rest.startswith("REFERENCES") else threads.ordered_subject
    return wire.thread_line(sortkeys.renumber(build(data), number)).rstrip(b"\r\n")


def answer(c: RawImap, query: str) -> bytes:
    lines = ok(c, query)
    found = [line for line in lines if line.startswith((b"* SORT", b"* THREAD"))]
    assert len(found) == 1, lines
    return found[0]


APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")

Op = tuple[str, int, int, int, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), *(st.integers(0, 6),) * 3, st.integers(0, 3),
                  st.integers(-1, 8)),
        st.tuples(st.just("expunge"), st.integers(0, 50), st.just(0), st.just(0), st.just(0),
                  st.just(0)),
        st.tuples(st.sampled_from(["+flagged", "-flagged", "+seen", "-seen"]),
                  st.integers(0, 50), st.just(0), st.just(0), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=20,
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=ops, queries=st.lists(st.sampled_from(QUERIES), min_size=1, max_size=4, unique=True))
def test_cached_answers_equal_uncached_after_changes(
    sessions: tuple[RawImap, RawImap], script: list[Op], queries: list[str]
) -> None:
    """A few queries (fewer than the answers the cache keeps, so that answers
    from before a change are still there to be wrongly served), checked
    after every change."""
    reader, writer = sessions
    box = next(_boxes)
    ok(writer, f"CREATE {box}")
    ok(writer, f"SELECT {box}")
    ok(reader, f"SELECT {box}")
    model: list[Message] = []
    counter = itertools.count(1)

    def check() -> None:
        ok(reader, "NOOP")  # the reader sees the writer's changes
        for query in queries:
            for uid in (False, True):
                text = ("UID " if uid else "") + query
                assert answer(reader, text) == expected(model, query, uid), (text, model)
                assert answer(reader, text) == expected(model, query, uid), text  # cached

    for name, a, b, c, d, e in script:
        if name == "append":
            n = next(counter)
            data = message_bytes(n, a % len(SUBJECTS), b % len(SENDERS), c % len(SENDERS), d, e)
            day = 1 + n % 28
            command = b'APPEND %s () "%02d-Feb-2024 10:00:00 +0000" {%d+}\r\n%s' % (
                box.encode(), day, len(data), data,
            )  # fmt: skip
            done = ok(writer, command)[-1]
            uid = int(APPENDUID.search(done).group(1))  # type: ignore[union-attr]
            model.append(Message(uid, data, 1706781600.0 + (day - 1) * 86400))
        elif model:
            m = model[a % len(model)]
            if name == "expunge":
                ok(writer, f"UID STORE {m.uid} +FLAGS.SILENT (\\Deleted)")
                ok(writer, "EXPUNGE")
                model.remove(m)
            else:
                flag = "\\Flagged" if "flagged" in name else "\\Seen"
                ok(writer, f"UID STORE {m.uid} {name[0]}FLAGS.SILENT ({flag})")
                (m.flags.add if name[0] == "+" else m.flags.discard)(flag)
        check()  # after every change: the answers cached before it must not be served
    ok(reader, "UNSELECT")
    ok(writer, "UNSELECT")


def test_a_replaced_mailbox_is_not_answered_from_the_old_keys(
    sessions: tuple[RawImap, RawImap],
) -> None:
    reader, writer = sessions
    box = next(_boxes)
    first = [message_bytes(n, n % 7, n % 4, 0, 0, -1) for n in range(1, 4)]
    second = [message_bytes(n, 6 - n % 7, 3 - n % 4, 1, 1, n - 1) for n in range(11, 14)]
    seen = []
    for batch in (first, second):
        ok(writer, f"CREATE {box}")
        model = []
        for data in batch:
            done = ok(writer, b"APPEND %s {%d+}\r\n%s" % (box.encode(), len(data), data))[-1]
            uid = int(APPENDUID.search(done).group(1))  # type: ignore[union-attr]
            model.append(Message(uid, data, 0.0))
        ok(reader, f"SELECT {box}")
        got = [answer(reader, f"UID {q}") for q in QUERIES[2:3] + QUERIES[7:8]]
        assert got == [expected(model, q, True) for q in QUERIES[2:3] + QUERIES[7:8]]
        seen.append(([m.uid for m in model], got))
        ok(reader, "UNSELECT")
        ok(writer, f"DELETE {box}")
    (uids1, got1), (uids2, got2) = seen
    assert uids1 == uids2  # the new mailbox numbers from 1 again (a new UIDVALIDITY)
    assert got1 != got2  # so the old keys would have given the old answers


def test_the_cache_drops_expunged_keys_and_keeps_its_bound() -> None:
    cache = sortkeys.SortKeys(uidvalidity=7, limit=100)
    entries = [sortkeys.entry(uid, 0.0, 1, {"subject": f"s{uid}"}, None) for uid in range(1, 81)]
    cache.add(entries, range(1, 81))
    assert len(cache.entries) == 80 and not cache.complete
    have, missing = cache.lookup([1, 2, 200], summary_will_do=True)
    assert [d.number for d in have] == [1, 2] and missing == [200]
    assert cache.lookup([1], summary_will_do=False) == ([], [1])  # summary only: TO needs the head
    cache.add([sortkeys.entry(90, 0.0, 1, None, b"To: a@b\r\n\r\n")], range(1, 11))
    assert sorted(cache.entries) == [*range(1, 11), 90]  # the expunged ones went
    assert cache.complete == {90}
    cache.add([sortkeys.entry(u, 0.0, 1, {}, None) for u in range(200, 300)], range(1, 400))
    assert len(cache.entries) <= 100  # over the limit: started again, never above it


def test_renumber_keeps_the_shape() -> None:
    forest: list[threads.Tree] = [(10, [(None, [(20, []), (30, [(40, [])])])]), (50, [])]
    assert sortkeys.renumber(forest, lambda u: u // 10) == [
        (1, [(None, [(2, []), (3, [(4, [])])])]),
        (5, []),
    ]


CRITERIA = st.lists(
    st.tuples(st.sampled_from(sorted(sorting.KEYS)), st.booleans()), min_size=1, max_size=3
)


@settings(max_examples=200, deadline=None)
@given(
    heads=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 3),
                             st.integers(0, 3), st.integers(0, 4)), min_size=0, max_size=40),
    gone=st.sets(st.integers(1, 40), max_size=10),
    new=st.integers(0, 8),
    criteria=CRITERIA,
)  # fmt: skip
def test_a_merged_sort_order_is_the_full_sort(
    heads: list[tuple[int, int, int, int, int]], gone: set[int], new: int,
    criteria: list[tuple[str, bool]],
) -> None:
    """What a SORT after a change answers from the last order (sortkeys.difference,
    sorting.merged) is what sorting everything again gives, ties included."""
    data = [
        sorting.from_header(uid, uid, float(uid % 3), size + uid % 2,
                            message_bytes(uid, s, f, t, d, -1).split(b"\r\n\r\n")[0])
        for uid, (s, f, t, d, size) in enumerate(heads, 1)
    ]  # fmt: skip
    before, added = data[: len(data) - min(new, len(data))], data[len(data) - min(new, len(data)):]
    after = [m for m in before if m.number not in gone] + added
    change = sortkeys.difference(tuple(m.number for m in before), tuple(m.number for m in after))
    assert change is not None  # small changes are merged
    assert change[0] == {m.number for m in before} - {m.number for m in after}
    assert change[1] == [m.number for m in added]
    merged = sorting.merged(sorting.ordered(before, criteria), change[0], added, criteria)
    assert [m.number for m in merged] == sorting.sort(after, criteria)


def test_a_large_change_is_sorted_again() -> None:
    before = tuple(range(1, 1001))
    assert sortkeys.difference(before, (*before, 1001)) == (set(), [1001])
    assert sortkeys.difference(before, before[500:]) is None  # half the mailbox went
    assert sortkeys.difference(before, (*before, *range(2000, 2200))) is None
