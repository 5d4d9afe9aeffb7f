"""``waypost settings show|set``: server settings."""

from __future__ import annotations

import click

from waypost import settings as settings_mod
from waypost.cli.common import data_option, services
from waypost.cli.output import line, table


@click.group("settings")
def settings_group() -> None:
    """Server settings (MainDomain, ClientIPAddresses, DNSServers, ports, limits...)."""


@settings_group.command("show")
@data_option
@click.argument("name", required=False)
def show(name: str | None) -> None:
    """Every setting with its value, or one setting's value."""
    with services() as svc:
        current = svc.settings()
        stored = {k.lower() for k in svc.store.get_settings()} | {"maindomain"}
        if name:
            line(current.text(settings_mod.lookup(name).name))
            return
        table(
            ["setting", "value", "", "meaning"],
            [
                (s.name, current.text(s.name) or '""',
                 "" if s.name.lower() in stored else "(default)", s.help)
                for s in settings_mod.SETTINGS
            ],
        )


@settings_group.command("set")
@data_option
@click.argument("name")
@click.argument("value")
def set_(name: str, value: str) -> None:
    """Change one setting; VALUE 'default' restores the default."""
    with services() as svc:
        canonical = svc.set_setting(name, value)
        line(f"{canonical} = {svc.settings().text(canonical)}")


COMMANDS = [settings_group]
