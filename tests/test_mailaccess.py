"""The mail-access service without any protocol: select and the change index,
fetch data, search, flags with the rights rules, copy/move, append, expunge,
status, list, the mailbox tree, on a real SQLite store in a tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from waypost.services.container import Services, open_services
from waypost.services.mailaccess.criteria import SearchKey, SequenceSet
from waypost.services.mailaccess.errors import NoPermission, NoSuchMailbox, TryCreate
from waypost.services.mailaccess.service import FetchNeeds, MailAccess

ALICE, BOB = "alice@main.dom", "bob@main.dom"


def message(subject: str, body: str = "hello there") -> bytes:
    return (
        f"From: Carol <carol@main.dom>\r\nTo: alice@main.dom\r\nSubject: {subject}\r\n"
        f"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    services = open_services(tmp_path / "var", create=True)
    services.directory.init_server("main.dom")
    for name in ("alice", "bob"):
        services.directory.create_account(name)
    yield services
    services.close()


@pytest.fixture
def mail(svc: Services) -> MailAccess:
    access = MailAccess(svc)
    access.ensure_inbox(ALICE)
    access.ensure_inbox(BOB)
    return access


def fill(mail: MailAccess, user: str = ALICE, name: str = "INBOX") -> list[int]:
    uids = [
        mail.append(user, name, message("first")).uid,
        mail.append(user, name, message("second", "a needle here"), ["\\Seen"]).uid,
        mail.append(user, name, message("third"), ["\\Flagged", "$Work"]).uid,
    ]
    return uids


def test_select_reports_counters_uids_keywords_and_claims_recent(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "inbox", examine=False)
    assert list(sel.uids) == uids
    assert sel.uidnext == uids[-1] + 1 and sel.uidvalidity > 0
    assert sel.first_unseen == 1
    assert "$Work" in sel.keywords
    assert sel.recent_first == uids[0]  # all three are new: this session claims them
    again = mail.select(ALICE, "INBOX", examine=False)
    assert again.recent_first == again.uidnext  # claimed already: none recent any more
    assert mail.status(ALICE, "INBOX", ["MESSAGES", "RECENT", "UNSEEN"]) == [
        ("MESSAGES", 3), ("RECENT", 0), ("UNSEEN", 2)
    ]


def test_select_of_a_missing_mailbox_is_no_such_mailbox(mail: MailAccess) -> None:
    with pytest.raises(NoSuchMailbox) as info:
        mail.select(ALICE, "Nowhere", examine=True)
    assert info.value.code == "NONEXISTENT"


def test_poll_reports_new_changed_and_expunged(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=False)
    new = mail.append(ALICE, "INBOX", message("fourth")).uid
    mail.store_flags(sel.opened, [uids[0]], ["\\Deleted"], "add")
    assert mail.expunge(sel.opened, [uids[0]]) == [uids[0]]
    changes, first = mail.poll(sel.opened, sel.modseq, sel.uidnext, claim=True)
    assert [m.uid for m in changes.new] == [new]
    assert first == new
    assert uids[0] in changes.expunged


def test_metadata_from_the_shared_index(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=True)
    with mail.index(sel.opened) as index:
        assert list(index.uids) == uids
        assert index.flags[1] == ("\\Seen",)
        assert index.sizes[0] == len(message("first"))
        assert index.position(uids[2]) == 2 and index.position(99999) is None


def test_fetch_returns_bytes_headers_and_the_cached_structure(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=False)
    pairs = [(1, uids[0]), (2, uids[1]), (4, 99999)]
    batch = mail.fetch(sel.opened, pairs, FetchNeeds(raw=True))
    assert batch.done == 3 and batch.missing == 1
    assert [m.raw for m in batch.messages] == [message("first"), message("second", "a needle here")]
    assert batch.messages[1].flags == ("\\Seen",)
    head = mail.fetch(sel.opened, pairs[:1], FetchNeeds(raw=True, header_only=True))
    assert head.messages[0].raw == message("first").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    parsed = mail.fetch(sel.opened, pairs[:1], FetchNeeds(parsed=True)).messages[0].parsed
    assert parsed is not None and parsed.size == len(message("first"))
    again = mail.fetch(sel.opened, pairs[:1], FetchNeeds(parsed=True)).messages[0]
    assert again.raw is None and again.parsed == parsed  # from the cache, no bytes read


def test_mark_seen_needs_the_seen_right(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=False)
    first = mail.fetch(sel.opened, [(1, uids[0])], FetchNeeds()).messages
    own = mail.mark_seen(sel.opened, first)
    assert own is not None and own > sel.modseq
    assert mail.status(ALICE, "INBOX", ["UNSEEN"]) == [("UNSEEN", 1)]
    mail.create(BOB, "Shared")
    mail.set_acl(BOB, "Shared", "alice", "lr")
    mail.append(BOB, "Shared", message("theirs"))
    shared = mail.select(ALICE, "~bob/Shared", examine=False)
    rows = mail.fetch(shared.opened, [(1, shared.uids[0])], FetchNeeds()).messages
    assert mail.mark_seen(shared.opened, rows) is None
    assert mail.status(BOB, "Shared", ["UNSEEN"]) == [("UNSEEN", 1)]


def test_search_by_flags_headers_body_and_uid_sets(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=False)
    never = lambda uid: False  # noqa: E731
    assert mail.search(sel.opened, sel.uids, SearchKey("UNSEEN"), never, False) == [1, 3]
    assert mail.search(sel.opened, sel.uids, SearchKey("SUBJECT", ("SECOND",)), never, True) == [
        uids[1]
    ]
    assert mail.search(sel.opened, sel.uids, SearchKey("BODY", ("needle",)), never, False) == [2]
    uid_set = SearchKey("UID", (SequenceSet(((uids[1], None),)),))
    assert mail.search(sel.opened, sel.uids, uid_set, never, False) == [2, 3]
    only_third = lambda uid: uid == uids[2]  # noqa: E731
    recent = mail.search(sel.opened, sel.uids, SearchKey("RECENT"), only_third, False)
    assert recent == [3]


def test_flag_rights_decide_what_store_may_change(mail: MailAccess) -> None:
    mail.create(BOB, "Shared")
    mail.append(BOB, "Shared", message("one"), ["\\Flagged", "\\Deleted"])
    mail.set_acl(BOB, "Shared", "alice", "lrs")
    sel = mail.select(ALICE, "~bob/Shared", examine=False)
    with pytest.raises(NoPermission) as info:
        mail.check_flags(sel.opened, ["\\Flagged"], "add")
    assert info.value.right == "w" and info.value.code == "NOPERM"
    with pytest.raises(NoPermission):
        mail.check_flags(sel.opened, ["\\Deleted"], "add")
    flags = mail.check_flags(sel.opened, ["\\seen"], "set")
    assert flags == ("\\Seen",)
    updates, own = mail.store_flags(sel.opened, list(sel.uids), flags, "set")
    # a replacing STORE keeps what the user may not change
    assert set(updates[0][2]) == {"\\Seen", "\\Flagged", "\\Deleted"}
    assert own is not None
    with pytest.raises(NoPermission):
        mail.expunge(sel.opened, list(sel.uids))
    assert mail.expunge(sel.opened, list(sel.uids), quiet=True) == []


def test_copy_move_and_trycreate(mail: MailAccess) -> None:
    uids = fill(mail)
    sel = mail.select(ALICE, "INBOX", examine=False)
    with pytest.raises(TryCreate) as info:
        mail.copy(ALICE, sel.opened, uids, "Archive")
    assert info.value.code == "TRYCREATE"
    mail.create(ALICE, "Archive")
    copied = mail.copy(ALICE, sel.opened, uids[:2], "Archive")
    assert [s for s, _ in copied.pairs] == uids[:2]
    assert copied.target == ("main.dom", "alice", "Archive")
    moved = mail.copy(ALICE, sel.opened, uids[2:], "Archive", move=True)
    assert len(moved.pairs) == 1
    assert mail.status(ALICE, "Archive", ["MESSAGES"]) == [("MESSAGES", 3)]
    assert mail.status(ALICE, "INBOX", ["MESSAGES"]) == [("MESSAGES", 2)]


def test_copy_into_a_shared_mailbox_drops_flags_the_user_may_not_set(mail: MailAccess) -> None:
    uids = fill(mail)
    mail.create(BOB, "Drop")
    mail.set_acl(BOB, "Drop", "alice", "li")
    sel = mail.select(ALICE, "INBOX", examine=False)
    mail.copy(ALICE, sel.opened, uids, "~bob/Drop")
    theirs = mail.select(BOB, "Drop", examine=True)
    with mail.index(theirs.opened) as index:
        assert all(flags == () for flags in index.flags)
    mail.set_acl(BOB, "Drop", "alice", "lri")
    seen_by_alice = mail.select(ALICE, "~bob/Drop", examine=False)
    with pytest.raises(NoPermission) as info:  # MOVE needs d on the source
        mail.copy(ALICE, seen_by_alice.opened, list(seen_by_alice.uids), "INBOX", move=True)
    assert info.value.right == "d"


def test_append_is_durable_and_keeps_the_date(mail: MailAccess) -> None:
    when = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    done = mail.append(ALICE, "INBOX", message("dated"), ["\\Answered", "\\Recent"], when)
    sel = mail.select(ALICE, "INBOX", examine=True)
    with mail.index(sel.opened) as index:
        i = index.position(done.uid)
        assert i is not None
        assert index.dates[i] == when.timestamp()
        assert index.flags[i] == ("\\Answered",)
    assert done.uidvalidity == sel.uidvalidity


def test_list_with_status_subscriptions_and_special_use(mail: MailAccess) -> None:
    mail.create(ALICE, "Sent")
    mail.create(ALICE, "Work")
    mail.subscribe(ALICE, "Work")
    fill(mail, name="Work")
    entries = {e.name: e for e in mail.list_mailboxes(
        ALICE, "", ["*"], returns={"SUBSCRIBED"}, status=["MESSAGES"]
    )}
    assert set(entries) == {"INBOX", "Sent", "Work"}
    assert "\\Subscribed" in entries["Work"].attributes
    assert entries["Work"].status == (("MESSAGES", 3),)
    special = mail.list_mailboxes(ALICE, "", ["*"], select={"SPECIAL-USE"})
    assert [e.name for e in special] == ["Sent"]
    lsub = mail.list_mailboxes(ALICE, "", ["*"], lsub=True)
    assert [e.name for e in lsub] == ["Work"]


def test_create_rename_delete_return_the_mailbox_key(mail: MailAccess) -> None:
    assert mail.create(ALICE, "Old") == ("main.dom", "alice", "Old")
    assert mail.rename(ALICE, "Old", "New") == ("main.dom", "alice", "Old")
    assert mail.delete(ALICE, "New") == ("main.dom", "alice", "New")
    with pytest.raises(NoSuchMailbox):
        mail.status(ALICE, "New", ["MESSAGES"])


def test_open_subscriptions_and_the_acl_of_a_shared_mailbox(mail: MailAccess) -> None:
    mail.create(ALICE, "Shared")
    with pytest.raises(NoSuchMailbox):  # no lookup right: as if it did not exist
        mail.open(BOB, "~alice/Shared")
    mail.set_acl(ALICE, "Shared", "bob", "lr")
    opened = mail.open(BOB, "~alice/Shared")
    assert opened.target.ref == ("main.dom", "alice", "Shared")
    assert opened.read_only and mail.my_rights(BOB, "~alice/Shared") == "lr"
    with pytest.raises(NoPermission):
        mail.open(BOB, "~alice/Shared", "i")
    mail.subscribe(BOB, "~alice/Shared")
    assert mail.subscriptions(BOB) == ["~alice/Shared"]
    assert mail.unsubscribe(BOB, "~alice/Shared")
    assert mail.subscriptions(BOB) == []


def test_a_recreated_mailbox_never_gets_its_old_uidvalidity(tmp_path: Path) -> None:
    """RFC 3501 §2.3.1.1: DELETE then CREATE of the newest mailbox within one
    second gives a new UIDVALIDITY (issue 12's first point)."""
    from waypost.services.container import open_services
    from waypost.services.mailaccess.service import MailAccess

    svc = open_services(tmp_path / "var", create=True)
    try:
        svc.directory.init_server("main.dom")
        svc.directory.create_account("alice", "pw-uidv-1")
        mail = MailAccess(svc)
        mail.ensure_inbox("alice@main.dom")
        seen = set()
        for _ in range(5):
            mail.create("alice@main.dom", "Reborn")
            seen.add(mail.select("alice@main.dom", "Reborn", True).uidvalidity)
            mail.delete("alice@main.dom", "Reborn")
        assert len(seen) == 5
    finally:
        svc.close()
