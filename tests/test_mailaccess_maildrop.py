"""POP3's maildrop as the mail-access service keeps it: the numbered snapshot
of INBOX, DELE marks, the per-account lock, and the deletion at QUIT, on a
real SQLite store in a tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from waypost.services.container import Services, open_services
from waypost.services.mailaccess.maildrop import (
    Entry,
    Maildrop,
    MaildropError,
    MaildropLocks,
    Maildrops,
    MessageGone,
)
from waypost.services.mailaccess.service import MailAccess

ALICE = "alice@main.dom"

# -- the snapshot (pure) ----------------------------------------------------------


def test_maildrop_numbers_deletes_and_reset() -> None:
    drop = Maildrop("a@d", 77, [Entry(5, 100), Entry(9, 20), Entry(12, 3)])
    assert drop.stat() == (3, 123)
    assert drop.unique_id(drop.get(2)) == "77.9"
    drop.delete(2)
    assert drop.stat() == (2, 103)
    assert [n for n, _ in drop.live()] == [1, 3]  # numbers do not move
    with pytest.raises(MaildropError, match="Message 2 is deleted"):
        drop.get(2)
    with pytest.raises(MaildropError, match="Message 2 is deleted"):
        drop.delete(2)
    with pytest.raises(MaildropError, match="No message 4"):
        drop.get(4)
    assert drop.deleted_uids() == [9]
    drop.reset()
    assert drop.stat() == (3, 123) and drop.deleted_uids() == []


def test_maildrop_locks() -> None:
    locks = MaildropLocks()
    assert locks.acquire("Alice@D")
    assert not locks.acquire("alice@d")
    locks.release("ALICE@d")
    assert locks.acquire("alice@d")


# -- on a store ------------------------------------------------------------------


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    services = open_services(tmp_path / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    yield services
    services.close()


def test_a_new_account_has_an_empty_maildrop(svc: Services) -> None:
    drop = Maildrops(svc).open(ALICE)
    assert drop.stat() == (0, 0) and drop.live() == []
    unknown = Maildrops(svc).open("nobody@main.dom")  # no INBOX at all: empty, no error
    assert unknown.stat() == (0, 0) and unknown.uidvalidity == 0


def test_snapshot_read_and_delete_at_quit(svc: Services) -> None:
    mail = MailAccess(svc)
    bodies = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)]
    for body in bodies:
        mail.append(ALICE, "INBOX", body)
    maildrops = Maildrops(svc)
    drop = maildrops.open(ALICE)
    assert drop.stat() == (3, sum(len(b) for b in bodies))
    later = mail.append(ALICE, "INBOX", b"Subject: later\r\n\r\nx\r\n")
    assert len(drop.entries) == 3  # the snapshot does not grow
    assert drop.unique_id(drop.get(1)) == f"{later.uidvalidity}.{drop.get(1).uid}"
    assert maildrops.read(ALICE, drop.get(2).uid) == bodies[1]
    drop.delete(1)
    drop.delete(3)
    assert maildrops.delete(ALICE, drop.deleted_uids()) == 2
    with pytest.raises(MessageGone):
        maildrops.read(ALICE, drop.entries[0].uid)
    again = maildrops.open(ALICE)
    assert [e.uid for e in again.entries] == [drop.entries[1].uid, later.uid]
    assert maildrops.delete(ALICE, []) == 0


def test_the_locks_are_shared_through_the_maildrops(svc: Services) -> None:
    locks = MaildropLocks()
    maildrops = Maildrops(svc, locks)
    assert maildrops.locks is locks
    assert maildrops.locks.acquire(ALICE)
    assert not locks.acquire(ALICE.upper())
