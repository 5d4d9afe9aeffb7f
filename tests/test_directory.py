"""The Directory service (domains-accounts.md) over a real SQLite store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from tests.support.clock import FakeClock
from tests.support.directory import PASSWORDS, build_spec_fixture

from waypost.services import passwords
from waypost.services.directory import Directory
from waypost.services.names import DirectoryError, domain_name, object_name, split_address
from waypost.services.router.view import DirObject, ObjectKind, UnknownMode, UnknownPolicy
from waypost.storage.interface import AlreadyExists, NotFound
from waypost.storage.open import open_store
from waypost.storage.postgresql import PostgresStore
from waypost.storage.sqlite.store import VERSION_TTL, SqliteStore


@pytest.fixture
def directory(store_location: str) -> Iterator[Directory]:
    """On both backends (``store_location`` in tests/conftest.py)."""
    store = open_store(store_location, create=True)
    d = Directory(store)
    d.init_server("main.dom")
    d.create_domain("domain.dom")
    yield d
    store.close()


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[Directory]:
    store = open_store(tmp_path / "spec", create=True)
    yield build_spec_fixture(Directory(store))
    store.close()


def refused(exc: type[Exception], text: str) -> AbstractContextManager[Any]:
    return pytest.raises(exc, match=re.escape(text))


# -- names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "John.Smith", "a_b-c", "x" * 128, "0"])
def test_valid_object_names(name: str) -> None:
    assert object_name(name) == name


@pytest.mark.parametrize(("name", "why"), [
    ("a%b", "'%' is not allowed in object names"),
    ("a@b", "'@' is not allowed"),
    ("a#b", "'#' is not allowed"),
    ("a+b", "'+' is not allowed"),
    ("~a", "'~' is not allowed"),
    ("a/b", "'/' is not allowed"),
    ("a b", "' ' is not allowed (use letters, digits, '_', '-' and '.')"),
    (".a", "may not start or end with '.'"),
    ("a.", "may not start or end with '.'"),
    ("x" * 129, "longer than 128"),
    ("", "must not be empty"),
])
def test_invalid_object_names(name: str, why: str) -> None:
    with refused(DirectoryError, why):
        object_name(name)


def test_domain_names_are_canonical() -> None:
    assert domain_name("Client.COM.") == "client.com"
    assert domain_name("bücher.example") == "xn--bcher-kva.example"
    for bad in ("a..b", "-a.com", "a_b.com", "192.0.2.1", "", "a b.com"):
        with pytest.raises(DirectoryError, match="domain name"):
            domain_name(bad)


def test_split_address() -> None:
    assert split_address("Alice@Domain.DOM") == ("Alice", "domain.dom")
    assert split_address("alice") == ("alice", None)
    for bad in ("a@b@c", "@x.dom", "a@", ""):
        with pytest.raises(DirectoryError):
            split_address(bad)


# -- passwords ----------------------------------------------------------------------

def test_password_hash_is_argon2_and_verifies() -> None:
    hashed = passwords.hash_password("s3cret")
    assert hashed.startswith("$argon2id$") and "s3cret" not in hashed
    assert passwords.verify_password(hashed, "s3cret")
    assert not passwords.verify_password(hashed, "S3cret")
    assert not passwords.verify_password("not a hash", "s3cret")
    assert passwords.hash_password("s3cret") != hashed  # salted


def test_default_parameters_are_the_secure_ones(secure_password_hashing: None) -> None:
    passwords.reset()
    assert "m=65536,t=3" in passwords.hash_password("x")


def test_generated_passwords_are_readable_and_random() -> None:
    generated = {passwords.generate_password() for _ in range(20)}
    assert len(generated) == 20
    for pw in generated:
        assert len(pw) == 16 and pw.isalnum() and not set(pw) & set("0O1lI")


def test_account_passwords(directory: Directory) -> None:
    directory.create_account("alice@domain.dom", password="pw-1")
    record = directory.get_account("alice@domain.dom")
    assert record.secret and record.secret.startswith("$argon2") and "pw-1" not in record.secret
    assert directory.verify_password("ALICE@domain.dom", "pw-1")
    assert not directory.verify_password("alice@domain.dom", "pw-2")
    directory.set_password("alice@domain.dom", "pw-2")
    assert directory.verify_password("alice@domain.dom", "pw-2")
    assert not directory.verify_password("alice@domain.dom", "pw-1")


def test_verify_unknown_or_passwordless_is_false(directory: Directory) -> None:
    directory.create_account("nopw@domain.dom")
    directory.create_forwarder("fwd@domain.dom", "x@y.com")
    for address in ("nobody@domain.dom", "nopw@domain.dom", "fwd@domain.dom",
                    "x@no.such.dom", "bad%name"):
        assert directory.verify_password(address, "anything") is False


def test_password_in_the_settings_dictionary_is_hashed(directory: Directory) -> None:
    directory.create_account("bob@domain.dom", settings={"Password": "pw", "RealName": "Bob"})
    assert directory.account_settings("bob@domain.dom") == {"RealName": "Bob"}
    assert directory.verify_password("bob@domain.dom", "pw")
    directory.set_account_settings("bob@domain.dom", {"Password": "new"})
    assert directory.verify_password("bob@domain.dom", "new")
    with refused(DirectoryError, "must not be empty"):
        directory.set_password("bob@domain.dom", "")


# -- server initialisation and domains ------------------------------------------------

def test_init_server(tmp_path: Path) -> None:
    d = Directory(open_store(tmp_path / "d", create=True))
    password = d.init_server("Main.Dom")
    assert d.main_domain() == "main.dom"
    assert d.get_rights("postmaster") == ["Master"]
    assert d.verify_password("postmaster@main.dom", password)
    with refused(DirectoryError, "already initialised: Main Domain main.dom"):
        d.init_server("other.dom")


def test_main_domain_cannot_be_deleted(directory: Directory) -> None:
    with refused(DirectoryError, "the Main Domain main.dom cannot be deleted"):
        directory.delete_domain("MAIN.dom")


def test_delete_domain_with_objects_needs_force(directory: Directory) -> None:
    directory.create_account("a@domain.dom")
    before = directory.store.version()
    with refused(DirectoryError, "domain domain.dom is not empty (1 objects); use force"):
        directory.delete_domain("domain.dom")
    assert directory.store.version() == before
    directory.delete_domain("domain.dom", force=True)
    assert [d.name for d in directory.list_domains()] == ["main.dom"]


def test_domain_names_are_normalised(directory: Directory) -> None:
    record = directory.create_domain("Client.COM.", {"mailtounknown": "discarded"})
    assert (record.name, record.settings) == ("client.com", {"MailToUnknown": "Discarded"})
    with refused(AlreadyExists, "domain client.com already exists"):
        directory.create_domain("CLIENT.com")


def test_domain_alias_resolution(directory: Directory) -> None:
    directory.add_domain_alias("domain.dom", "Mail.Domain.Dom")
    assert directory.get_domain("mail.domain.dom").name == "domain.dom"
    assert directory.create_account("x@MAIL.domain.dom") == "x@domain.dom"
    assert directory.get_account("x@mail.domain.dom").domain == "domain.dom"
    with refused(DirectoryError, "mail.domain.dom is a Domain Alias of domain.dom"):
        directory.delete_domain("mail.domain.dom")
    with refused(AlreadyExists, "already an alias of domain domain.dom"):
        directory.create_domain("mail.domain.dom")
    with refused(AlreadyExists, "domain main.dom already exists"):
        directory.add_domain_alias("domain.dom", "main.dom")
    directory.set_domain_aliases("domain.dom", ["a.dom", "b.dom"])
    assert directory.get_domain("domain.dom").aliases == ("a.dom", "b.dom")
    directory.remove_domain_alias("domain.dom", "A.dom")
    assert directory.get_domain("domain.dom").aliases == ("b.dom",)


def test_rename_domain(directory: Directory) -> None:
    directory.create_account("a@domain.dom")
    directory.rename_domain("domain.dom", "New.Dom")
    assert directory.get_account("a@new.dom").domain == "new.dom"


# -- domain settings ----------------------------------------------------------------

def test_domain_settings_are_validated_and_canonical(directory: Directory) -> None:
    stored = directory.set_domain_settings("domain.dom", {
        "mailtounknown": "accepted and bounced",
        "SignalToUnknown": "DISCARDED",
        "AssignedIPAddresses": "192.0.2.20, [2001:DB8::1]",
        "DomainAccessModes": "pop, IMAP,webmail",
        "WebSitePrefix": "",
    })
    assert stored == {
        "MailToUnknown": "Accepted and Bounced",
        "SignalToUnknown": "Discarded",
        "AssignedIPAddresses": "192.0.2.20, 2001:db8::1",
        "DomainAccessModes": ["POP", "IMAP", "WebMail"],
        "WebSitePrefix": "",
    }
    effective = directory.effective_domain_settings("domain.dom")
    assert effective["AccessToUnknown"] == "Rejected"
    assert effective["MailToUnknown"] == "Accepted and Bounced"
    directory.set_domain_settings("domain.dom", {"MailToUnknown": "default"})
    assert "MailToUnknown" not in directory.domain_settings("domain.dom")
    assert directory.effective_domain_settings("domain.dom")["MailToUnknown"] == "Rejected"


@pytest.mark.parametrize(("changes", "message"), [
    ({"Bogus": "x"}, "unknown setting 'Bogus'; valid keys: MailToUnknown, MailRerouteAddress"),
    ({"MailToUnknown": "Maybe"}, "invalid MailToUnknown 'Maybe'; use one of: Rejected, "
                                 "Discarded, Rerouted to, Accepted and Bounced"),
    ({"AccessToUnknown": "Discarded"}, "use one of: Rejected, Rerouted to"),
    ({"MailToUnknown": "Rerouted to"}, "MailToUnknown is 'Rerouted to' but MailRerouteAddress"
                                       " is not set"),
    ({"MailRerouteAddress": "two words"}, "invalid MailRerouteAddress"),
    ({"AssignedIPAddresses": "192.0.2.1, nonsense"}, "'nonsense' is not an IP address"),
    ({"DomainAccessModes": "POP, Telnet"}, "unknown service 'Telnet'"),
    ({"WebSitePrefix": "a/b"}, "no '/' or spaces"),
    ({"MailToUnknown": 3}, "MailToUnknown must be text"),
])
def test_bad_domain_settings_change_nothing(
    directory: Directory, changes: dict, message: str
) -> None:
    directory.set_domain_settings("domain.dom", {"WebSitePrefix": "~u"})
    before = (directory.store.version(), directory.domain_settings("domain.dom"))
    with refused(DirectoryError, message):
        directory.set_domain_settings("domain.dom", {"SignalToUnknown": "Discarded", **changes})
    assert (directory.store.version(), directory.domain_settings("domain.dom")) == before


def test_rerouted_to_needs_an_address(directory: Directory) -> None:
    directory.set_domain_settings("domain.dom", {"MailToUnknown": "Rerouted to",
                                                 "MailRerouteAddress": "*%domain.dom@old._via"})
    with refused(DirectoryError, "MailRerouteAddress is not set"):
        directory.set_domain_settings("domain.dom", {"MailRerouteAddress": "default"})
    directory.set_domain_settings("domain.dom", {"MailToUnknown": "Rejected"})
    directory.set_domain_settings("domain.dom", {"MailRerouteAddress": "default"})


def test_rerouted_to_with_the_address_in_one_value(directory: Directory) -> None:
    stored = directory.set_domain_settings(
        "domain.dom", {"MailToUnknown": "Rerouted to: *%domain.dom@[11.22.33.44]"})
    assert stored == {"MailToUnknown": "Rerouted to",
                      "MailRerouteAddress": "*%domain.dom@[11.22.33.44]"}
    with refused(DirectoryError, "two different reroute addresses"):
        directory.set_domain_settings("domain.dom", {"MailToUnknown": "Rerouted to a@b",
                                                     "MailRerouteAddress": "c@d"})


def test_an_ip_belongs_to_one_domain(directory: Directory) -> None:
    directory.set_domain_settings("domain.dom", {"AssignedIPAddresses": "192.0.2.20"})
    directory.create_domain("other.dom")
    with refused(DirectoryError, "192.0.2.20 already assigned to domain domain.dom"):
        directory.set_domain_settings("other.dom", {"AssignedIPAddresses": "192.0.2.20"})


def test_server_domain_defaults(directory: Directory) -> None:
    directory.set_server_domain_defaults({"MailToUnknown": "Discarded"})
    assert directory.effective_domain_settings("domain.dom")["MailToUnknown"] == "Discarded"
    assert directory.snapshot().domains["domain.dom"].mail_unknown.mode is UnknownMode.DISCARDED
    with refused(DirectoryError, "per-domain setting"):
        directory.set_server_domain_defaults({"AssignedIPAddresses": "192.0.2.1"})


# -- accounts, defaults, templates ----------------------------------------------------

def test_template_applied_at_account_creation(directory: Directory) -> None:
    directory.set_account_template("domain.dom", {
        "Settings": {"RealName": "New user", "MaxAccountSize": "100M"},
        "Mailboxes": ["Sent", "Drafts"],
        "Subscriptions": ["~marketing/announce"],
        "MailboxAliases": {"Outbox": "Sent"},
    })
    directory.create_account("a@domain.dom", settings={"RealName": "Anne",
                                                      "MaxAccountSize": "default"})
    assert directory.account_settings("a@domain.dom") == {"RealName": "Anne"}
    directory.create_account("b@domain.dom")
    assert directory.account_settings("b@domain.dom") == {"RealName": "New user",
                                                          "MaxAccountSize": "100M"}
    directory.set_account_template("domain.dom", {"Settings": {"RealName": "Changed"}})
    assert directory.account_settings("b@domain.dom")["RealName"] == "New user"
    assert directory.account_template("domain.dom")["Mailboxes"] == ["Sent", "Drafts"]
    with refused(DirectoryError, "unknown setting 'Folders'; valid keys: Settings, Mailboxes"):
        directory.set_account_template("domain.dom", {"Folders": []})
    with refused(DirectoryError, "template Mailboxes must be a list"):
        directory.set_account_template("domain.dom", {"Mailboxes": "Sent"})


def test_effective_account_settings_inherit(directory: Directory) -> None:
    directory.create_account("a@domain.dom", settings={"RealName": "Anne"})
    directory.set_server_account_defaults({"MaxAccountSize": "1G"})
    directory.set_account_defaults("domain.dom", {"RulesAllowed": "Any", "RealName": "x"})
    effective = directory.effective_account_settings("a@domain.dom")
    assert effective["RealName"] == "Anne"  # account
    assert effective["RulesAllowed"] == "Any"  # domain AccountDefaults
    assert effective["MaxAccountSize"] == "1G"  # server defaults (administrator's)
    assert effective["RPOPAllowed"] == "NO"  # server defaults (built in)
    directory.set_account_settings("a@domain.dom", {"RealName": "default",
                                                    "AccessModes": "imap,pop"})
    effective = directory.effective_account_settings("a@domain.dom")
    assert effective["RealName"] == "x"
    assert effective["AccessModes"] == ["IMAP", "POP"]


def test_account_lifecycle(directory: Directory) -> None:
    assert directory.create_account("Alice@domain.dom") == "Alice@domain.dom"
    directory.add_alias("ali@domain.dom", "alice@domain.dom")
    directory.rename_account("alice@domain.dom", "alice2")
    assert directory.get_alias("ali@domain.dom").data["Target"] == "alice2"
    assert directory.account_aliases("alice2@domain.dom") == ["ali"]
    assert [a.name for a in directory.list_accounts("domain.dom")] == ["alice2"]
    directory.delete_account("alice2@domain.dom")
    assert directory.list_aliases("domain.dom") == []
    with refused(NotFound, "account alice2@domain.dom does not exist"):
        directory.get_account("alice2@domain.dom")


def test_plain_name_is_the_main_domain(directory: Directory) -> None:
    directory.create_account("john")
    assert directory.get_account("john@main.dom").domain == "main.dom"
    assert [a.name for a in directory.list_accounts()] == ["john", "postmaster"]


def test_rename_stays_in_the_domain(directory: Directory) -> None:
    directory.create_account("a@domain.dom")
    with refused(DirectoryError, "cannot move a@domain.dom to another domain (main.dom)"):
        directory.rename_account("a@domain.dom", "b@main.dom")
    directory.rename_account("a@domain.dom", "b@domain.dom")
    directory.get_account("b@domain.dom")


# -- one name space per domain ------------------------------------------------------

def test_names_unique_across_types(directory: Directory) -> None:
    directory.create_account("john@domain.dom")
    directory.create_forwarder("fwd@domain.dom", "x@remote.example")
    directory.create_group("grp@domain.dom", ["john@domain.dom"])
    directory.create_list("lst@domain.dom", "john")
    directory.add_alias("js@domain.dom", "john@domain.dom")
    attempts = [
        (lambda: directory.create_account("JOHN@domain.dom"), "(account)"),
        (lambda: directory.add_alias("Fwd@domain.dom", "john@domain.dom"), "(forwarder)"),
        (lambda: directory.create_forwarder("GRP@domain.dom", "a@b.c"), "(group)"),
        (lambda: directory.create_group("lst@domain.dom"), "(list)"),
        (lambda: directory.create_list("js@domain.dom", "john"), "(alias)"),
        (lambda: directory.rename_account("john@domain.dom", "Lst"), "'lst' already exists"),
        (lambda: directory.rename_forwarder("fwd@domain.dom", "john"), "(account)"),
        (lambda: directory.rename_group("grp@domain.dom", "fwd"), "(forwarder)"),
        (lambda: directory.rename_list("lst@domain.dom", "GRP"), "(group)"),
    ]
    for attempt, message in attempts:
        with pytest.raises(AlreadyExists) as info:
            attempt()
        assert "already exists in domain.dom" in str(info.value)
        assert message in str(info.value)
    directory.create_account("john@main.dom")  # another domain, another name space


def test_kind_mismatch_is_reported(directory: Directory) -> None:
    directory.create_forwarder("fwd@domain.dom", "x@y.com")
    with refused(NotFound, "fwd@domain.dom is a forwarder, not an account"):
        directory.set_password("fwd@domain.dom", "x")


def test_alias_must_be_in_the_account_domain(directory: Directory) -> None:
    directory.create_account("alice@domain.dom")
    with refused(DirectoryError, "must be in the account's domain domain.dom"):
        directory.add_alias("ali@main.dom", "alice@domain.dom")
    directory.add_alias("ali", "alice@domain.dom")  # plain alias name: the account's domain
    directory.set_aliases("alice@domain.dom", ["a1", "A2"])
    assert sorted(directory.account_aliases("alice@domain.dom")) == ["A2", "a1"]
    with refused(NotFound, "alias nope@domain.dom does not exist"):
        directory.remove_alias("nope@domain.dom")


def test_forwarders(directory: Directory) -> None:
    directory.create_forwarder("fwd@domain.dom", "bob@friend.com")
    directory.set_forwarder("fwd@domain.dom", "carol@friend.com")
    assert directory.get_forwarder("FWD@domain.dom").data["Target"] == "carol@friend.com"
    assert [f.name for f in directory.list_forwarders("domain.dom")] == ["fwd"]
    with refused(DirectoryError, "invalid address 'a b'"):
        directory.create_forwarder("f2@domain.dom", "a b")
    directory.delete_forwarder("fwd@domain.dom")
    assert directory.list_forwarders("domain.dom") == []


def test_groups(directory: Directory) -> None:
    directory.create_group("grp@domain.dom", ["a@x.com", "A@X.com", "b"])
    assert directory.group_members("grp@domain.dom") == ["a@x.com", "b"]
    directory.add_group_member("grp@domain.dom", "c@y.com")
    with refused(DirectoryError, "already a member"):
        directory.add_group_member("grp@domain.dom", "B")
    directory.remove_group_member("grp@domain.dom", "A@x.com")
    with refused(NotFound, "not a member"):
        directory.remove_group_member("grp@domain.dom", "zzz")
    directory.set_group_members("grp@domain.dom", ["z@z.com"])
    assert directory.get_group("grp@domain.dom").data["Members"] == ["z@z.com"]
    directory.delete_group("grp@domain.dom")
    assert directory.list_groups("domain.dom") == []


def test_lists(directory: Directory) -> None:
    directory.create_account("owner@domain.dom")
    with refused(NotFound, "account nobody@domain.dom does not exist"):
        directory.create_list("l@domain.dom", "nobody")
    with refused(DirectoryError, "must be an account of domain.dom"):
        directory.create_list("l@domain.dom", "postmaster@main.dom")
    directory.create_list("l@domain.dom", "owner")
    record = directory.get_list("l@domain.dom")
    assert record.data == {"Owner": "owner", "Settings": {}, "Subscribers": []}
    assert directory.update_list("l@domain.dom", {"Subject": "[l]"}) == {"Subject": "[l]"}
    assert [x.name for x in directory.list_lists("domain.dom")] == ["l"]
    directory.delete_list("l@domain.dom")


# -- rights -------------------------------------------------------------------------

def test_server_rights_only_in_the_main_domain(directory: Directory) -> None:
    directory.create_account("admin@domain.dom")
    before = directory.store.version()
    with refused(DirectoryError, "server rights (Master) can only be granted to accounts of "
                                 "the Main Domain main.dom"):
        directory.set_rights("admin@domain.dom", ["Domain", "Master"])
    assert directory.store.version() == before
    assert directory.set_rights("admin@domain.dom", ["canaccessmailboxes", "Domain"]) == [
        "Domain", "CanAccessMailboxes"]
    directory.create_account("ops")
    assert directory.set_rights("ops", ["All Domains", "Domains Read", "Monitors"]) == [
        "DomainsRead", "AllDomains", "Monitors"]
    assert directory.get_rights("ops@main.dom") == ["DomainsRead", "AllDomains", "Monitors"]
    with refused(DirectoryError, "unknown right 'Root'; server rights: Master"):
        directory.set_rights("ops", ["Root"])


@pytest.mark.parametrize(("admin", "rights", "target", "allowed"), [
    ("boss", ["Master"], "domain.dom", True),
    ("ops", ["AllDomains", "CanAccessMailboxes"], "domain.dom", True),
    ("ops", ["AllDomains", "CanAccessMailboxes"], "main.dom", True),
    ("ops", ["AllDomains"], "domain.dom", False),
    ("ops", ["CanAccessMailboxes"], "domain.dom", False),
    ("da@domain.dom", ["Domain", "CanAccessMailboxes"], "domain.dom", True),
    ("da@domain.dom", ["Domain", "CanAccessMailboxes"], "alias.domain.dom", True),
    ("da@domain.dom", ["Domain", "CanAccessMailboxes"], "main.dom", False),
    ("da@domain.dom", ["Domain"], "domain.dom", False),
    ("da@domain.dom", ["CanAccessMailboxes"], "domain.dom", False),
    ("da@domain.dom", ["Domain", "CanAccessMailboxes"], "no.such.dom", False),
])
def test_can_access_mailboxes(
    directory: Directory, admin: str, rights: list[str], target: str, allowed: bool
) -> None:
    directory.add_domain_alias("domain.dom", "alias.domain.dom")
    directory.create_account(admin)
    directory.set_rights(admin, rights)
    assert directory.can_access_mailboxes(admin, target) is allowed


def test_unknown_admin_has_no_access(directory: Directory) -> None:
    assert directory.can_access_mailboxes("ghost", "domain.dom") is False


# -- the Router's snapshot -------------------------------------------------------------

def test_spec_fixture_snapshot(spec: Directory) -> None:
    snap = spec.snapshot()
    assert snap.main_domain == "main.dom"
    assert set(snap.domains) == {"main.dom", "domain.dom", "client.dom", "dept1.company.dom"}
    assert snap.domains["domain.dom"].mail_unknown == UnknownPolicy(
        UnknownMode.REROUTED, "*%domain.dom@otherserver.dom._via")
    assert snap.domains["client.dom"].mail_unknown == UnknownPolicy(UnknownMode.REJECTED)
    assert snap.domains["main.dom"].access_unknown == UnknownPolicy(UnknownMode.REJECTED)
    assert snap.own_ips == {"127.0.0.1", "0.0.0.0", "192.0.2.10"}
    assert snap.find_object("domain.dom", "ALI") == DirObject(ObjectKind.ALIAS, "ali", ("alice",))
    assert snap.find_object("domain.dom", "fwd") == DirObject(
        ObjectKind.FORWARDER, "fwd", ("bob@friend.com",))
    assert snap.find_object("client.dom", "dd-customer").kind is ObjectKind.ACCOUNT
    accounts = sorted(k for k, o in snap.objects.items() if o.kind is ObjectKind.ACCOUNT)
    assert accounts == [
        ("client.dom", "dd-customer"), ("domain.dom", "alice"), ("domain.dom", "john"),
        ("main.dom", "dd-customer"), ("main.dom", "john"), ("main.dom", "postmaster"),
        ("main.dom", "security")]
    for address, password in PASSWORDS.items():
        assert spec.verify_password(address, password)
    assert spec.get_rights("postmaster") == ["Master"]


def test_snapshot_aliases_ips_and_held_domains(directory: Directory) -> None:
    directory.add_domain_alias("domain.dom", "Mail.Domain.Dom")
    directory.set_domain_settings("domain.dom", {"AssignedIPAddresses": "192.0.2.20"})
    directory.create_group("team@domain.dom", ["a@x.com", "b"])
    directory.store.set_setting("HoldMailForDomains", "Held.example, *.backup.example")
    directory.store.set_setting("ServerIPAddresses", "192.0.2.10,, 2001:DB8::5")
    snap = directory.snapshot()
    assert snap.real_domain("MAIL.domain.dom.") == "domain.dom"
    assert snap.ip_domains == {"192.0.2.20": "domain.dom"}
    assert snap.own_ips == {"127.0.0.1", "0.0.0.0", "192.0.2.10", "2001:db8::5", "192.0.2.20"}
    assert snap.hold_domains == ("held.example", "*.backup.example")
    assert snap.find_object("domain.dom", "team").targets == ("a@x.com", "b")


def test_snapshot_is_cached_until_something_changes(directory: Directory,
                                                   store_location: str) -> None:
    first = directory.snapshot()
    assert directory.snapshot() is first
    directory.create_account("new@domain.dom")
    second = directory.snapshot()
    assert second is not first
    assert second.find_object("domain.dom", "new") is not None
    assert directory.snapshot() is second
    store = directory.store
    assert isinstance(store, SqliteStore | PostgresStore)
    store.clock = clock = FakeClock()
    other = open_store(store_location)  # e.g. the CLI beside a running server
    other.set_setting("ServerIPAddresses", "192.0.2.99")
    other.close()
    clock.advance(VERSION_TTL * 2)  # another process's change shows within VERSION_TTL
    third = directory.snapshot()
    assert third is not second and "192.0.2.99" in third.own_ips
    with pytest.raises(TypeError):
        third.objects[("domain.dom", "x")] = DirObject(ObjectKind.ACCOUNT, "x")  # type: ignore[index]


def test_service_enabled_needs_both_account_and_domain(directory: Directory) -> None:
    """domains-accounts.md §4.2: a service is usable only if enabled for both."""
    directory.create_account("ann@domain.dom", password="pw")
    assert directory.service_enabled("ann@domain.dom", "POP")  # All by default
    directory.set_account_settings("ann@domain.dom", {"AccessModes": "Mail,IMAP"})
    assert not directory.service_enabled("ann@domain.dom", "pop")
    assert directory.service_enabled("ann@domain.dom", "IMAP")
    directory.set_account_settings("ann@domain.dom", {"AccessModes": "default"})
    directory.set_account_defaults("domain.dom", {"AccessModes": "None"})  # domain's defaults
    assert not directory.service_enabled("ann@domain.dom", "POP")
    directory.set_account_defaults("domain.dom", {"AccessModes": "default"})
    directory.set_domain_settings("domain.dom", {"DomainAccessModes": "Mail,IMAP"})
    assert not directory.service_enabled("ann@domain.dom", "POP")
    assert directory.service_enabled("ann@domain.dom", "IMAP")
    directory.set_server_domain_defaults({"DomainAccessModes": "POP"})  # domain's own wins
    assert not directory.service_enabled("ann@domain.dom", "POP")
    directory.set_domain_settings("domain.dom", {"DomainAccessModes": "default"})
    assert directory.service_enabled("ann@domain.dom", "POP")
    assert not directory.service_enabled("ann@domain.dom", "IMAP")
    with pytest.raises(NotFound):
        directory.service_enabled("nobody@domain.dom", "POP")
