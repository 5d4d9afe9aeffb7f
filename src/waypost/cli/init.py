"""``waypost init``: a new data directory with its Main Domain and postmaster.

Invariant: the generated postmaster password is printed here, once, on the
terminal that ran ``init`` (``make run`` runs ``init`` on first start) and is
written nowhere else: not to a file in the data directory, not to the server
log, not by ``waypost serve`` (issue 13 point 4). Only its argon2 hash is kept.
"""

from __future__ import annotations

import click

from waypost.cli.common import data_dir, data_option, services
from waypost.cli.output import fail, keyvalues
from waypost.storage.open import store_exists


@click.command()
@data_option
@click.option("--domain", "domain", required=True, help="the Main Domain name")
def init(domain: str) -> None:
    """Create the data directory, the Main Domain and postmaster (password printed once)."""
    target = data_dir()
    if store_exists(target):
        fail(f"{target} already holds Waypost data; refusing to overwrite it")
    with services(create=True) as svc:
        password = svc.directory.init_server(domain)
        keyvalues(
            [
                ("data directory", str(target)),
                ("Main Domain", svc.directory.main_domain()),
                ("postmaster", f"postmaster@{svc.directory.main_domain()}"),
                ("password", password),
            ]
        )
        click.echo("Keep this password: it is shown only this once (change it with "
                   "`waypost account passwd postmaster`).")


COMMANDS = [init]
