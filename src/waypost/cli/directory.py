"""The Directory nouns of ``waypost``, as one table: domain, account, alias, forwarder,
group, list.

Each entry names the command, its help text, its arguments and options, and the
Directory method it calls (or, for the few verbs that fit no shared shape, the
function in ``account.py`` / ``domain.py`` that does the work); ``cli/table.py``
turns the table into click groups.

Invariants: the command lines, messages and exit statuses are those of the
hand-written commands this table replaced (tests/test_cli.py and the e2e tests
run the real command); an ADDRESS without ``@domain`` is in the Main Domain and
a ``list`` without DOMAIN lists the Main Domain (the Directory's rule); names
echoed back are as typed, except domain names, which the Directory keeps in
lower case.
"""

from __future__ import annotations

from waypost.cli import account, domain
from waypost.cli.output import keyvalues
from waypost.cli.table import (
    Arg,
    Noun,
    Opt,
    Record,
    Verb,
    address,
    build,
    change,
    data,
    dictionary,
    listing,
    name,
    settings,
    showing,
)
from waypost.services.container import Services
from waypost.services.directory import Directory

ADDRESS = Arg("address")
PAIRS = Arg("values", "pairs")
ODMR = Opt("--odmr", "also keep the password sealed for CRAM-MD5 and SIP digest, which ODMR "
           "(ATRN, fetchmail) and SIP phones need: sets PasswordEncryption argon2+cram-md5",
           is_flag=True)


def _real_name(record: Record) -> object:
    return record.data.get("Settings", {}).get("RealName", "")


def _alias_account(record: Record) -> str:
    return f"{record.data.get('Target', '')}@{record.domain}"


def _subscribers(record: Record) -> int:
    return len(record.data.get("Subscribers", []))


def _list_set(svc: Services, address: str, values: dict[str, str]) -> None:
    svc.directory.update_list(address, values)
    keyvalues(svc.directory.get_list(address).data)


NOUNS = (
    Noun("domain", "Main and secondary domains.", [
        change("add", "Create a secondary domain.",
               Directory.create_domain, [Arg("name")], "domain {result.name} created"),
        change("remove", "Delete a secondary domain (refused while it has objects, unless "
               "--force).", Directory.delete_domain, [Arg("name")], "domain {name!l} removed",
               opts=[Opt("--force", "also delete every object of the domain", is_flag=True)]),
        change("rename", "Rename a domain.",
               Directory.rename_domain, [Arg("old"), Arg("new")],
               "domain {old!l} renamed to {new!l}"),
        Verb("list", "Every domain with its kind, aliases and number of objects.", [],
             domain.list_),
        Verb("show", "A domain's settings (effective values; stored ones marked), aliases and "
             "objects.", [Arg("name")], domain.show),
        settings("Change domain settings, e.g. MailToUnknown 'Rerouted to' MailRerouteAddress "
                 "ADDR.\n\nVALUE 'default' returns a setting to the server-wide default.",
                 "name", Directory.set_domain_settings, Directory.effective_domain_settings,
                 canonical=True),
    ], groups=[
        Noun("alias", "Domain aliases: other names of a domain.", [
            change("add", "Make ALIAS another name of domain NAME.",
                   Directory.add_domain_alias, [Arg("name"), Arg("alias")],
                   "{alias!l} is now an alias of {name!l}"),
            change("remove", "Remove the domain alias ALIAS from domain NAME.",
                   Directory.remove_domain_alias, [Arg("name"), Arg("alias")],
                   "alias {alias!l} removed from {name!l}"),
        ]),
        Noun("defaults", "Default Account Settings of a domain.",
             dictionary("default account settings", Directory.account_defaults,
                        Directory.set_account_defaults)),
        Noun("template", "The Account Template of a domain (Settings, Mailboxes, "
             "Subscriptions, MailboxAliases).",
             dictionary("account template", Directory.account_template,
                        Directory.set_account_template)),
    ]),
    Noun("account", "Accounts (name@domain, or name alone for the Main Domain).", [
        Verb("add", "Create an account from its domain's Account Template.", [ADDRESS],
             account.add, [Opt("--password", "initial password (a random one is generated "
                               "and printed when omitted)"), ODMR]),
        change("remove", "Delete account ADDRESS and its aliases.",
               Directory.delete_account, [ADDRESS], "account {address} removed"),
        change("rename", "Rename account OLD to NEW in its domain; its aliases follow it.",
               Directory.rename_account, [Arg("old"), Arg("new")],
               "account {old} renamed to {new}"),
        listing("Accounts of DOMAIN (the Main Domain when omitted).", Directory.list_accounts,
                [("account", name), ("real name", _real_name), ("rights", data("Rights", []))],
                "no accounts in {domain}"),
        Verb("show", "An account's effective settings (stored ones marked), aliases and "
             "rights.", [ADDRESS], account.show),
        settings("Change account settings; VALUE 'default' inherits from the domain.",
                 "address", Directory.set_account_settings,
                 Directory.effective_account_settings),
        Verb("passwd", "Set an account's password.", [ADDRESS], account.passwd,
             [Opt("--password", "the new password (prompted for when omitted)"), ODMR],
             opens=False),
        Verb("rights", "Show an account's administrator rights, or replace them with RIGHTS.",
             [ADDRESS, Arg("rights", "many")], account.rights,
             [Opt("--clear", "remove every right", is_flag=True)]),
        Verb("prefs", "Show an account's WebUser preferences (effective values; stored ones "
             "marked), or set them: NAME VALUE [NAME VALUE ...], VALUE 'default' removes one. "
             "Names: MailboxList (all|subscribed), ShowSubscribed (yes|no), SentBox, "
             "MessagesPerPage (10-500), Skin.",
             [ADDRESS, Arg("values", "many")], account.prefs),
    ]),
    Noun("alias", "Account aliases: extra names of an account, valid for mail and login.", [
        change("add", "ALIAS (name@domain) becomes another name of ACCOUNT in the same domain.",
               Directory.add_alias, [Arg("alias"), Arg("account")], "alias {alias} -> {account}"),
        change("remove", "Remove the account alias ALIAS (the account stays).",
               Directory.remove_alias, [Arg("alias")], "alias {alias} removed"),
        listing("Account aliases of DOMAIN and their accounts. DOMAIN defaults to the Main "
                "Domain.",
                Directory.list_aliases, [("alias", name), ("account", data("Target"))],
                "no aliases in {domain}"),
        showing("The account alias ALIAS and the account it names.", "alias",
                Directory.get_alias, [("alias", address), ("account", _alias_account)]),
    ]),
    Noun("forwarder", "Forwarders: names that redirect mail to another address.", [
        change("add", "Create forwarder ADDRESS, redirecting mail to TARGET.",
               Directory.create_forwarder, [ADDRESS, Arg("target")],
               "forwarder {address} -> {target}"),
        change("set", "Point an existing forwarder at a new TARGET.",
               Directory.set_forwarder, [ADDRESS, Arg("target")],
               "forwarder {address} -> {target}"),
        change("remove", "Delete forwarder ADDRESS.",
               Directory.delete_forwarder, [ADDRESS], "forwarder {address} removed"),
        listing("Forwarders of DOMAIN and their targets. DOMAIN defaults to the Main Domain.",
                Directory.list_forwarders, [("forwarder", name), ("target", data("Target"))],
                "no forwarders in {domain}"),
        showing("Forwarder ADDRESS and its target.", "address", Directory.get_forwarder,
                [("forwarder", address), ("target", data("Target"))]),
    ]),
    Noun("group", "Groups: mail to a group goes to every member.", [
        change("add", "Create group ADDRESS with MEMBERS (none when omitted).",
               Directory.create_group, [ADDRESS, Arg("members", "many")],
               "group {address} created with {members!n} members"),
        change("set", "Replace the members of a group.",
               Directory.set_group_members, [ADDRESS, Arg("members", "many")],
               "group {address} now has {members!n} members"),
        change("remove", "Delete group ADDRESS.",
               Directory.delete_group, [ADDRESS], "group {address} removed"),
        listing("Groups of DOMAIN and their members. DOMAIN defaults to the Main Domain.",
                Directory.list_groups, [("group", name), ("members", data("Members", []))],
                "no groups in {domain}"),
        showing("Group ADDRESS and its members.", "address", Directory.get_group,
                [("group", address), ("members", data("Members", []))]),
    ], groups=[
        Noun("member", "Add or remove one member.", [
            change("add", "Add MEMBER to group ADDRESS.",
                   Directory.add_group_member, [ADDRESS, Arg("member")],
                   "{member} added to {address}"),
            change("remove", "Remove MEMBER from group ADDRESS.",
                   Directory.remove_group_member, [ADDRESS, Arg("member")],
                   "{member} removed from {address}"),
        ]),
    ]),
    Noun("list", "Mailing lists (as Directory objects; list delivery comes with the LIST "
         "module).", [
        change("add", "Create mailing list ADDRESS owned by the account given with --owner.",
               Directory.create_list, [ADDRESS], "list {address} created, owner {owner}",
               opts=[Opt("--owner", "the account that owns the list", required=True)]),
        Verb("set", "Change settings of mailing list ADDRESS. Prints the list as stored.",
             [ADDRESS, PAIRS], _list_set),
        change("remove", "Delete mailing list ADDRESS.",
               Directory.delete_list, [ADDRESS], "list {address} removed"),
        listing("Mailing lists of DOMAIN with owner and subscriber count. DOMAIN defaults to "
                "the Main Domain.", Directory.list_lists,
                [("list", name), ("owner", data("Owner")), ("subscribers", _subscribers)],
                "no mailing lists in {domain}"),
        showing("Mailing list ADDRESS with everything stored for it.", "address",
                Directory.get_list, [("list", address)], with_data=True),
    ]),
)

COMMANDS = [build(noun) for noun in NOUNS]
