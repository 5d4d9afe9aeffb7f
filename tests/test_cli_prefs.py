"""``waypost account prefs``: an account's WebUser preferences from the command
line, the real command as an administrator runs it (issue 10 point 7)."""

from __future__ import annotations

import pytest
from tests.support.cli import Waypost


@pytest.fixture(scope="module")
def wp(tmp_path_factory: pytest.TempPathFactory) -> Waypost:
    cmd = Waypost(tmp_path_factory.mktemp("prefs") / "var")
    cmd("init", "--domain", "main.dom")
    cmd("domain", "add", "other.dom")
    for account in ("ann", "ben", "cat", "dan@other.dom"):
        cmd("account", "add", account, "--password", "some-pw-123")
    return cmd


def shown(wp: Waypost, account: str, *args: str) -> dict[str, tuple[str, bool]]:
    """The table as {name: (value, stored)}."""
    rows = {}
    for line in wp("account", "prefs", account, *args).stdout.splitlines()[1:]:
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        stored = rest.endswith("(stored)")
        rows[name] = (rest.removesuffix("(stored)").strip(), stored)
    return rows


def test_the_defaults_are_shown_unmarked(wp: Waypost) -> None:
    rows = shown(wp, "ann")
    assert rows == {"MailboxList": ("all", False), "ShowSubscribed": ("yes", False),
                    "SentBox": ("Sent", False), "MessagesPerPage": ("50", False),
                    "Skin": ('"" (unnamed)', False)}


def test_values_are_stored_marked_and_removed_with_default(wp: Waypost) -> None:
    rows = shown(wp, "ben@main.dom", "MessagesPerPage", "25", "ShowSubscribed", "NO",
                 "SentBox", "Sent Items")
    assert rows["MessagesPerPage"] == ("25", True)
    assert rows["ShowSubscribed"] == ("no", True)  # stored as the canonical choice
    assert rows["SentBox"] == ("Sent Items", True)
    assert rows["MailboxList"] == ("all", False)
    assert shown(wp, "ben")["MessagesPerPage"] == ("25", True)  # kept
    rows = shown(wp, "ben", "MessagesPerPage", "default")
    assert rows["MessagesPerPage"] == ("50", False) and rows["SentBox"] == ("Sent Items", True)


@pytest.mark.parametrize(("args", "message"), [
    (("Colour", "red"), "unknown preference 'Colour'"),
    (("MessagesPerPage", "5"), "from 10 to 500"),
    (("MessagesPerPage", "lots"), "from 10 to 500"),
    (("MailboxList", "some"), "must be one of all, subscribed"),
    (("SentBox", "a*b"), "not allowed in a mailbox name"),
    (("SentBox", "~bob/Sent"), "another user's mailbox"),
    (("Skin", "NoSuchSkin"), "no skin 'NoSuchSkin'"),
    (("Skin", "../x"), "invalid skin name"),
    (("Skin", "a/b"), "invalid skin name"),
    (("MessagesPerPage", "20", "Colour", "red"), "unknown preference"),
])
def test_bad_names_and_values_exit_1_and_store_nothing(wp: Waypost, args: tuple[str, ...],
                                                       message: str) -> None:
    proc = wp("account", "prefs", "cat", *args, check=1)
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not any(stored for _, stored in shown(wp, "cat").values())  # all or nothing


def test_an_unknown_account_exits_1(wp: Waypost) -> None:
    proc = wp("account", "prefs", "nobody", check=1)
    assert proc.stderr.startswith("error: ") and "nobody" in proc.stderr


def test_pairs_must_be_complete(wp: Waypost) -> None:
    proc = wp("account", "prefs", "cat", "MessagesPerPage", check=2)
    assert "KEY VALUE" in proc.stderr


def test_a_skin_must_exist_for_the_accounts_domain(wp: Waypost) -> None:
    wp("skin", "create", "--domain", "main.dom", "MainOnly")
    wp("skin", "create", "ServerWide")
    assert shown(wp, "cat", "Skin", "MainOnly")["Skin"] == ("MainOnly", True)
    assert shown(wp, "dan@other.dom", "Skin", "ServerWide")["Skin"] == ("ServerWide", True)
    proc = wp("account", "prefs", "dan@other.dom", "Skin", "MainOnly", check=1)
    assert "other.dom has no skin 'MainOnly'" in proc.stderr
    assert shown(wp, "cat", "Skin", "default")["Skin"] == ('"" (unnamed)', False)


def test_the_command_explains_itself(wp: Waypost) -> None:
    out = wp("account", "prefs", "--help").stdout
    for name in ("MailboxList", "ShowSubscribed", "SentBox", "MessagesPerPage", "Skin",
                 "default"):
        assert name in out
