"""A session's \\Recent claims (``Selected.add_recent``): the count and the
per-message test answer exactly as a plain set of claimed, still present
UIDs would, while the ranges stay few: a session that appends all day keeps
one range, not one per message (each command's RECENT count once summed
over every range)."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from waypost.protocols.imap.session import Selected


def bare() -> Selected:
    sel = Selected.__new__(Selected)  # only the fields \Recent uses
    sel.uids = array("I")
    sel.recent = []
    return sel


def test_a_session_appending_one_message_at_a_time_keeps_one_range() -> None:
    sel = bare()
    for uid in range(1, 1001):
        sel.uids.append(uid)
        sel.add_recent(uid, uid + 1)
    assert sel.recent == [(1, 1001)]
    assert sel.recent_count() == 1000


def test_ranges_without_a_message_are_dropped() -> None:
    sel = bare()
    sel.uids.extend([1, 2])
    sel.add_recent(1, 3)
    sel.uids = array("I", [10])  # 1 and 2 expunged; 3-9 another session's, gone too
    sel.add_recent(10, 11)
    assert sel.recent == [(10, 11)]


# steps: ("new", claimed by this session?) appends the next UID; ("gone", i) expunges one
STEPS = st.lists(st.one_of(st.tuples(st.just("new"), st.booleans()),
                           st.tuples(st.just("gone"), st.integers(0, 50))), max_size=80)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_recent_answers_as_the_set_of_claimed_present_uids(steps: list[tuple[str, object]]) -> None:
    sel = bare()
    claimed: set[int] = set()
    next_uid = 1
    for kind, arg in steps:
        if kind == "new":
            uid, next_uid = next_uid, next_uid + 1
            sel.uids.append(uid)
            if arg:
                sel.add_recent(uid, next_uid)
                claimed.add(uid)
                # emptied ranges go at the next claim: then each holds a claimed message
                assert len(sel.recent) <= len(claimed & set(sel.uids))
        elif sel.uids:
            del sel.uids[int(arg) % len(sel.uids)]  # type: ignore[call-overload]
        present = set(sel.uids)
        assert sel.recent_count() == len(claimed & present)
        test = sel.recent_test()
        assert {uid for uid in present if test(uid)} == claimed & present
