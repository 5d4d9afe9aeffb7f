"""``waypost account ...``: accounts, their settings, passwords and rights."""

from __future__ import annotations

import click

from waypost.cli.common import data_option, pairs, services
from waypost.cli.output import keyvalues, line, table
from waypost.services.passwords import generate_password


@click.group("account")
def account_group() -> None:
    """Accounts (name@domain, or name alone for the Main Domain)."""


@account_group.command("add")
@data_option
@click.argument("address")
@click.option("--password", help="initial password (a random one is generated and printed "
              "when omitted)")
def add(address: str, password: str | None) -> None:
    """Create an account from its domain's Account Template."""
    generated = password is None
    password = password or generate_password()
    with services() as svc:
        name = svc.directory.create_account(address, password=password)
        line(f"account {name} created")
        if generated:
            line(f"password: {password}")


@account_group.command("remove")
@data_option
@click.argument("address")
def remove(address: str) -> None:
    with services() as svc:
        svc.directory.delete_account(address)
        line(f"account {address} removed")


@account_group.command("rename")
@data_option
@click.argument("old")
@click.argument("new")
def rename(old: str, new: str) -> None:
    with services() as svc:
        svc.directory.rename_account(old, new)
        line(f"account {old} renamed to {new}")


@account_group.command("list")
@data_option
@click.argument("domain", required=False)
def list_(domain: str | None) -> None:
    """Accounts of DOMAIN (the Main Domain when omitted)."""
    with services() as svc:
        domain = domain or svc.directory.main_domain()
        rows = []
        for record in svc.directory.list_accounts(domain):
            settings = record.data.get("Settings", {})
            rows.append((record.name, settings.get("RealName", ""),
                         record.data.get("Rights", [])))
        table(["account", "real name", "rights"], rows, empty=f"no accounts in {domain}")


@account_group.command("show")
@data_option
@click.argument("address")
def show(address: str) -> None:
    """An account's effective settings (stored ones marked), aliases and rights."""
    with services() as svc:
        record = svc.directory.get_account(address)
        stored = record.data.get("Settings", {})
        effective = svc.directory.effective_account_settings(address)
        aliases = [a.name for a in svc.directory.list_aliases(record.domain)
                   if a.data.get("Target", "").lower() == record.name.lower()]
        keyvalues([
            ("account", f"{record.name}@{record.domain}"),
            ("aliases", aliases),
            ("rights", svc.directory.get_rights(address)),
            ("password", "set (argon2)" if record.secret else "not set"),
        ])
        line()
        table(["setting", "value", ""],
              [(k, v, "" if k in stored else "(default)") for k, v in effective.items()])


@account_group.command("set")
@data_option
@click.argument("address")
@click.argument("values", nargs=-1, required=True, metavar="KEY VALUE [KEY VALUE ...]")
def set_(address: str, values: tuple[str, ...]) -> None:
    """Change account settings; VALUE 'default' inherits from the domain."""
    changes = pairs(values)
    with services() as svc:
        svc.directory.set_account_settings(address, changes)
        effective = svc.directory.effective_account_settings(address)
        for key in changes:
            line(f"{key} = {effective.get(key, 'default')}")


@account_group.command("passwd")
@data_option
@click.argument("address")
@click.option("--password", help="the new password (prompted for when omitted)")
def passwd(address: str, password: str | None) -> None:
    """Set an account's password."""
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with services() as svc:
        svc.directory.set_password(address, password)
        initial = svc.data_dir / "initial-postmaster-password"
        name = address.split("@")[0].lower()
        if name == "postmaster" and initial.exists():
            main = svc.directory.main_domain()
            if "@" not in address or address.split("@", 1)[1].lower() == main:
                initial.unlink()
        line(f"password of {address} changed")


@account_group.command("rights")
@data_option
@click.argument("address")
@click.argument("rights", nargs=-1)
@click.option("--clear", is_flag=True, help="remove every right")
def rights(address: str, rights: tuple[str, ...], clear: bool) -> None:
    """Show an account's administrator rights, or replace them with RIGHTS."""
    with services() as svc:
        if rights or clear:
            svc.directory.set_rights(address, list(rights))
        line(", ".join(svc.directory.get_rights(address)) or "(no rights)")


COMMANDS = [account_group]
