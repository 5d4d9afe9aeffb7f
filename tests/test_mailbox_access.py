"""Mailbox names and rights (spec/mailboxes.md): the ACL algebra with
anyone/anyone@/groups/negative entries, administrator scopes, the RFC 4314
letter mapping, foreign names (through account and domain aliases),
mailbox aliases, LIST/LSUB pattern matching, and the mailbox tree rules
(inherited ACL copy, INBOX rename, delete with children)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from waypost.services.container import Services, open_services
from waypost.services.mailaccess.errors import (
    CannotDelete,
    InvalidMailboxName,
    InvalidRights,
    MailboxExists,
    NoPermission,
    NoSuchMailbox,
)
from waypost.services.mailaccess.rights import (
    LISTRIGHTS_OPTIONAL,
    WIRE_ALL,
    ListEntry,
    MailboxAccess,
    Target,
    compile_pattern,
    parse_rights,
    to_stored,
    to_wire,
)

ALICE, BOB, CAROL, EVE = "alice@main.dom", "bob@main.dom", "carol@main.dom", "eve@main.dom"
DAVE = "dave@other.dom"
MKT = ("main.dom", "marketing")


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    services = open_services(tmp_path / "var", create=True)
    d = services.directory
    d.init_server("main.dom")  # postmaster: Master
    for name in ("alice", "bob", "carol", "eve", "marketing", "boss", "helper"):
        d.create_account(name)
    d.add_alias("bobby", "bob")
    d.create_domain("other.dom")
    d.add_domain_alias("other.dom", "mail.other.dom")
    for name in ("dave", "dadmin", "dhelper"):
        d.create_account(f"{name}@other.dom")
    d.set_rights("boss", ["AllDomains", "CanAccessMailboxes"])
    d.set_rights("helper", ["AllDomains"])  # no CanAccessMailboxes
    d.set_rights("dadmin@other.dom", ["Domain", "CanAccessMailboxes"])
    d.set_rights("dhelper@other.dom", ["Domain"])
    d.create_group("team", ["alice", "bobby"])
    d.create_group("outer", ["carol", "team"])
    yield services
    services.close()


@pytest.fixture
def access(svc: Services) -> MailboxAccess:
    return MailboxAccess(svc)


def names(entries: list[ListEntry]) -> list[str]:
    return [e.name for e in entries]


def attrs(entries: list[ListEntry]) -> dict[str, tuple[str, ...]]:
    return {e.name: e.attributes for e in entries}


# -- RFC 4314 mapping ----------------------------------------------------------------


def test_rights_letters_map_both_ways() -> None:
    assert to_stored("k") == to_stored("x") == to_stored("c") == "c"
    assert to_stored("t") == to_stored("e") == to_stored("d") == "d"
    assert to_stored("alrswipkxte") == "lrswipcda"
    assert to_wire("lrswipcda") == WIRE_ALL == "lrswipkxcteda"
    assert to_wire("c") == "kxc" and to_wire("d") == "ted" and to_wire("lrs") == "lrs"
    assert parse_rights("+k") == ("add", "c") and parse_rights("-te") == ("remove", "d")
    assert parse_rights("lr") == ("replace", "lr")
    assert parse_rights("none") == parse_rights("") == ("replace", "")
    with pytest.raises(InvalidRights):
        to_stored("lrz")
    assert LISTRIGHTS_OPTIONAL == ("l", "r", "s", "w", "i", "p", "kxc", "ted", "a")


def test_acl_commands_store_cgp_letters_and_answer_rfc4314(svc: Services,
                                                           access: MailboxAccess) -> None:
    svc.store.mail_create_mailbox(*MKT, "announce")
    user = "marketing@main.dom"
    assert access.set_acl(user, "announce", "bob", "lrk") == "lrkxc"
    assert svc.store.mail_get_acl(*MKT, "announce") == {"bob": "lrc"}
    assert access.set_acl(user, "announce", "bob", "+te") == "lrkxcted"
    assert access.set_acl(user, "announce", "bob", "-x") == "lrted"  # x is c: k goes too
    assert access.set_acl(user, "announce", "anyone@", "lrs") == "lrs"
    assert access.get_acl(user, "announce") == [("bob", "lrted"), ("anyone@", "lrs")]
    assert access.set_acl(user, "announce", "BOB", "") == ""  # identifiers ignore case
    assert access.get_acl(user, "announce") == [("anyone@", "lrs")]
    assert access.delete_acl(user, "announce", "anyone@")
    assert not access.delete_acl(user, "announce", "anyone@")
    # the owner: all rights, always; LISTRIGHTS for the owner and for others
    assert access.my_rights(user, "announce") == WIRE_ALL
    assert access.list_rights(user, "announce", "bob") == ("", LISTRIGHTS_OPTIONAL)
    assert access.list_rights(user, "announce", "marketing") == (WIRE_ALL, ())
    with pytest.raises(InvalidRights):
        access.set_acl(user, "announce", "bob", "lrq")


# -- the rights algebra --------------------------------------------------------------


def test_effective_rights_union_of_matches_minus_negatives(svc: Services,
                                                           access: MailboxAccess) -> None:
    svc.store.mail_create_mailbox(*MKT, "announce")
    for identifier, rights in (("anyone@", "lrs"), ("bobby", "wi"), ("#team", "p"),
                               ("-carol", "s"), ("anyone@other.dom", "l"),
                               ("dave@mail.other.dom", "r"), ("#outer", "a"),
                               ("-anyone@other.dom", "a"), ("marketing", "")):
        if rights:
            svc.store.mail_set_acl(*MKT, "announce", identifier, rights)
    target = access.resolve(ALICE, "~marketing/announce")
    rights = {user: access.rights(user, target) for user in (ALICE, BOB, CAROL, EVE, DAVE)}
    assert rights == {
        ALICE: "lrspa",  # anyone@ + #team + #outer (team is inside outer)
        BOB: "lrswipa",  # the entry for his alias "bobby" is his
        CAROL: "lra",  # anyone@ minus -carol's s, plus #outer
        EVE: "lrs",
        DAVE: "lr",  # anyone@other.dom + dave@<domain alias>; -anyone@other.dom takes a
    }
    assert access.rights("dhelper@other.dom", target) == "l"
    svc.store.mail_set_acl(*MKT, "announce", "anyone", "i")
    assert access.rights("dhelper@other.dom", target) == "li"  # anyone: every domain
    # negative entries are applied last, whatever granted the right
    svc.store.mail_set_acl(*MKT, "announce", "-#team", "lrswipcd")
    assert access.rights(ALICE, target) == "a" and access.rights(BOB, target) == "a"
    assert access.rights(CAROL, target) == "lria"


def test_administrator_scopes(svc: Services, access: MailboxAccess) -> None:
    dave_inbox = access.resolve(ALICE, "~dave@other.dom/INBOX")
    alice_inbox = access.resolve(BOB, "~alice/INBOX")
    assert access.rights("postmaster@main.dom", dave_inbox) == "lrswipcda"  # Master
    assert access.rights("boss@main.dom", dave_inbox) == "lrswipcda"  # AllDomains + CAM
    assert access.rights("boss@main.dom", alice_inbox) == "lrswipcda"
    assert access.rights("dadmin@other.dom", dave_inbox) == "lrswipcda"  # own domain only
    assert access.rights("dadmin@other.dom", alice_inbox) == ""
    assert access.rights("helper@main.dom", dave_inbox) == ""  # no CanAccessMailboxes
    assert access.rights("dhelper@other.dom", dave_inbox) == ""
    opened = access.open("dadmin@other.dom", "~dave/INBOX")  # same domain: plain ~name
    assert opened.target.owner == DAVE and not opened.read_only
    with pytest.raises(NoSuchMailbox):
        access.open("dadmin@other.dom", "~alice@main.dom/INBOX")
    everything = access.list_visible("boss@main.dom", "", "~dave@other.dom/*")
    assert names(everything) == ["~dave@other.dom/INBOX"]


# -- names -------------------------------------------------------------------------------


def test_foreign_names_are_routed_like_login_names(access: MailboxAccess) -> None:
    assert access.resolve(ALICE, "~bob/INBOX") == Target("main.dom", "bob", "INBOX")
    assert access.resolve(ALICE, "~bobby/inbox/Sub").ref == ("main.dom", "bob", "INBOX/Sub")
    assert access.resolve(ALICE, "~Bob@main.dom/x").owner == "bob@main.dom"
    assert access.resolve(ALICE, "~dave@mail.other.dom/x").owner == DAVE
    assert access.resolve(DAVE, "~dadmin/INBOX").owner == "dadmin@other.dom"  # own domain
    root = access.resolve(ALICE, "~bob")
    assert root.is_root and access.resolve(ALICE, "~bob/").is_root
    assert access.resolve(ALICE, "inbox") == Target("main.dom", "alice", "INBOX")
    for bad in ("~nobody/INBOX", "~dave/INBOX", "~/INBOX", ""):  # dave is not in main.dom
        with pytest.raises(NoSuchMailbox):
            access.resolve(ALICE, bad)


def test_mailbox_aliases_resolve_to_their_targets_without_loops(
        svc: Services, access: MailboxAccess) -> None:
    svc.store.mail_create_mailbox(*MKT, "announce")
    svc.store.mail_create_mailbox(*MKT, "announce/old")
    svc.store.mail_set_acl(*MKT, "announce", "alice", "lr")
    svc.store.mail_create_mailbox("main.dom", "alice", "Projects")
    access.set_alias(ALICE, "Announce", "~marketing/announce")
    access.set_alias(ALICE, "Work", "Projects")
    access.set_alias(ALICE, "Job", "Work")  # an alias of an alias of an own mailbox
    target = access.resolve(ALICE, "Announce")
    assert target.ref == ("main.dom", "marketing", "announce")
    assert target.is_alias_of == "~marketing/announce"
    assert access.resolve(ALICE, "Announce/old").ref == ("main.dom", "marketing",
                                                         "announce/old")
    assert access.resolve(ALICE, "Job").ref == ("main.dom", "alice", "Projects")
    assert access.resolve(ALICE, "Job").is_alias_of == "Work"
    with pytest.raises(InvalidMailboxName, match="loop"):
        access.set_alias(ALICE, "Projects2", "Loop")  # fine so far ...
        access.set_alias(ALICE, "Loop", "Projects2")  # ... but this closes a loop
    opened = access.open(ALICE, "Announce")
    assert opened.rights == "lr" and opened.read_only
    with pytest.raises(NoPermission) as refused:
        access.open(ALICE, "Announce", need="i")
    assert refused.value.right == "i" and refused.value.code == "NOPERM"
    with pytest.raises(MailboxExists):
        access.set_alias(ALICE, "Projects", "~marketing/announce")
    assert access.aliases(ALICE) == {"Announce": "~marketing/announce", "Job": "Work",
                                     "Projects2": "Loop", "Work": "Projects"}


def test_without_rights_a_mailbox_does_not_exist(svc: Services,
                                                 access: MailboxAccess) -> None:
    svc.store.mail_create_mailbox(*MKT, "private")
    svc.store.mail_create_mailbox(*MKT, "lookup")
    svc.store.mail_create_mailbox(*MKT, "blind")
    svc.store.mail_set_acl(*MKT, "private", "bob", "lrs")
    svc.store.mail_set_acl(*MKT, "lookup", "eve", "l")
    svc.store.mail_set_acl(*MKT, "blind", "eve", "r")
    for need in ("r", "i"):  # SELECT/EXAMINE/FETCH; APPEND and COPY into
        with pytest.raises(NoSuchMailbox):
            access.open(EVE, "~marketing/private", need=need)
    with pytest.raises(NoSuchMailbox):
        access.my_rights(EVE, "~marketing/private")
    with pytest.raises(NoSuchMailbox):
        access.get_acl(EVE, "~marketing/private")
    with pytest.raises(NoPermission) as refused:  # l: it exists, but no r
        access.open(EVE, "~marketing/lookup")
    assert refused.value.right == "r" and "[NOPERM]" not in str(refused.value)
    blind = access.open(EVE, "~marketing/blind")  # r without l: SELECT works
    with pytest.raises(NoSuchMailbox):
        blind.require("i")  # ... but never tells more
    assert names(access.list_visible(EVE, "", "~marketing/*")) == ["~marketing/lookup"]
    assert access.my_rights(EVE, "~marketing/lookup") == "l"
    # flag rights of an open mailbox
    svc.store.mail_set_acl(*MKT, "private", "bob", "lrs")
    opened = access.open(BOB, "~marketing/private")
    assert not opened.read_only
    assert opened.flag_right_missing(["\\Seen"]) is None
    assert opened.flag_right_missing(["\\Seen", "\\Flagged"]) == "w"
    assert opened.flag_right_missing(["\\Deleted"]) == "d"
    assert opened.permitted_flags(["\\Seen", "\\Deleted", "$x"]) == ("\\Seen",)
    assert opened.can("r") and not opened.can("t") and opened.wire_rights == "lrs"


# -- LIST and LSUB ---------------------------------------------------------------------------


@pytest.fixture
def tree(svc: Services, access: MailboxAccess) -> MailboxAccess:
    for name in ("INBOX/important", "Projects/2026/Q1", "Sent", "Drafts/"):
        svc.store.mail_create_mailbox("main.dom", "alice", name)
    for name in ("announce", "announce/archive", "internal", "team/plans", "team/secret"):
        svc.store.mail_create_mailbox(*MKT, name)
    svc.store.mail_set_acl(*MKT, "announce", "anyone@", "lrs")
    svc.store.mail_set_acl(*MKT, "team/plans", "#team", "lr")
    svc.store.mail_set_acl("main.dom", "bob", "INBOX", "alice", "l")
    access.set_alias(ALICE, "Announce", "~marketing/announce")
    return access


def test_list_patterns_over_own_mailboxes_and_aliases(tree: MailboxAccess) -> None:
    everything = tree.list_visible(ALICE, "", "*")
    assert names(everything) == ["INBOX", "INBOX/important", "Announce", "Drafts", "Projects",
                                 "Projects/2026", "Projects/2026/Q1", "Sent"]
    shown = attrs(everything)
    assert shown["INBOX"] == ("\\HasChildren",)
    assert shown["Drafts"] == ("\\Noselect", "\\HasNoChildren", "\\Drafts")
    assert shown["Projects"] == ("\\Noselect", "\\HasChildren")
    assert shown["Sent"] == ("\\HasNoChildren", "\\Sent")
    assert shown["Announce"] == ("\\HasNoChildren",)  # the invisible child does not count
    announce = next(e for e in everything if e.name == "Announce")
    assert announce.target is not None and announce.target.owner == "marketing@main.dom"
    assert names(tree.list_visible(ALICE, "", "%")) == ["INBOX", "Announce", "Drafts",
                                                       "Projects", "Sent"]
    assert names(tree.list_visible(ALICE, "Projects/", "%")) == ["Projects/2026"]
    assert names(tree.list_visible(ALICE, "", "Projects/%/Q1")) == ["Projects/2026/Q1"]
    assert names(tree.list_visible(ALICE, "", "inbox/*")) == ["INBOX/important"]
    assert names(tree.list_visible(ALICE, "", "S*")) == ["Sent"]
    assert names(tree.list_visible(ALICE, "", "")) == [""]  # the delimiter query
    assert tree.list_visible(ALICE, "", "")[0].attributes == ("\\Noselect",)
    assert not any(n.startswith("~") for n in names(everything))


def test_list_other_users_mailboxes_with_the_lookup_right(tree: MailboxAccess) -> None:
    assert names(tree.list_visible(ALICE, "", "~marketing/*")) == [
        "~marketing/announce", "~marketing/team/plans"]
    # a level leading to visible mailboxes appears as \Noselect for %
    level = tree.list_visible(ALICE, "", "~marketing/%")
    assert attrs(level) == {"~marketing/announce": ("\\HasNoChildren",),
                            "~marketing/team": ("\\Noselect", "\\HasChildren")}
    assert names(tree.list_visible(ALICE, "~marketing/", "team/%")) == ["~marketing/team/plans"]
    assert names(tree.list_visible(EVE, "", "~marketing/*")) == ["~marketing/announce"]
    # the owners who share something with the user
    assert attrs(tree.list_visible(ALICE, "", "~%")) == {
        "~bob": ("\\Noselect", "\\HasChildren"), "~marketing": ("\\Noselect", "\\HasChildren")}
    assert names(tree.list_visible(ALICE, "", "~%/INBOX")) == ["~bob/INBOX"]
    assert names(tree.list_visible(EVE, "", "~%")) == ["~marketing"]
    assert names(tree.list_visible(EVE, "", "~bob/*")) == []
    assert names(tree.list_visible(EVE, "", "~nobody/*")) == []
    assert "~marketing/internal" in names(tree.list_visible("boss@main.dom", "", "~%/*"))
    own = tree.list_visible(ALICE, "", "~alice/%")
    assert "~alice/INBOX" in names(own) and "~alice/Sent" in names(own)


def test_pattern_compilation() -> None:
    assert compile_pattern("a%").fullmatch("abc") and not compile_pattern("a%").fullmatch("a/b")
    assert compile_pattern("a*").fullmatch("a/b/c")
    assert compile_pattern("Inbox/%").fullmatch("INBOX/x")
    assert compile_pattern("~john/inbox").fullmatch("~john/INBOX")
    assert compile_pattern("a.b(c)").fullmatch("a.b(c)") and not compile_pattern("a.b").fullmatch(
        "axb")


def test_lsub_shows_foreign_subscriptions_and_gone_ones(tree: MailboxAccess) -> None:
    for name in ("INBOX", "~marketing/announce", "~marketing/gone", "~marketing/internal",
                 "Projects/2026/Q1", "~nobody/x"):
        tree.subscribe(ALICE, name)
    lsub = tree.list_subscribed(ALICE, "", "*")
    assert attrs(lsub) == {
        "INBOX": ("\\HasChildren",),
        "Projects/2026/Q1": ("\\HasNoChildren",),
        "~marketing/announce": ("\\HasNoChildren",),
        "~marketing/gone": ("\\Noselect",),
        "~marketing/internal": ("\\Noselect",),  # exists, but alice may not see it
        "~nobody/x": ("\\Noselect",),
    }
    assert attrs(tree.list_subscribed(ALICE, "", "%")) == {  # levels of subscribed names
        "INBOX": ("\\HasChildren",), "Projects": ("\\Noselect", "\\HasChildren"),
        "~marketing": ("\\Noselect", "\\HasChildren"),
        "~nobody": ("\\Noselect", "\\HasChildren")}
    extended = attrs(tree.list_subscribed(ALICE, "", "~marketing/*", extended=True))
    assert extended == {"~marketing/announce": ("\\HasNoChildren", "\\Subscribed"),
                        "~marketing/gone": ("\\NonExistent", "\\Subscribed"),
                        "~marketing/internal": ("\\NonExistent", "\\Subscribed")}
    assert tree.unsubscribe(ALICE, "~marketing/gone")
    assert not tree.unsubscribe(ALICE, "~marketing/gone")
    assert "~marketing/gone" not in tree.subscriptions(ALICE)


# -- the mailbox tree ------------------------------------------------------------------------


def test_a_sub_mailbox_inherits_a_copy_of_its_parents_acl(svc: Services,
                                                          access: MailboxAccess) -> None:
    access.set_acl(ALICE, "INBOX", "bob", "lrs")
    access.create(ALICE, "INBOX/sales")
    assert svc.store.mail_get_acl("main.dom", "alice", "INBOX/sales") == {"bob": "lrs"}
    access.set_acl(ALICE, "INBOX", "bob", "lrswi")  # later changes do not propagate
    assert svc.store.mail_get_acl("main.dom", "alice", "INBOX/sales") == {"bob": "lrs"}
    access.create(ALICE, "Top/Deep/Er")  # auto-made levels inherit too (empty at the top)
    assert svc.store.mail_get_acl("main.dom", "alice", "Top") == {}
    access.set_acl(ALICE, "Top", "carol", "l")
    access.create(ALICE, "Top/Other")
    assert svc.store.mail_get_acl("main.dom", "alice", "Top/Other") == {"carol": "l"}


def test_directory_entities_and_noselect(svc: Services, access: MailboxAccess) -> None:
    access.create(ALICE, "ABCDEF/")
    entry = svc.store.mail_folder("main.dom", "alice", "ABCDEF")
    assert entry.attributes() == ("\\Noselect", "\\HasNoChildren")
    with pytest.raises(NoSuchMailbox):
        access.open(ALICE, "ABCDEF")
    with pytest.raises(MailboxExists):
        access.create(ALICE, "ABCDEF/")
    access.create(ALICE, "ABCDEF")  # now a real mailbox
    assert access.open(ALICE, "ABCDEF").entry.selectable
    with pytest.raises(MailboxExists):
        access.create(ALICE, "ABCDEF")
    with pytest.raises(MailboxExists):
        access.create(ALICE, "inbox")
    for bad in ("a//b", "/a", "a*", "a%b", "a\x01", "x" * 1001):
        with pytest.raises(InvalidMailboxName):
            access.create(ALICE, bad)
    with pytest.raises(InvalidMailboxName):  # the store never takes a foreign name as its own
        svc.store.mail_create_mailbox("main.dom", "alice", "~x")
    access.create(ALICE, "sent")  # case-sensitive: Sent and sent are two mailboxes
    access.create(ALICE, "Sent")
    assert {"sent", "Sent"} <= set(names(access.list_visible(ALICE, "", "*")))


def test_inbox_rename_moves_the_messages_and_leaves_an_empty_inbox(
        svc: Services, access: MailboxAccess) -> None:
    store = svc.store
    for body in (b"Subject: 1\r\n\r\n", b"Subject: 2\r\n\r\n"):
        store.mail_append("main.dom", "alice", "INBOX", body)
    access.create(ALICE, "INBOX/kept")
    before = store.mail_mailbox_state("main.dom", "alice", "INBOX")
    access.rename(ALICE, "inbox", "Old/Mail")
    moved = store.mail_mailbox_state("main.dom", "alice", "Old/Mail")
    inbox = store.mail_mailbox_state("main.dom", "alice", "INBOX")
    assert (moved.messages, moved.uidnext) == (2, 3)
    assert [m.uid for m in store.mail_index("main.dom", "alice", "Old/Mail")] == [1, 2]
    assert (inbox.messages, inbox.uidvalidity, inbox.uidnext) == (0, before.uidvalidity, 3)
    changes = store.mail_changes_since("main.dom", "alice", "INBOX", before.highestmodseq)
    assert changes.expunged == [1, 2]  # sessions on INBOX see the messages go
    names_now = names(access.list_visible(ALICE, "", "*"))
    assert "INBOX/kept" in names_now and "Old/Mail" in names_now  # INBOX's children stay
    assert store.mail_append("main.dom", "alice", "INBOX", b"x")[1] == 3
    access.rename(ALICE, "INBOX", "INBOX/2025")  # INBOX may move below itself
    assert store.mail_mailbox_state("main.dom", "alice", "INBOX/2025").messages == 1
    assert store.mail_mailbox_state("main.dom", "alice", "INBOX").messages == 0


def test_rename_moves_children_and_delete_follows_rfc3501(svc: Services,
                                                          access: MailboxAccess) -> None:
    store = svc.store
    access.create(ALICE, "Projects/A/x")
    access.create(ALICE, "Projects")  # the directory entity becomes selectable
    store.mail_append("main.dom", "alice", "Projects", b"Subject: p\r\n\r\n")
    store.mail_append("main.dom", "alice", "Projects/A/x", b"Subject: x\r\n\r\n")
    access.create(ALICE, "ProjectsOld")  # not a child, even though it shares the prefix
    access.rename(ALICE, "Projects", "Work/2026")
    assert names(access.list_visible(ALICE, "", "*")) == [
        "INBOX", "ProjectsOld", "Work", "Work/2026", "Work/2026/A", "Work/2026/A/x"]
    assert store.mail_mailbox_state("main.dom", "alice", "Work/2026/A/x").messages == 1
    with pytest.raises(InvalidMailboxName):
        access.rename(ALICE, "Work", "Work/inside")
    with pytest.raises(MailboxExists):
        access.rename(ALICE, "ProjectsOld", "Work/2026")
    with pytest.raises(NoSuchMailbox):
        access.rename(ALICE, "Nothing", "Else")
    # a mailbox with children loses its messages and becomes \Noselect
    access.delete(ALICE, "Work/2026")
    assert attrs(access.list_visible(ALICE, "", "Work/2026"))["Work/2026"] == (
        "\\Noselect", "\\HasChildren")
    with pytest.raises(CannotDelete):  # \Noselect with children: refused
        access.delete(ALICE, "Work/2026")
    with pytest.raises(CannotDelete):
        access.delete(ALICE, "INBOX")
    access.delete(ALICE, "Work/2026/A/x")
    access.delete(ALICE, "Work/2026/A")
    access.delete(ALICE, "Work/2026")  # no children left: gone
    assert names(access.list_visible(ALICE, "", "Work*")) == ["Work"]
    store.mail_delete_mailbox("main.dom", "alice", "Work", recursive=True)
    assert names(access.list_visible(ALICE, "", "*")) == ["INBOX", "ProjectsOld"]


def test_creating_and_deleting_in_other_accounts_needs_rights(svc: Services,
                                                              access: MailboxAccess) -> None:
    svc.store.mail_create_mailbox(*MKT, "shared")
    svc.store.mail_set_acl(*MKT, "shared", "bob", "lrc")
    svc.store.mail_set_acl(*MKT, "shared", "carol", "lr")
    access.create(BOB, "~marketing/shared/bob")  # k on the parent
    assert svc.store.mail_get_acl(*MKT, "shared/bob") == {"bob": "lrc", "carol": "lr"}
    with pytest.raises(NoPermission) as refused:
        access.create(CAROL, "~marketing/shared/carol")
    assert refused.value.right == "c"
    with pytest.raises(NoSuchMailbox):  # eve sees nothing at all
        access.create(EVE, "~marketing/shared/eve")
    with pytest.raises(NoPermission):  # top level of another account: the owner only
        access.create(BOB, "~marketing/mine")
    with pytest.raises(NoPermission):  # delete: d or a on it
        access.delete(CAROL, "~marketing/shared")
    svc.store.mail_set_acl(*MKT, "shared/bob", "bob", "d", "add")
    access.delete(BOB, "~marketing/shared/bob")  # d on it, c on the parent
    with pytest.raises(NoPermission):  # no c on the (owner's) root
        svc.store.mail_set_acl(*MKT, "shared", "bob", "d", "add")
        access.delete(BOB, "~marketing/shared")
    access.create("boss@main.dom", "~marketing/bossy")  # administrators: anything
    access.delete("boss@main.dom", "~marketing/bossy")
    access.create(BOB, "~marketing/shared/b2")
    svc.store.mail_set_acl(*MKT, "shared/b2", "bob", "d", "add")
    access.rename(BOB, "~marketing/shared/b2", "~marketing/shared/b3")
    assert svc.store.mail_folder(*MKT, "shared/b3").selectable
    with pytest.raises(Exception, match="another account"):
        access.rename(BOB, "~marketing/shared/b3", "mine")
