"""Entry point: ``waypost [--data DIR] NOUN VERB ...``.

Invariant: every noun module exposes ``COMMANDS``; the Directory nouns all come
from the one table in ``cli/directory.py``.
"""

from __future__ import annotations

import click

from waypost import __version__
from waypost.cli import (
    directory,
    files,
    init,
    mailbox,
    queue,
    route,
    rules,
    serve,
    sip,
    skin,
    tls,
)
from waypost.cli import router as router_cmd
from waypost.cli import settings as settings_cmd
from waypost.cli.common import data_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@data_option
@click.version_option(__version__, prog_name="waypost")
def cli() -> None:
    """Waypost administration: the Directory, the Router, settings and the server."""


for module in (init, serve, directory, router_cmd, route, settings_cmd, queue, mailbox, rules,
               skin, files, tls, sip):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="waypost")


if __name__ == "__main__":
    main()
