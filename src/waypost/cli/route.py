"""``waypost route ADDRESS``: where an address goes, and with --explain why.

For mail from an IP address (``--source IP``) or an authenticated client
the answer is the one SMTP gives at RCPT TO: the same trust (Client IP
Addresses, or AUTH) and, when the Router refuses to relay, the same
"Relay to All Hosts We Backup" DNS check (``services/backup_mx.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import line
from waypost.services.backup_mx import allow_backup, backup_domain, we_back_up
from waypost.services.delivery.dns import Resolver


@click.command("route")
@data_option
@click.argument("address")
@click.option("--kind", type=click.Choice(["mail", "signal", "access"]), default="mail",
              show_default=True)
@click.option("--source", default="untrusted", show_default=True, metavar="trusted|untrusted|IP",
              help="who submits: trusted, untrusted, or a client IP judged by ClientIPAddresses")
@click.option("--authenticated", is_flag=True,
              help="the client logged in (SMTP AUTH): trusted whatever its address, as in SMTP")
@click.option("--explain", is_flag=True, help="print every step that led to the route")
def route_cmd(address: str, kind: str, source: str, authenticated: bool, explain: bool) -> None:
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
        if authenticated and not trusted:
            trusted, why = True, f"{why}, but authenticated"
        result = svc.router.route(address, kind, trusted=trusted, explain=explain)
        backup = backup_domain(result, svc.settings()) if kind == "mail" else None
        backed = False
        if backup:
            resolver = Resolver(svc.settings().items("DNSServers"))
            backed = asyncio.run(we_back_up(resolver, svc.router.current()[1], backup))
            if backed:
                allow_backup(result)
        if explain:
            line(f"source: {'trusted' if trusted else 'untrusted'} ({why}); kind: {kind}")
            for step in result.steps:
                line(f"  {step}")
            if backup:
                line(f"  Relay to All Hosts We Backup: {backup} "
                     f"{'lists' if backed else 'does not list'} this server as an MX")
        for text in result.lines():
            line(text)
        for error in result.member_errors if result.routes else ():
            line(f"  (member {error.address}: {error.text})")
        if result.error:
            raise SystemExit(1)


COMMANDS = [route_cmd]
