"""`waypost mailbox ...` as an administrator runs it: mailboxes, ACLs,
subscriptions, mailbox aliases (the real command, as a subprocess)."""

from __future__ import annotations

import re

import pytest
from tests.support.cli import Waypost


@pytest.fixture(scope="module")
def wp(tmp_path_factory: pytest.TempPathFactory) -> Waypost:
    cmd = Waypost(tmp_path_factory.mktemp("cli-mailbox") / "var")
    cmd("init", "--domain", "main.dom")
    for name in ("alice", "marketing", "john"):
        cmd("account", "add", name)
    return cmd


def rows(out: str) -> list[list[str]]:
    """Table rows (after the header) split on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()[1:]]


def test_create_list_rename_delete(wp: Waypost) -> None:
    assert wp("mailbox", "create", "alice", "Projects/2026").stdout.strip() == (
        "mailbox Projects/2026 created in alice@main.dom")
    wp("mailbox", "create", "alice", "Sent")
    wp("mailbox", "create", "alice", "Later/")
    wp("mailbox", "create", "alice", "Outgoing", "--special-use", "\\Sent")
    listing = wp("mailbox", "list", "alice").stdout
    assert listing.splitlines()[0].split() == ["mailbox", "messages", "size", "uidvalidity",
                                               "uidnext", "attributes"]
    table = {r[0]: r for r in rows(listing)}
    assert list(table) == ["INBOX", "Later", "Outgoing", "Projects", "Projects/2026", "Sent"]
    assert table["Projects"][-1] == "\\Noselect \\HasChildren"
    assert table["Later"][-1] == "\\Noselect \\HasNoChildren"
    assert table["Sent"][-1] == table["Outgoing"][-1] == "\\HasNoChildren \\Sent"
    assert re.search(r"INBOX\s+0\s+0\s+\d+\s+1\s", listing)

    again = wp("mailbox", "create", "alice", "Sent", check=1)
    assert again.stderr.strip() == "error: mailbox 'Sent' already exists"
    bad = wp("mailbox", "create", "alice", "a%b", check=1)
    assert bad.stderr.count("\n") == 1 and "not allowed" in bad.stderr

    assert "renamed to Work/2026" in wp("mailbox", "rename", "alice", "Projects/2026",
                                        "Work/2026").stdout
    wp("mailbox", "use", "alice", "Work/2026", "\\Archive")
    table = {r[0]: r for r in rows(wp("mailbox", "list", "alice").stdout)}
    assert "Projects/2026" not in table and table["Work/2026"][-1] == (
        "\\HasNoChildren \\Archive")
    inbox = wp("mailbox", "delete", "alice", "INBOX", check=1)
    assert inbox.stderr.strip() == "error: INBOX cannot be deleted"
    wp("mailbox", "create", "alice", "Work")  # Work becomes a real mailbox too
    wp("mailbox", "delete", "alice", "Work")  # ... and a folder again: it has children
    refused = wp("mailbox", "delete", "alice", "Work", check=1)
    assert "sub-mailboxes" in refused.stderr
    assert "with its sub-mailboxes" in wp("mailbox", "delete", "alice", "Work",
                                          "--recursive").stdout
    missing = wp("mailbox", "delete", "alice", "Work", check=1)
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    # show keeps its columns
    out = wp("mailbox", "show", "alice", "Sent").stdout
    assert out.startswith("Sent of alice@main.dom: 0 messages")


def test_acl_show_set_modify_delete(wp: Waypost) -> None:
    wp("mailbox", "create", "marketing", "announce")
    assert wp("mailbox", "acl", "marketing", "announce").stdout.strip() == (
        "announce has no ACL entries: only the owner and administrators have access")
    assert wp("mailbox", "acl", "marketing", "announce", "anyone@", "lrs").stdout.strip() == (
        "anyone@ on announce: lrs")
    wp("mailbox", "acl", "marketing", "announce", "john", "lrswipcda")
    assert "john on announce: lrswipca" in wp("mailbox", "acl", "marketing", "announce",
                                              "john", "-d").stdout
    assert "lrswipcda" in wp("mailbox", "acl", "marketing", "announce", "john", "+te").stdout
    wp("mailbox", "acl", "marketing", "announce", "-alice", "s")  # a negative entry
    shown = rows(wp("mailbox", "acl", "marketing", "announce").stdout)
    assert shown == [["anyone@", "lrs", "lrs"], ["john", "lrswipcda", "lrswipkxcteda"],
                     ["-alice", "s", "s"]]
    assert wp("mailbox", "rights", "marketing", "announce", "--auth", "alice").stdout.strip() == (
        "lr (IMAP lr)")
    assert "lrswipcda" in wp("mailbox", "rights", "marketing", "announce", "--auth",
                             "john").stdout
    # with AUTH, alice acts with her own rights: no Administer right
    denied = wp("mailbox", "acl", "marketing", "announce", "--auth", "alice", check=1)
    assert "Administer" in denied.stderr
    wp("mailbox", "acl", "marketing", "announce", "--auth", "john", "alice", "l")  # john has a
    assert wp("mailbox", "acl", "marketing", "announce", "-alice", "none").stdout.strip() == (
        "ACL entry -alice removed from announce")
    assert wp("mailbox", "acl", "marketing", "announce", "alice", "").stdout.strip() == (
        "ACL entry alice removed from announce")
    shown = rows(wp("mailbox", "acl", "marketing", "announce").stdout)
    assert [r[0] for r in shown] == ["anyone@", "john"]
    bad = wp("mailbox", "acl", "marketing", "announce", "john", "lrq", check=1)
    assert bad.stderr.startswith("error: ") and "'q' is not a right" in bad.stderr
    wp("mailbox", "acl", "marketing", "announce", "john", check=2)  # usage: RIGHTS missing


def test_subscriptions_and_aliases(wp: Waypost) -> None:
    wp("mailbox", "create", "marketing", "news")
    wp("mailbox", "acl", "marketing", "news", "anyone@", "lr")
    assert wp("mailbox", "subscriptions", "john").stdout.strip() == (
        "john@main.dom is subscribed to nothing")
    wp("mailbox", "subscribe", "john", "INBOX")
    wp("mailbox", "subscribe", "john", "~marketing/news")
    wp("mailbox", "subscribe", "john", "~marketing/gone")
    assert rows(wp("mailbox", "subscriptions", "john").stdout) == [
        ["INBOX", "ok"], ["~marketing/gone", "missing"], ["~marketing/news", "ok"]]
    wp("mailbox", "unsubscribe", "john", "~marketing/gone")
    assert "not subscribed" in wp("mailbox", "unsubscribe", "john", "~marketing/gone",
                                  check=1).stderr

    assert "News of john@main.dom now stands for ~marketing/news" in wp(
        "mailbox", "alias", "john", "News", "~marketing/news").stdout
    assert rows(wp("mailbox", "alias", "john").stdout) == [["News", "~marketing/news"]]
    clash = wp("mailbox", "alias", "john", "INBOX", "~marketing/news", check=1)
    assert "INBOX" in clash.stderr and clash.stderr.startswith("error: ")
    wp("mailbox", "alias", "john", "Ring", "Ring2")
    loop = wp("mailbox", "alias", "john", "Ring2", "Ring", check=1)
    assert "loop" in loop.stderr
    wp("mailbox", "unalias", "john", "Ring")
    wp("mailbox", "unalias", "john", "News")
    assert wp("mailbox", "alias", "john").stdout.strip() == "john@main.dom has no mailbox aliases"
    assert "no mailbox alias" in wp("mailbox", "unalias", "john", "News", check=1).stderr


def test_the_account_template_applies_to_new_accounts(wp: Waypost) -> None:
    wp("domain", "template", "set", "main.dom", "Mailboxes", '["Sent", "Drafts", "Trash"]',
       "Subscriptions", '["INBOX", "~marketing/announce"]',
       "MailboxAliases", '{"Announce": "~marketing/announce"}')
    wp("account", "add", "newbie")
    assert [r[0] for r in rows(wp("mailbox", "list", "newbie").stdout)] == [
        "Drafts", "INBOX", "Sent", "Trash"]
    assert [r[0] for r in rows(wp("mailbox", "subscriptions", "newbie").stdout)] == [
        "INBOX", "~marketing/announce"]
    assert rows(wp("mailbox", "alias", "newbie").stdout) == [["Announce",
                                                             "~marketing/announce"]]


def test_unknown_account_is_one_line(wp: Waypost) -> None:
    proc = wp("mailbox", "create", "nobody", "X", check=1)
    assert proc.stderr.count("\n") == 1 and "nobody" in proc.stderr
