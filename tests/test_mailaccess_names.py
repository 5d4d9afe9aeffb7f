"""Mailbox-name rules, decided by the mail-access service (not the store)."""

from __future__ import annotations

import pytest

from waypost.services.mailaccess.errors import InvalidMailboxName
from waypost.services.mailaccess.names import (
    MAX_NAME,
    canonical_any,
    check_alias,
    check_create,
    check_name,
    check_rename,
    check_template,
)


def test_own_names_are_checked_and_made_canonical() -> None:
    assert check_name("inbox/Work") == "INBOX/Work"
    assert check_name("Inboxes") == "Inboxes"
    assert check_name("x" * MAX_NAME) == "x" * MAX_NAME
    for bad in ("", "~bob/x", "/a", "a/", "a//b", "a*", "a%b", "a\x01", "x" * (MAX_NAME + 1)):
        with pytest.raises(InvalidMailboxName):
            check_name(bad)


def test_foreign_names_keep_their_owner_and_canonical_inbox() -> None:
    assert canonical_any("~bob/inbox") == "~bob/INBOX"
    assert canonical_any("~bob") == "~bob"
    for bad in ("", "  ", "~bob/a\x7f"):
        with pytest.raises(InvalidMailboxName):
            canonical_any(bad)


def test_rename_never_below_itself_except_inbox() -> None:
    assert check_rename("Work", "Old/Work") == "Old/Work"
    assert check_rename("inbox", "INBOX/2025") == "INBOX/2025"
    with pytest.raises(InvalidMailboxName, match="into itself"):
        check_rename("Work", "Work/inside")
    assert check_rename("Work", "WorkOld") == "WorkOld"  # a shared prefix is not a child


def test_aliases_and_templates() -> None:
    assert check_alias("team", "~bob/inbox") == ("team", "~bob/INBOX")
    for alias, target in (("Team", "Team"), ("Team", "Team/sub"), ("a*", "~bob/x")):
        with pytest.raises(InvalidMailboxName):
            check_alias(alias, target)
    check_template(["Sent", "Archive/"], ["INBOX", "~bob/x"], {"Team": "~bob/Team"})
    with pytest.raises(InvalidMailboxName):
        check_template(["bad%name"], [], None)


def test_create_keeps_a_directory_only_slash() -> None:
    assert check_create("inbox/Archive/") == "INBOX/Archive/"
    assert check_create("Work") == "Work"
    for bad in ("/", "a//", "a*/"):
        with pytest.raises(InvalidMailboxName):
            check_create(bad)
