"""Writing to a client that may have hung up, for every line protocol.

uvloop refuses a write on a transport that is already closed with
``RuntimeError`` ("unable to perform operation on <TCPTransport
closed=True>; the handler is closed"); asyncio's transports drop the data
and, after a few such writes, log a warning. A session that writes a long
reply in pieces and awaits store work between them (IMAP FETCH, POP3 RETR)
meets a closed transport whenever the client hangs up during that work, and
its catch-all for storage trouble then logged a traceback (issue 13).
:func:`write` turns a closed transport into :class:`ClientGone`, a
``ConnectionError``, which every session already lets through its command
handlers and ends on quietly (one DEBUG line).

Invariant: sessions write to their client only through :func:`write`, so
"the client went away" is one exception everywhere, whatever the event loop.
"""

from __future__ import annotations

import asyncio


class ClientGone(ConnectionResetError):
    """The client closed the connection (or it broke) before our reply was out."""


def write(writer: asyncio.StreamWriter, data: bytes) -> None:
    """``writer.write(data)``, or :class:`ClientGone` if the transport is closing.

    The check and the write run without an await between them, so the
    transport cannot close in between (it closes only in loop callbacks)."""
    if writer.transport.is_closing():
        raise ClientGone("the client closed the connection")
    writer.write(data)
