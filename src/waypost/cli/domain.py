"""``waypost domain ...``: domains, their aliases, settings, defaults and template."""

from __future__ import annotations

import json

import click

from waypost.cli.common import data_option, pairs, services
from waypost.cli.output import keyvalues, line, table


@click.group("domain")
def domain_group() -> None:
    """Main and secondary domains."""


@domain_group.command("add")
@data_option
@click.argument("name")
def add(name: str) -> None:
    """Create a secondary domain."""
    with services() as svc:
        record = svc.directory.create_domain(name)
        line(f"domain {record.name} created")


@domain_group.command("remove")
@data_option
@click.argument("name")
@click.option("--force", is_flag=True, help="also delete every object of the domain")
def remove(name: str, force: bool) -> None:
    """Delete a secondary domain (refused while it has objects, unless --force)."""
    with services() as svc:
        svc.directory.delete_domain(name, force=force)
        line(f"domain {name.lower()} removed")


@domain_group.command("rename")
@data_option
@click.argument("old")
@click.argument("new")
def rename(old: str, new: str) -> None:
    """Rename a domain."""
    with services() as svc:
        svc.directory.rename_domain(old, new)
        line(f"domain {old.lower()} renamed to {new.lower()}")


@domain_group.command("list")
@data_option
def list_() -> None:
    """Every domain with its kind, aliases and number of objects."""
    with services() as svc:
        rows = []
        for record in svc.directory.list_domains():
            count = len(svc.store.list_objects(record.name))
            rows.append((record.name, "main" if record.is_main else "secondary",
                         list(record.aliases), count))
        table(["domain", "kind", "aliases", "objects"], rows)


@domain_group.command("show")
@data_option
@click.argument("name")
def show(name: str) -> None:
    """A domain's settings (effective values; stored ones marked), aliases and objects."""
    with services() as svc:
        record = svc.directory.get_domain(name)
        stored = svc.directory.domain_settings(record.name)
        effective = svc.directory.effective_domain_settings(record.name)
        rules = effective.pop("MailRules", None)
        keyvalues([
            ("domain", record.name),
            ("kind", "main" if record.is_main else "secondary"),
            ("aliases", list(record.aliases)),
            ("mail rules", f"{len(rules)} (waypost rules show --domain {record.name})"
             if rules else "none"),
        ])
        line()
        table(["setting", "value", ""],
              [(k, v, "" if k in stored else "(default)") for k, v in effective.items()])
        objects = svc.store.list_objects(record.name)
        if objects:
            line()
            counts: dict[str, int] = {}
            for obj in objects:
                counts[obj.kind] = counts.get(obj.kind, 0) + 1
            keyvalues({_plural(kind): n for kind, n in sorted(counts.items())})


@domain_group.command("set")
@data_option
@click.argument("name")
@click.argument("values", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE ...]")
def set_(name: str, values: tuple[str, ...]) -> None:
    """Change domain settings, e.g. MailToUnknown 'Rerouted to' MailRerouteAddress ADDR.

    VALUE 'default' returns a setting to the server-wide default.
    """
    changes = pairs(values)
    with services() as svc:
        svc.directory.set_domain_settings(name, changes)
        effective = svc.directory.effective_domain_settings(name)
        for key in changes:
            canonical = next((k for k in effective if k.lower() == key.lower()), key)
            line(f"{canonical} = {effective.get(canonical, 'default')}")


@domain_group.group("alias")
def alias_group() -> None:
    """Domain aliases: other names of a domain."""


@alias_group.command("add")
@data_option
@click.argument("name")
@click.argument("alias")
def alias_add(name: str, alias: str) -> None:
    with services() as svc:
        svc.directory.add_domain_alias(name, alias)
        line(f"{alias.lower()} is now an alias of {name.lower()}")


@alias_group.command("remove")
@data_option
@click.argument("name")
@click.argument("alias")
def alias_remove(name: str, alias: str) -> None:
    with services() as svc:
        svc.directory.remove_domain_alias(name, alias)
        line(f"alias {alias.lower()} removed from {name.lower()}")


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _dict_command(group: click.Group, what: str, getter: str, setter: str) -> None:
    """``show`` and ``set KEY VALUE`` for one of a domain's dictionaries."""

    @group.command("show", help=f"Show the domain's {what}.")
    @data_option
    @click.argument("name")
    def show_dict(name: str) -> None:
        with services() as svc:
            values = getattr(svc.directory, getter)(name)
            if values:
                keyvalues(values)
            else:
                line(f"({what} is empty)")

    @group.command("set", help=f"Change the domain's {what}; a VALUE that is JSON "
                   "(a list or object) is stored as such; 'default' removes the key.")
    @data_option
    @click.argument("name")
    @click.argument("values", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE ...]")
    def set_dict(name: str, values: tuple[str, ...]) -> None:
        changes = {k: _json_or_text(v) for k, v in pairs(values).items()}
        with services() as svc:
            getattr(svc.directory, setter)(name, changes)
            keyvalues(getattr(svc.directory, getter)(name))


def _json_or_text(value: str) -> object:
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


@domain_group.group("defaults")
def defaults_group() -> None:
    """Default Account Settings of a domain."""


@domain_group.group("template")
def template_group() -> None:
    """The Account Template of a domain (Settings, Mailboxes, Subscriptions, MailboxAliases)."""


_dict_command(defaults_group, "default account settings", "account_defaults",
              "set_account_defaults")
_dict_command(template_group, "account template", "account_template", "set_account_template")

COMMANDS = [domain_group]
