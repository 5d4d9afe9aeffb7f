"""``waypost serve``: run the server in the foreground.

The banner names the data directory and the listeners; it never shows a
password (``waypost init`` prints the initial one, once).

``--workers N`` (default: the number of cores) runs N processes sharing the
ports and the store under a supervisor (``cli/supervisor.py``); ``--workers
1`` runs the server in this process, as before. ``--worker I/N`` (hidden) is
how the supervisor starts each worker: one process, ``server.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from waypost import server as server_mod
from waypost.cli import supervisor
from waypost.cli.common import data_dir, data_option, friendly_errors
from waypost.cli.output import fail
from waypost.logformat import FORMATS
from waypost.storage.open import store_exists

LEGACY_PASSWORD_FILE = "initial-postmaster-password"


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


@click.command()
@data_option
@click.option("--listen", default="0.0.0.0", show_default=True, help="address to bind")
@click.option("--port-offset", default=0, show_default=True, type=click.IntRange(0, 60000),
              help="added to every listener's port (tests, non-root users)")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(FORMATS),
              help="text lines, or one JSON object per line (fields as keys)")
@click.option("--workers", default=None, type=click.IntRange(1, 256),
              help="processes sharing the ports and the store (default: the number of "
                   "cores); 1 runs everything in this process")
@click.option("--worker", "worker_of", default=None, hidden=True, metavar="I/N",
              help="run as worker I (0-based) of N processes sharing the ports")
def serve(listen: str, port_offset: int, log_level: str, log_format: str,
          workers: int | None, worker_of: str | None) -> None:
    """Start every listener; stop cleanly on SIGINT or SIGTERM."""

    worker, count = _worker_of(worker_of)
    target = data_dir()
    if not store_exists(target):
        fail(f"no Waypost data in {target}; run `waypost init --domain NAME` first")
    if worker_of is None and (workers or default_workers()) > 1:
        server_mod.setup_logging(log_level, log_format, tag="sup")
        with friendly_errors():
            supervisor.supervise(
                target, workers or default_workers(),
                ["--listen", listen, "--port-offset", str(port_offset),
                 "--log-level", log_level, "--log-format", log_format],
                prepare=server_mod.prepare, echo=_echo, extra=_warnings(target))
        return
    server_mod.setup_logging(log_level, log_format, tag=f"w{worker}" if count > 1 else "")
    if supervisor.supervised():
        supervisor.watch_supervisor()

    def ready(server: server_mod.Server) -> None:
        main_domain = server.services.directory.main_domain()
        listeners = [(lst.name, lst.host, lst.port) for lst in server.listeners]
        if supervisor.supervised():
            supervisor.report_ready(main_domain, listeners)
            return
        for line in supervisor.banner_lines(target, main_domain, listeners):
            _echo(line)
        for line in _warnings(target):
            _echo(line)
        _echo("Press Ctrl-C to stop.")

    try:
        with friendly_errors():
            server_mod.serve(target, listen=listen, port_offset=port_offset, worker=worker,
                             workers=count, ready=ready)
    except OSError as exc:  # a port in use, an address not ours
        supervisor.report_failure(f"cannot start: {exc}")
        fail(f"cannot start: {exc}")
    except click.ClickException as exc:
        supervisor.report_failure(exc.format_message())
        raise
    except Exception as exc:
        supervisor.report_failure(f"{type(exc).__name__}: {exc}")
        raise


def _echo(line: str) -> None:
    click.echo(line)


def _warnings(target: Path) -> list[str]:
    """Banner lines about the data directory itself."""
    if (target / LEGACY_PASSWORD_FILE).exists():
        # Data directories made before issue 13 keep the initial password in
        # plain text; name the file (never its content) so it gets removed.
        return [f"  warning: {target / LEGACY_PASSWORD_FILE} holds a plain-text "
                "password; change it with `waypost account passwd postmaster`"]
    return []


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
