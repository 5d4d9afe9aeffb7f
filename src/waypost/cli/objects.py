"""``waypost alias|forwarder|group|list ...``: the other domain objects."""

from __future__ import annotations

import click

from waypost.cli.common import data_option, pairs, services
from waypost.cli.output import keyvalues, line, table

# --- account aliases -------------------------------------------------------

@click.group("alias")
def alias_group() -> None:
    """Account aliases: extra names of an account, valid for mail and login."""


@alias_group.command("add")
@data_option
@click.argument("alias")
@click.argument("account")
def alias_add(alias: str, account: str) -> None:
    """ALIAS (name@domain) becomes another name of ACCOUNT in the same domain."""
    with services() as svc:
        svc.directory.add_alias(alias, account)
        line(f"alias {alias} -> {account}")


@alias_group.command("remove")
@data_option
@click.argument("alias")
def alias_remove(alias: str) -> None:
    with services() as svc:
        svc.directory.remove_alias(alias)
        line(f"alias {alias} removed")


@alias_group.command("list")
@data_option
@click.argument("domain", required=False)
def alias_list(domain: str | None) -> None:
    with services() as svc:
        domain = domain or svc.directory.main_domain()
        table(["alias", "account"],
              [(r.name, r.data.get("Target", "")) for r in svc.directory.list_aliases(domain)],
              empty=f"no aliases in {domain}")


@alias_group.command("show")
@data_option
@click.argument("alias")
def alias_show(alias: str) -> None:
    with services() as svc:
        record = svc.directory.get_alias(alias)
        keyvalues([("alias", f"{record.name}@{record.domain}"),
                   ("account", f"{record.data.get('Target', '')}@{record.domain}")])


# --- forwarders --------------------------------------------------------------

@click.group("forwarder")
def forwarder_group() -> None:
    """Forwarders: names that redirect mail to another address."""


@forwarder_group.command("add")
@data_option
@click.argument("address")
@click.argument("target")
def forwarder_add(address: str, target: str) -> None:
    with services() as svc:
        svc.directory.create_forwarder(address, target)
        line(f"forwarder {address} -> {target}")


@forwarder_group.command("set")
@data_option
@click.argument("address")
@click.argument("target")
def forwarder_set(address: str, target: str) -> None:
    """Point an existing forwarder at a new TARGET."""
    with services() as svc:
        svc.directory.set_forwarder(address, target)
        line(f"forwarder {address} -> {target}")


@forwarder_group.command("remove")
@data_option
@click.argument("address")
def forwarder_remove(address: str) -> None:
    with services() as svc:
        svc.directory.delete_forwarder(address)
        line(f"forwarder {address} removed")


@forwarder_group.command("list")
@data_option
@click.argument("domain", required=False)
def forwarder_list(domain: str | None) -> None:
    with services() as svc:
        domain = domain or svc.directory.main_domain()
        table(["forwarder", "target"],
              [(r.name, r.data.get("Target", "")) for r in svc.directory.list_forwarders(domain)],
              empty=f"no forwarders in {domain}")


@forwarder_group.command("show")
@data_option
@click.argument("address")
def forwarder_show(address: str) -> None:
    with services() as svc:
        record = svc.directory.get_forwarder(address)
        keyvalues([("forwarder", f"{record.name}@{record.domain}"),
                   ("target", record.data.get("Target", ""))])


# --- groups --------------------------------------------------------------------

@click.group("group")
def group_group() -> None:
    """Groups: mail to a group goes to every member."""


@group_group.command("add")
@data_option
@click.argument("address")
@click.argument("members", nargs=-1)
def group_add(address: str, members: tuple[str, ...]) -> None:
    with services() as svc:
        svc.directory.create_group(address, list(members))
        line(f"group {address} created with {len(members)} members")


@group_group.command("set")
@data_option
@click.argument("address")
@click.argument("members", nargs=-1)
def group_set(address: str, members: tuple[str, ...]) -> None:
    """Replace the members of a group."""
    with services() as svc:
        svc.directory.set_group_members(address, list(members))
        line(f"group {address} now has {len(members)} members")


@group_group.command("remove")
@data_option
@click.argument("address")
def group_remove(address: str) -> None:
    with services() as svc:
        svc.directory.delete_group(address)
        line(f"group {address} removed")


@group_group.command("list")
@data_option
@click.argument("domain", required=False)
def group_list(domain: str | None) -> None:
    with services() as svc:
        domain = domain or svc.directory.main_domain()
        table(["group", "members"],
              [(r.name, r.data.get("Members", [])) for r in svc.directory.list_groups(domain)],
              empty=f"no groups in {domain}")


@group_group.command("show")
@data_option
@click.argument("address")
def group_show(address: str) -> None:
    with services() as svc:
        record = svc.directory.get_group(address)
        keyvalues([("group", f"{record.name}@{record.domain}"),
                   ("members", record.data.get("Members", []))])


@group_group.group("member")
def member_group() -> None:
    """Add or remove one member."""


@member_group.command("add")
@data_option
@click.argument("address")
@click.argument("member")
def member_add(address: str, member: str) -> None:
    with services() as svc:
        svc.directory.add_group_member(address, member)
        line(f"{member} added to {address}")


@member_group.command("remove")
@data_option
@click.argument("address")
@click.argument("member")
def member_remove(address: str, member: str) -> None:
    with services() as svc:
        svc.directory.remove_group_member(address, member)
        line(f"{member} removed from {address}")


# --- mailing lists -------------------------------------------------------------

@click.group("list")
def list_group() -> None:
    """Mailing lists (as Directory objects; list delivery comes with the LIST module)."""


@list_group.command("add")
@data_option
@click.argument("address")
@click.option("--owner", required=True, help="the account that owns the list")
def list_add(address: str, owner: str) -> None:
    with services() as svc:
        svc.directory.create_list(address, owner)
        line(f"list {address} created, owner {owner}")


@list_group.command("set")
@data_option
@click.argument("address")
@click.argument("values", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE ...]")
def list_set(address: str, values: tuple[str, ...]) -> None:
    with services() as svc:
        svc.directory.update_list(address, pairs(values))
        keyvalues(svc.directory.get_list(address).data)


@list_group.command("remove")
@data_option
@click.argument("address")
def list_remove(address: str) -> None:
    with services() as svc:
        svc.directory.delete_list(address)
        line(f"list {address} removed")


@list_group.command("list")
@data_option
@click.argument("domain", required=False)
def list_list(domain: str | None) -> None:
    with services() as svc:
        domain = domain or svc.directory.main_domain()
        table(["list", "owner", "subscribers"],
              [(r.name, r.data.get("Owner", ""), len(r.data.get("Subscribers", [])))
               for r in svc.directory.list_lists(domain)],
              empty=f"no mailing lists in {domain}")


@list_group.command("show")
@data_option
@click.argument("address")
def list_show(address: str) -> None:
    with services() as svc:
        record = svc.directory.get_list(address)
        keyvalues([("list", f"{record.name}@{record.domain}"), *record.data.items()])


COMMANDS = [alias_group, forwarder_group, group_group, list_group]
