"""``waypost sip registrations|unregister``: the SIP registrar's bindings.

The CLI works on the store directly, like ``waypost queue``: a binding it
removes is gone for the running server's next call at once (the proxy
reads the bindings from the store).
"""

from __future__ import annotations

import time

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import fail, line, table
from waypost.services.signals.registrar import format_q, registrations, unregister


@click.group("sip")
def sip_group() -> None:
    """SIP registrations: the phones registered for each account."""


@sip_group.command("registrations")
@data_option
@click.argument("account", required=False)
def registrations_cmd(account: str | None) -> None:
    """The registered contacts of ACCOUNT (any of its names), or of every account."""
    now = time.time()
    with services() as svc:
        bindings = registrations(svc, account, now=now)
    rows = [(f"{b.account}@{b.domain}", b.contact, _left(b.expires - now),
             format_q(b.q) if b.q is not None else None,
             _source(b.transport, b.address, b.port) if b.address else None,
             b.user_agent or None) for b in bindings]
    table(["account", "contact", "expires in", "q", "source", "user agent"], rows,
          empty=f"no registrations{f' of {account}' if account else ''}")


@sip_group.command("unregister")
@data_option
@click.argument("account")
@click.argument("contact", required=False)
def unregister_cmd(account: str, contact: str | None) -> None:
    """Remove the registrations of ACCOUNT: all of them, or the one of CONTACT (a URI)."""
    with services() as svc:
        count = unregister(svc, account, contact)
    if contact is not None and not count:
        fail(f"{contact} is not registered for {account}")
    line(f"{count} registration(s) removed")


def _source(transport: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{transport} {host}:{port}".strip()


def _left(seconds: float) -> str:
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


COMMANDS = [sip_group]
