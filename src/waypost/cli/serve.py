"""``waypost serve``: run the server in the foreground.

The banner names the data directory and the listeners; it never shows a
password (``waypost init`` prints the initial one, once).
"""

from __future__ import annotations

import click

from waypost import server as server_mod
from waypost.cli.common import data_dir, data_option, friendly_errors
from waypost.cli.output import fail
from waypost.logformat import FORMATS
from waypost.storage.open import store_exists

LEGACY_PASSWORD_FILE = "initial-postmaster-password"


@click.command()
@data_option
@click.option("--listen", default="0.0.0.0", show_default=True, help="address to bind")
@click.option("--port-offset", default=0, show_default=True, type=click.IntRange(0, 60000),
              help="added to every listener's port (tests, non-root users)")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(FORMATS),
              help="text lines, or one JSON object per line (fields as keys)")
@click.option("--worker", "worker_of", default=None, hidden=True, metavar="I/N",
              help="run as worker I (0-based) of N processes sharing the ports")
def serve(listen: str, port_offset: int, log_level: str, log_format: str,
          worker_of: str | None) -> None:
    """Start every listener; stop cleanly on SIGINT or SIGTERM."""

    worker, workers = _worker_of(worker_of)
    target = data_dir()
    if not store_exists(target):
        fail(f"no Waypost data in {target}; run `waypost init --domain NAME` first")
    server_mod.setup_logging(log_level, log_format)

    def ready(server: server_mod.Server) -> None:
        click.echo(f"Waypost serving data in {target} (Main Domain "
                   f"{server.services.directory.main_domain()})")
        for listener in server.listeners:
            click.echo(f"  {listener.name:<12} {listener.host}:{listener.port}")
        if not server.listeners:
            click.echo("  (no protocol listeners configured)")
        if (target / LEGACY_PASSWORD_FILE).exists():
            # Data directories made before issue 13 keep the initial password in
            # plain text; name the file (never its content) so it gets removed.
            click.echo(f"  warning: {target / LEGACY_PASSWORD_FILE} holds a plain-text "
                       "password; change it with `waypost account passwd postmaster`")
        click.echo("Press Ctrl-C to stop.", nl=True)

    with friendly_errors():
        server_mod.serve(target, listen=listen, port_offset=port_offset, worker=worker,
                         workers=workers, ready=ready)


def _worker_of(text: str | None) -> tuple[int, int]:
    """``I/N`` of ``--worker``: this process's index and the number of workers."""
    if text is None:
        return 0, 1
    index, _, count = text.partition("/")
    try:
        worker, workers = int(index), int(count)
    except ValueError:
        fail(f"--worker wants I/N (index/count), not {text!r}")
    if not 0 <= worker < workers:
        fail(f"--worker {text}: the index must be at least 0 and below the count")
    return worker, workers


COMMANDS = [serve]
