"""``waypost init``: a new data directory with its Main Domain and postmaster."""

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
        initial = svc.data_dir / "initial-postmaster-password"
        initial.write_text(password + "\n")
        initial.chmod(0o600)
        keyvalues(
            [
                ("data directory", str(target)),
                ("Main Domain", svc.directory.main_domain()),
                ("postmaster", f"postmaster@{svc.directory.main_domain()}"),
                ("password", password),
            ]
        )
        click.echo("Keep this password: it is shown once here and by `waypost serve` until "
                   "it is changed with `waypost account passwd postmaster`.")


COMMANDS = [init]
