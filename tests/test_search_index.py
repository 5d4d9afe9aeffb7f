"""Flag searches from the index's bitmaps (``flagsets.py``) give exactly what
the per-message evaluator gives, on random mailboxes changed at random.

The mailboxes live in a real SQLite store behind a real ``MailAccess``; the
expected answer is computed from the store's own rows with the pure
evaluator (``search.search``), so a bitmap that the index failed to keep
current (a flag change, an arrival, an expunge) shows as a difference.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.services.container import Services, open_services
from waypost.services.mailaccess import flagsets
from waypost.services.mailaccess.criteria import SearchKey, SequenceSet
from waypost.services.mailaccess.search import LazyMessage, SearchContext, search
from waypost.services.mailaccess.service import MailAccess

ALICE = "alice@main.dom"
FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "\\Draft", "$Work", "$junk")
_boxes = itertools.count(1)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services = open_services(tmp_path_factory.mktemp("flagsets") / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    yield services
    services.close()


@pytest.fixture(scope="module")
def mail(svc: Services) -> MailAccess:
    access = MailAccess(svc)
    access.ensure_inbox(ALICE)
    return access


# -- random programs ----------------------------------------------------------------------

_SIMPLE = [
    "ALL", "ANSWERED", "UNANSWERED", "DELETED", "UNDELETED", "DRAFT", "UNDRAFT", "FLAGGED",
    "UNFLAGGED", "SEEN", "UNSEEN", "RECENT", "NEW", "OLD",
]  # fmt: skip


def _seqset() -> st.SearchStrategy[SequenceSet]:
    bound = st.one_of(st.none(), st.integers(1, 40))
    return st.one_of(
        st.just(SequenceSet(saved=True)),
        st.lists(st.tuples(bound, bound), min_size=1, max_size=3).map(
            lambda r: SequenceSet(tuple(r))
        ),
    )


_leaf = st.one_of(
    st.sampled_from(_SIMPLE).map(SearchKey),
    st.tuples(
        st.sampled_from(["KEYWORD", "UNKEYWORD"]), st.sampled_from(["$work", "$Junk", "$none"])
    ).map(lambda t: SearchKey(t[0], (t[1],))),
    st.tuples(st.sampled_from(["SEQ", "UID"]), _seqset()).map(lambda t: SearchKey(t[0], (t[1],))),
)
programs = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        inner.map(lambda k: SearchKey("NOT", (k,))),
        st.tuples(inner, inner).map(lambda t: SearchKey("OR", t)),
        st.lists(inner, min_size=2, max_size=3).map(lambda ks: SearchKey("AND", tuple(ks))),
    ),
    max_leaves=6,
)
flag_sets = st.lists(st.sampled_from(FLAGS), max_size=3, unique=True)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), flag_sets),
        st.tuples(st.just("store"), st.tuples(st.integers(0, 30), flag_sets,
                                              st.sampled_from(["add", "remove", "set"]))),
        st.tuples(st.just("expunge"), st.lists(st.integers(0, 30), max_size=40)),
    ),
    min_size=1,
    max_size=25,
)  # fmt: skip


def expected(
    mail: MailAccess, ref: tuple[str, str, str], key: SearchKey, recent: tuple[int, int],
    saved: frozenset[int], uid: bool,
) -> list[int]:  # fmt: skip
    """The per-message answer, from the store's rows."""
    rows = mail.services.store.mail_index(*ref)
    messages = [
        LazyMessage(
            seq, row.uid,
            (*row.flags, "\\Recent") if recent[0] <= row.uid < recent[1] else row.flags,
            row.internal_date, row.size, lambda: b"",
        )
        for seq, row in enumerate(rows, 1)
    ]  # fmt: skip
    ctx = SearchContext(len(rows), rows[-1].uid if rows else 0, saved)
    return [m.uid if uid else m.seq for m in search(key, messages, ctx)]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, keys=st.lists(programs, min_size=1, max_size=4), data=st.data())
def test_bitmaps_equal_the_per_message_answer(
    mail: MailAccess, ops: list, keys: list[SearchKey], data: st.DataObject
) -> None:
    name = f"box{next(_boxes)}"
    mail.create(ALICE, name)
    opened = mail.select(ALICE, name, examine=False).opened
    ref = opened.target.ref
    for op, arg in ops:
        uids = [row.uid for row in mail.services.store.mail_index(*ref)]
        if op == "append":
            mail.append(ALICE, name, b"Subject: x\r\n\r\nx\r\n", arg)
        elif op == "store" and uids:
            at, flags, mode = arg
            mail.store_flags(opened, uids[at % len(uids) :: 3], flags, mode)
        elif op == "expunge" and uids:
            chosen = sorted({uids[i % len(uids)] for i in arg})
            mail.store_flags(opened, chosen, ["\\Deleted"], "add")
            mail.expunge(opened, chosen)
        # searches between changes keep the bitmaps built, so they are changed, not rebuilt
        view = mail.select(ALICE, name, examine=True).uids
        assert mail.search(opened, view, SearchKey("UNSEEN"), (), True) == expected(
            mail, ref, SearchKey("UNSEEN"), (0, 0), frozenset(), True
        )
    view = mail.select(ALICE, name, examine=True).uids
    low = data.draw(st.integers(0, 60))
    recent = (low, low + data.draw(st.integers(0, 20)))
    saved = frozenset(data.draw(st.lists(st.integers(1, 60), max_size=8)))
    for key in keys:
        for uid in (True, False):
            want = expected(mail, ref, key, recent, saved, uid)
            with mail.index(opened) as index:
                fast = MailAccess._search_bitmaps(index, view, key, [recent], saved, uid)
            assert fast == want, key
            assert mail.search(opened, view, key, [recent], uid, saved=saved) == want


# -- the bitmaps themselves ---------------------------------------------------------------


@given(
    flags=st.lists(st.lists(st.sampled_from(FLAGS), max_size=3).map(tuple), max_size=80),
    gone=st.lists(st.integers(0, 79), max_size=50),
)
def test_removed_positions_equal_a_rebuild(flags: list[tuple[str, ...]], gone: list[int]) -> None:
    sets = flagsets.FlagSets()
    sets.current(flags)
    positions = sorted({i for i in gone if i < len(flags)})
    sets.removed(positions)
    left = [f for i, f in enumerate(flags) if i not in set(positions)]
    fresh = flagsets.FlagSets().current(left)
    assert {flag: bits for flag, bits in sets.current(left).items() if bits} == fresh


def test_members_and_case_insensitive_flags() -> None:
    sets = flagsets.FlagSets()
    bits = sets.current([("\\Seen",), ("$Work",), ("\\SEEN", "$work"), ()])
    assert flagsets.members(bits["\\seen"], [10, 20, 30, 40]) == [10, 30]
    assert flagsets.members(bits["$work"], range(1, 5)) == [2, 3]
    sets.changed(3, (), ("\\Seen",))
    sets.changed(0, ("\\Seen",), ())
    assert flagsets.members(sets.current([])["\\seen"], [10, 20, 30, 40]) == [30, 40]
    assert flagsets.members(0, [1, 2]) == []


def test_keys_the_bitmaps_do_not_answer_fall_back() -> None:
    view = flagsets.View([1, 2, 3])
    for key in (SearchKey("LARGER", (5,)), SearchKey("NOT", (SearchKey("FROM", ("x",)),))):
        assert flagsets.evaluate(key, {}, view) is None
