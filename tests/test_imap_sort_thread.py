"""SORT and THREAD (RFC 5256): the base subject, the sort keys, both thread
algorithms on the RFC's rules, properties on random mailboxes, and the
commands over real sockets against a ``waypost serve``."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.imap_raw import RawImap, append_command
from tests.support.server import WaypostServer

from waypost.protocols.imap import wire
from waypost.services.mailaccess import thread
from waypost.services.mailaccess.sort import (
    KEYS,
    SortData,
    base_subject,
    casemap,
    from_header,
    sort,
)

# -- the base subject (RFC 5256 §2.1) ------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "HELLO", False),
        ("Re: hello", "HELLO", True),
        ("RE: Re: re:hello", "HELLO", True),
        ("Fwd: hello", "HELLO", True),
        ("Fw: hello", "HELLO", True),
        ("hello (fwd)", "HELLO", True),
        ("hello (FWD) (fwd)  ", "HELLO", True),
        ("[fwd: hello]", "HELLO", True),
        ("[Fwd: Re: [list] hello (fwd)]", "HELLO", True),
        ("[list] Re: hello", "HELLO", True),
        ("Re [2]: hello", "HELLO", True),
        ("[list] hello", "HELLO", False),
        ("[list] [tag] hello", "HELLO", False),
        ("[only a blob]", "[ONLY A BLOB]", False),  # (4): the blob stays when nothing follows
        ("hello\t  world", "HELLO WORLD", False),
        ("   ", "", False),
        ("Re:", "", True),
        ("Grüße", "GRüßE", False),  # i;ascii-casemap folds ASCII only
        ("Reply to this", "REPLY TO THIS", False),  # "re" without a colon is text
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def test_casemap_is_ascii_only() -> None:
    assert casemap("abc-xyz äö") == "ABC-XYZ äö"


# -- SORT --------------------------------------------------------------------------------------


def msg(
    n: int, *, subject: str = "", date: float | None = None, arrival: float | None = None,
    size: int = 100, sender: str = "", to: str = "", cc: str = "", mid: str = "",
    refs: tuple[str, ...] = (),
) -> SortData:  # fmt: skip
    arrived = float(n) if arrival is None else arrival
    return SortData(
        n, n, arrived, size, arrived if date is None else date, subject,
        (sender.split("@")[0], sender), (to.split("@")[0], to), (cc.split("@")[0], cc), mid, refs,
    )  # fmt: skip


def test_sort_keys_reverse_and_ties_in_mailbox_order() -> None:
    ms = [
        msg(1, subject="Re: b", date=30, size=300, sender="carol@x", to="Zed@x"),
        msg(2, subject="a", date=10, size=100, sender="Bob@x", to="amy@x"),
        msg(3, subject="B", date=20, size=100, sender="alice@x", to="bob@x", cc="x@y"),
        msg(4, subject="[x] a", date=10, size=200, sender="bob@y"),
    ]
    assert sort(ms, [("SUBJECT", False)]) == [2, 4, 1, 3]
    assert sort(ms, [("DATE", False)]) == [2, 4, 3, 1]
    assert sort(ms, [("DATE", True)]) == [1, 3, 2, 4]  # ties stay in mailbox order
    assert sort(ms, [("SIZE", False), ("DATE", True)]) == [3, 2, 4, 1]
    assert sort(ms, [("FROM", False)]) == [3, 2, 4, 1]  # mailbox, ASCII case folded
    assert sort(ms, [("TO", False)]) == [4, 2, 3, 1]  # no To: sorts first
    assert sort(ms, [("CC", True), ("ARRIVAL", True)]) == [3, 4, 2, 1]
    assert sort(ms, [("SUBJECT", True), ("SIZE", True)]) == [1, 3, 4, 2]
    assert set(KEYS) == set(wire.SORT_KEYS)


def test_sort_data_from_a_header() -> None:
    head = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <Juergen (c)@ example.de>\r\n"
        b"To: undisclosed-recipients:;\r\n"
        b"Subject: Re: [l] Hi\r\n"
        b"Date: Tue, 02 Jan 2024 10:00:00 +0100\r\n"
        b"Message-ID: <a@b>\r\n"
        b"In-Reply-To: <x@y> <z@w>\r\n\r\n"
    )
    data = from_header(7, 3, 5.0, 42, head)
    assert data.sender == ("Juergen", "Jürgen")
    assert data.to == ("", "")
    assert data.date == 1704186000.0
    assert (data.message_id, data.references) == ("a@b", ("x@y",))
    bare = from_header(8, 4, 5.0, 42, b"Subject: x\r\nDate: not a date\r\n\r\n")
    assert bare.date == 5.0 and bare.sender == ("", "") and bare.references == ()
    refs = from_header(9, 5, 1.0, 1, b"References: <1@a>\r\n <2@a>\r\nIn-Reply-To: <3@a>\r\n\r\n")
    assert refs.references == ("1@a", "2@a")


# -- THREAD ---------------------------------------------------------------------------------


def test_ordered_subject() -> None:
    ms = [
        msg(1, subject="Hello", date=10),
        msg(2, subject="Other", date=5),
        msg(3, subject="Re: hello", date=30),
        msg(4, subject="RE: Hello", date=20),
        msg(5, subject="hello (fwd)", date=20),
    ]
    forest = thread.ordered_subject(ms)
    assert wire.thread_line(forest) == b"* THREAD (2)(1 (4)(5)(3))\r\n"


def test_references_links_dummies_and_subjects() -> None:
    ms = [
        msg(1, subject="root", mid="r@x"),
        msg(2, subject="Re: root", mid="c1@x", refs=("r@x",)),
        msg(3, subject="Re: root", mid="c2@x", refs=("r@x", "c1@x")),
        msg(4, subject="Re: root", mid="c3@x", refs=("r@x",)),
        # parent never seen: a dummy with one child is replaced by it
        msg(5, subject="lost", mid="l@x", refs=("gone@x",)),
        # two replies to a missing message: a dummy with two children stays at the top
        msg(6, subject="twins", mid="t1@x", refs=("missing@x",)),
        msg(7, subject="twins", mid="t2@x", refs=("missing@x",)),
        # same base subject, no references: gathered under the original (5C)
        msg(8, subject="Re: lost", mid="l2@x"),
    ]
    line = wire.thread_line(thread.references(ms))
    assert line == b"* THREAD (1 (2 3)(4))(5 8)((6)(7))\r\n"


def test_references_loops_duplicates_and_missing_ids() -> None:
    ms = [
        msg(1, subject="a", mid="a@x", refs=("b@x",)),
        msg(2, subject="b", mid="b@x", refs=("a@x",)),  # a loop: not linked twice
        msg(3, subject="c", mid="a@x"),  # duplicate Message-ID: its own
        msg(4, subject="d"),  # none
        msg(5, subject="e", mid="e@x", refs=("e@x",)),  # refers to itself
    ]
    forest = thread.references(ms)
    assert sorted(numbers(forest)) == [1, 2, 3, 4, 5]
    assert wire.thread_line(forest) == b"* THREAD (2 1)(3)(4)(5)\r\n"


def test_deep_chains_need_no_recursion() -> None:
    n = 5000
    ms = [
        msg(i, subject="x", mid=f"{i}@x", refs=(f"{i - 1}@x",) if i > 1 else ())
        for i in range(1, n + 1)
    ]
    forest = thread.references(ms)
    assert (
        wire.thread_line(forest)
        == b"* THREAD (" + b" ".join(b"%d" % i for i in range(1, n + 1)) + b")\r\n"
    )


def numbers(forest: list[thread.Tree]) -> list[int]:
    out, stack = [], list(forest)
    while stack:
        number, children = stack.pop()
        if number is not None:
            out.append(number)
        stack.extend(children)
    return out


def test_thread_line_shapes() -> None:
    assert wire.thread_line([]) == b"* THREAD\r\n"
    forest: list[thread.Tree] = [(2, []), (3, [(6, [(4, [(23, [])]), (44, [(7, [(96, [])])])])])]
    assert wire.thread_line(forest) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert wire.thread_line([(None, [(3, []), (5, [])])]) == b"* THREAD ((3)(5))\r\n"


_ids = st.sampled_from([f"{i}@x" for i in range(8)] + [""])
mailboxes = st.lists(
    st.tuples(
        st.sampled_from(["a", "Re: a", "b", "Fwd: b", "[l] c", "", "(fwd)"]),
        st.integers(0, 5), _ids, st.lists(_ids.filter(bool), max_size=4), st.integers(1, 9),
    ),
    max_size=30,
).map(lambda rows: [
    msg(i, subject=s, date=float(d), mid=m, refs=tuple(r), size=z, sender=f"u{z}@x")
    for i, (s, d, m, r, z) in enumerate(rows, 1)
])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(ms=mailboxes)
def test_every_message_exactly_once(ms: list[SortData]) -> None:
    expected = [m.number for m in ms]
    for algorithm in (thread.references, thread.ordered_subject):
        forest = algorithm(ms)
        assert sorted(numbers(forest)) == expected
        line = wire.thread_line(forest)
        assert sorted(int(n) for n in re.findall(rb"\d+", line)) == expected


def _ordered_subject_by_sorting(messages: list[SortData]) -> list[thread.Tree]:
    """The first ORDEREDSUBJECT: everything sorted on (base subject, date),
    then grouped; the model the grouping by dictionary must agree with."""
    order = sorted(messages, key=lambda m: (base_subject(m.subject)[0], m.date, m.seq))
    threads: list[tuple[SortData, list[thread.Tree]]] = []
    for _, group in itertools.groupby(order, key=lambda m: base_subject(m.subject)[0]):
        first, *rest = group
        threads.append((first, [(m.number, []) for m in rest]))
    threads.sort(key=lambda t: (t[0].date, t[0].seq))
    return [(first.number, children) for first, children in threads]


@settings(max_examples=300, deadline=None)
@given(ms=mailboxes)
def test_ordered_subject_agrees_with_sorting_everything(ms: list[SortData]) -> None:
    assert thread.ordered_subject(ms) == _ordered_subject_by_sorting(ms)


def _prune_by_splicing(root: thread._Node) -> None:
    """The first step 4 (§2.2), one dummy at a time, kept as the model that
    the linear one must agree with."""
    for node in reversed(thread._walk(root)):
        if node.message is not None:
            continue
        parent = node.parent
        assert parent is not None
        if node.children and parent is root and len(node.children) > 1:
            continue
        at = parent.children.index(node)
        for child in node.children:
            child.parent = parent
        parent.children[at : at + 1] = node.children


@settings(max_examples=300, deadline=None)
@given(ms=mailboxes)
def test_pruning_in_one_pass_per_parent_agrees_with_splicing(ms: list[SortData]) -> None:
    fast = thread.references(ms)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(thread, "_prune", _prune_by_splicing)
        assert thread.references(ms) == fast


@settings(max_examples=150, deadline=None)
@given(
    ms=mailboxes,
    criteria=st.lists(
        st.tuples(st.sampled_from(sorted(KEYS)), st.booleans()), min_size=1, max_size=4
    ),
)
def test_sort_is_a_permutation_ordered_by_the_first_key(
    ms: list[SortData], criteria: list[tuple[str, bool]]
) -> None:
    order = sort(ms, criteria)
    assert sorted(order) == [m.number for m in ms]
    name, reverse = criteria[0]
    keys = [KEYS[name](ms[n - 1]) for n in order]
    assert keys == sorted(keys, reverse=reverse)  # type: ignore[type-var]


# -- over the wire -------------------------------------------------------------------------

PW = "sort-pw-1234"
DOMAIN = "sort.dom"
_users = (f"s{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypostServer]:
    srv = WaypostServer(tmp_path_factory.mktemp("sort") / "var").init()
    srv.cli("domain", "add", DOMAIN)
    for i in range(4):
        srv.cli("account", "add", f"s{i}@{DOMAIN}", "--password", PW)
    srv.start()
    yield srv
    srv.stop()


MAILBOX = [
    # subject, date, from, message-id, references, flags
    ("Meeting", "Mon, 1 Jan 2024 10:00:00 +0000", "carol@x.org", "<m1@x>", "", "\\Seen"),
    (
        "Re: Meeting",
        "Mon, 1 Jan 2024 12:00:00 +0000",
        "Alice <alice@x.org>",
        "<m2@x>",
        "<m1@x>",
        "",
    ),
    ("Lunch", "Sun, 31 Dec 2023 09:00:00 +0000", "bob@x.org", "<m3@x>", "", "\\Seen"),
    ("Re: Meeting", "Mon, 1 Jan 2024 11:00:00 +0000", "dave@x.org", "<m4@x>", "<m1@x>", ""),
    ("[fwd: Lunch]", "Tue, 2 Jan 2024 08:00:00 +0000", "Bob <BOB@x.org>", "<m5@x>", "", ""),
]


@pytest.fixture(scope="module")
def sorted_box(server: WaypostServer) -> Iterator[RawImap]:
    c = RawImap(server.port("IMAPPort"))
    c.login(f"{next(_users)}@{DOMAIN}", PW)
    for subject, date, sender, mid, refs, flags in MAILBOX:
        text = f"From: {sender}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {mid}\r\n"
        if refs:
            text += f"References: {refs}\r\n"
        data = (text + "\r\nbody\r\n").encode()
        lines = c.cmd("A", append_command("INBOX", data, flags))
        assert lines[-1].startswith(b"A OK"), lines
    assert c.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
    yield c
    c.close()


def answer(c: RawImap, text: str) -> bytes:
    lines = c.cmd("T", text)
    assert lines[-1].startswith(b"T OK"), lines
    found = [line for line in lines if line.startswith((b"* SORT", b"* THREAD"))]
    assert len(found) == 1, lines
    return found[0]


def test_capabilities(sorted_box: RawImap) -> None:
    caps = sorted_box.cmd("C", "CAPABILITY")[0].split()
    for cap in (b"SORT", b"SORT=DISPLAY", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"):
        assert cap in caps


def test_sort_over_the_wire(sorted_box: RawImap) -> None:
    c = sorted_box
    assert answer(c, "SORT (DATE) UTF-8 ALL") == b"* SORT 3 1 4 2 5"
    assert answer(c, "SORT (SUBJECT DATE) UTF-8 ALL") == b"* SORT 3 5 1 4 2"
    assert answer(c, "SORT (REVERSE ARRIVAL) US-ASCII UNSEEN") == b"* SORT 5 4 2"
    assert answer(c, "SORT (FROM) UTF-8 ALL") == b"* SORT 2 3 5 1 4"
    assert answer(c, "SORT (DISPLAYFROM) UTF-8 ALL") == b"* SORT 2 5 3 1 4"
    assert answer(c, "SORT (SIZE) UTF-8 KEYWORD $none") == b"* SORT"
    arrival = answer(c, "UID SORT (ARRIVAL) UTF-8 ALL").split()[2:]
    assert arrival == sorted(arrival, key=int) and len(arrival) == 5
    by_date = answer(c, "UID SORT (DATE) UTF-8 ALL").split()[2:]
    assert by_date == [arrival[n - 1] for n in (3, 1, 4, 2, 5)]


def test_thread_over_the_wire(sorted_box: RawImap) -> None:
    c = sorted_box
    assert answer(c, "THREAD REFERENCES UTF-8 ALL") == b"* THREAD (3 5)(1 (4)(2))"
    assert answer(c, "THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (3 5)(1 (4)(2))"
    # 2 and 4 answer 1, which is not among the unseen: a dummy parent holds them
    assert answer(c, "THREAD REFERENCES UTF-8 UNSEEN") == b"* THREAD ((4)(2))(5)"
    assert answer(c, "UID THREAD REFERENCES UTF-8 NOT ALL") == b"* THREAD"


def test_sort_and_thread_refuse_bad_arguments(sorted_box: RawImap) -> None:
    c = sorted_box
    for bad in (
        "SORT (FOO) UTF-8 ALL", "SORT () UTF-8 ALL", "SORT (DATE) UTF-8", "SORT DATE UTF-8 ALL",
        "THREAD FOO UTF-8 ALL", "THREAD REFERENCES", "SORT (REVERSE) UTF-8 ALL",
    ):  # fmt: skip
        assert c.cmd("B", bad)[-1].startswith(b"B BAD"), bad
    assert c.cmd("N", "SORT (DATE) KOI8-R ALL")[-1].startswith(b"N NO [BADCHARSET")
    assert c.cmd("N", "THREAD REFERENCES KOI8-R ALL")[-1].startswith(b"N NO [BADCHARSET")


def test_the_stored_summary_sorts_as_the_head_does() -> None:
    from waypost.services.mailaccess.sort import SUMMARY_KEYS, from_summary
    from waypost.services.mailstore import summarize

    data = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <Juergen (c)@ example.de>\r\n"
        b"Subject: Re: [l]\r\n  Hi\r\nDate: Tue, 02 Jan 2024 10:00:00 +0100\r\n"
        b"Message-ID: <a@b>\r\n\r\nbody\r\n"
    )
    head, summary = from_header(1, 1, 5.0, 9, data), from_summary(1, 1, 5.0, 9, summarize(data))
    for name in SUMMARY_KEYS:
        assert KEYS[name](summary) == KEYS[name](head), name
        only = from_summary(1, 1, 5.0, 9, summarize(data), {name})  # parses just that key
        assert KEYS[name](only) == KEYS[name](head), name
    for name in KEYS:
        assert KEYS[name](from_header(1, 1, 5.0, 9, data, {name})) == KEYS[name](head), name
