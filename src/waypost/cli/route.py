"""``waypost route ADDRESS``: where an address goes, and with --explain why."""

from __future__ import annotations

import ipaddress

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import line


@click.command("route")
@data_option
@click.argument("address")
@click.option("--kind", type=click.Choice(["mail", "signal", "access"]), default="mail",
              show_default=True)
@click.option("--source", default="untrusted", show_default=True, metavar="trusted|untrusted|IP",
              help="who submits: trusted, untrusted, or a client IP judged by ClientIPAddresses")
@click.option("--explain", is_flag=True, help="print every step that led to the route")
def route_cmd(address: str, kind: str, source: str, explain: bool) -> None:
    """Print the route of ADDRESS as MODULE(queue)address, or error: TEXT (status 1)."""
    source_l = source.lower()
    with services() as svc:
        if source_l in ("trusted", "untrusted"):
            trusted = source_l == "trusted"
            why = source_l
        else:
            try:
                ipaddress.ip_address(source)
            except ValueError:
                raise click.BadParameter(
                    "expected trusted, untrusted or an IP address", param_hint="--source"
                ) from None
            trusted = svc.is_trusted_ip(source)
            why = f"{source} is {'in' if trusted else 'not in'} ClientIPAddresses"
        result = svc.router.route(address, kind, trusted=trusted, explain=explain)
        if explain:
            line(f"source: {'trusted' if trusted else 'untrusted'} ({why}); kind: {kind}")
            for step in result.steps:
                line(f"  {step}")
        for text in result.lines():
            line(text)
        for error in result.member_errors if result.routes else ():
            line(f"  (member {error.address}: {error.text})")
        if result.error:
            raise SystemExit(1)


COMMANDS = [route_cmd]
