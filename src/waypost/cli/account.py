"""What ``waypost account`` does beyond the shared verbs: create with a generated
password, show, change a password, administrator rights, WebUser preferences.

The command lines (arguments, options, help) are in the table, ``cli/directory.py``.
Invariants: a generated password is printed once, right after the account is
made; the plain-text initial postmaster password file that data directories
from before issue 13 may still hold goes away when postmaster's password is
changed (``waypost init`` no longer writes it).
"""

from __future__ import annotations

from typing import Any

import click

from waypost.cli.common import pairs, services
from waypost.cli.output import keyvalues, line, table
from waypost.cli.table import effective_settings
from waypost.services import preferences
from waypost.services.container import Services
from waypost.services.passwords import generate_password
from waypost.services.sealed import CRAM_MODE


def add(svc: Services, address: str, password: str | None, odmr: bool = False) -> None:
    generated = password is None
    password = password or generate_password()
    settings = {"PasswordEncryption": CRAM_MODE} if odmr else None
    name = svc.directory.create_account(address, password=password, settings=settings)
    line(f"account {name} created")
    if generated:
        line(f"password: {password}")


def show(svc: Services, address: str) -> None:
    record = svc.directory.get_account(address)
    stored = record.data.get("Settings", {})
    effective = svc.directory.effective_account_settings(address)
    aliases = [a.name for a in svc.directory.list_aliases(record.domain)
               if a.data.get("Target", "").lower() == record.name.lower()]
    keyvalues([
        ("account", f"{record.name}@{record.domain}"),
        ("aliases", aliases),
        ("rights", svc.directory.get_rights(address)),
        ("password", _password_state(record)),
    ])
    line()
    effective_settings(effective, stored)


def _password_state(record: Any) -> str:
    """How the password is kept (``record``: the Directory's account record)."""
    if not record.secret:
        return "not set"
    if record.data.get("Sealed", {}).get("CRAM-MD5"):
        return "set (argon2, and sealed for CRAM-MD5/ODMR and SIP digest)"
    return "set (argon2; no CRAM-MD5/ODMR or SIP digest: see `waypost account passwd --odmr`)"


def passwd(address: str, password: str | None, odmr: bool = False) -> None:
    """Asks before opening the store, so the store is not held open while a person types.
    ``odmr``: the account also keeps the password sealed for CRAM-MD5 (RFC 2645
    makes CRAM-MD5 the ODMR login; the sealed copy can only be made from the
    password itself, hence here and at ``add``)."""
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with services() as svc:
        if odmr:
            svc.directory.set_account_settings(address, {"PasswordEncryption": CRAM_MODE})
        svc.directory.set_password(address, password)
        initial = svc.data_dir / "initial-postmaster-password"
        name = address.split("@")[0].lower()
        if name == "postmaster" and initial.exists():
            main = svc.directory.main_domain()
            if "@" not in address or address.split("@", 1)[1].lower() == main:
                initial.unlink()
        line(f"password of {address} changed")


def rights(svc: Services, address: str, rights: list[str], clear: bool) -> None:
    if rights or clear:
        svc.directory.set_rights(address, rights)
    line(", ".join(svc.directory.get_rights(address)) or "(no rights)")


def prefs(svc: Services, address: str, values: list[str]) -> None:
    """Show the account's effective WebUser preferences (stored ones marked),
    after storing ``NAME VALUE`` pairs if given (``default`` removes one; all
    are checked before any is stored)."""
    if values:
        preferences.set_prefs(svc, address, pairs(tuple(values)))
    stored = preferences.stored_prefs(svc, address)
    effective = preferences.effective(stored)
    table(["preference", "value", ""],
          [(name, value if value or name != "Skin" else '"" (unnamed)',
            "(stored)" if name in stored else "") for name, value in effective.items()])
