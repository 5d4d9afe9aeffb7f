"""IMAP listeners: 143 (plain, STARTTLS offered) and 993 (implicit TLS).

Both share one :class:`~waypost.protocols.imap.session.ImapContext`: the
thread pool every session's blocking work runs in, the in-process change
:class:`~waypost.protocols.imap.session.Hub` (a session in IDLE on port 993
wakes when one on port 143 changes its mailbox), the mail-access service and the
process-wide login guard, so password guessing is counted across IMAP, POP3
and SMTP. ``MaxConnections`` and the per-address limits (``connlimits``)
apply to each listener.
"""

from __future__ import annotations

import asyncio
import logging

from waypost.protocols.connlimits import ConnectionLimits, Refusal
from waypost.protocols.imap import wire
from waypost.protocols.imap.session import ImapContext, Session
from waypost.protocols.listen import ListenContext, Listener, listen
from waypost.services.login_guard import shared_guard

log = logging.getLogger("waypost.imap")

MODES = (("IMAP", "IMAPPort", False), ("IMAPS", "IMAPSPort", True))


async def start_imap(server: ListenContext) -> list[Listener]:
    ctx = ImapContext(server.services, shared_guard(), tls=server.tls)
    await ctx.refresh()
    limits = ConnectionLimits.from_settings(ctx.settings)

    def refuse(refusal: Refusal) -> bytes:
        """RFC 5530 §3: UNAVAILABLE, a temporary refusal."""
        return wire.untagged(f"BYE [UNAVAILABLE] {refusal.text}")

    listeners: list[Listener] = []
    for name, port_setting, implicit in MODES:

        async def run(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit: bool = implicit
        ) -> None:
            await ctx.refresh()
            await Session(ctx, reader, writer, implicit_tls=implicit).run()

        listeners.append(
            await listen(
                server, name, port_setting, run, limits=limits, refuse=refuse,
                implicit_tls=implicit, log=log,
            )
        )  # fmt: skip
    last = listeners[-1]
    close_last = last.close

    async def close() -> None:
        await close_last()
        ctx.close()

    last.close = close
    return listeners
