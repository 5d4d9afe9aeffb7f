"""CONDSTORE and QRESYNC (RFC 7162) in the IMAP session: what the session
adds to SELECT, FETCH, STORE, SEARCH and its change reports once they are on.

CONDSTORE is on for the rest of the connection after ``ENABLE CONDSTORE``
(or QRESYNC) or a CONDSTORE-enabling command (§3.1: ``SELECT/EXAMINE ...
(CONDSTORE)``, FETCH of MODSEQ or with CHANGEDSINCE, SEARCH MODSEQ, STORE
UNCHANGEDSINCE, STATUS HIGHESTMODSEQ); when such a command turns it on in a
selected mailbox, ``* OK [HIGHESTMODSEQ n]`` comes first (§3.1.2); the
tagged OK of EXPUNGE, UID EXPUNGE and CLOSE carries the new HIGHESTMODSEQ
(which KIMAP and other QRESYNC clients keep). From then
on every FETCH response carrying FLAGS that the client did not ask for as
such (STORE, implicit \\Seen, other sessions' changes) carries UID and
MODSEQ. With QRESYNC, expunges are ``* VANISHED uid-set`` (§3.2.10).

Keywords: a keyword is only ever shown in FETCH FLAGS after ``* FLAGS`` and
``* OK [PERMANENTFLAGS ...]`` listed it (RFC 3501 §7.2.6, RFC 9051 §7.3.5):
:func:`announce_keywords` is called with the flags of every FETCH response
before it is written.

The data comes from the service (``services/mailaccess/condstore.py``);
this module only writes responses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from waypost.protocols.imap import wire
from waypost.services.mailaccess.condstore import reported

if TYPE_CHECKING:
    from waypost.protocols.imap.session import Selected, Session

CONDSTORE = "CONDSTORE"
QRESYNC = "QRESYNC"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def highestmodseq_line(modseq: int) -> bytes:
    return b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence\r\n" % reported(modseq)


def turn_on(session: Session) -> None:
    """A CONDSTORE-enabling command (§3.1): on for the rest of the
    connection; in a selected mailbox, say its HIGHESTMODSEQ first (§3.1.2)."""
    if CONDSTORE in session.enabled:
        return
    session.enabled.add(CONDSTORE)
    if session.selected is not None:
        session.send(highestmodseq_line(session.selected.modseq))


def announce_keywords(session: Session, keywords: Iterable[str]) -> None:
    """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` before a FETCH shows a
    keyword the client has not been told of (RFC 3501 §7.2.6)."""
    sel = session.selected
    if sel is None:
        return
    new = {k for k in keywords if k[:1] != "\\"} - sel.keywords
    if not new:
        return
    sel.keywords |= new
    session.send(b"* FLAGS " + wire.flag_list([*SYSTEM_FLAGS, *sorted(sel.keywords)]) + b"\r\n")
    session.send(
        b"* OK [PERMANENTFLAGS "
        + wire.flag_list(sel.permanent_flags())
        + b"] Flags the user may change\r\n"
    )


def flags_line(
    seq: int, uid: int, flags: Sequence[str], modseq: int | None, *, silent: bool = False
) -> bytes:
    """``* n FETCH (UID u [MODSEQ (m)] FLAGS (...))`` of a change; ``modseq``
    None when CONDSTORE is off; ``silent`` (STORE .SILENT under CONDSTORE,
    §3.1.3): UID and MODSEQ only."""
    items = b"UID %d" % uid
    if modseq is not None:
        items += b" MODSEQ (%d)" % modseq
    if not silent:
        items += b" FLAGS " + wire.flag_list(flags)
    return b"* %d FETCH (%s)\r\n" % (seq, items)


def expunged_lines(uids: Sequence[int], positions: Sequence[int], qresync: bool) -> bytes:
    """How a session reports expunged messages of its view (``positions``,
    0-based, ascending): ``* n EXPUNGE`` each, or with QRESYNC one
    ``* VANISHED uid-set`` (§3.2.10)."""
    if qresync:
        return wire.vanished_line(uids[i] for i in positions)
    return b"".join(b"* %d EXPUNGE\r\n" % (pos + 1 - n) for n, pos in enumerate(positions))


async def closing_modseq(session: Session, sel: Selected, expunged: bool) -> int:
    """The HIGHESTMODSEQ for CLOSE's tagged OK (what KIMAP and others cache
    for the next QRESYNC): the MODSEQ of its own expunge when nothing else
    happened since the view's last look, else the view's own (lower, so the
    next resynchronization asks for a little more, never for too little)."""
    if expunged:
        ctx = session.ctx
        now = await ctx.run(ctx.mail.current_modseq, sel.opened)
        if now == sel.modseq + 1:
            return reported(now)
    return reported(sel.modseq)


def uses_modseq(key: object) -> bool:
    """The SEARCH program has a MODSEQ key (§3.1.5)."""
    op = getattr(key, "op", None)
    if op == "MODSEQ":
        return True
    return any(uses_modseq(k) for k in getattr(key, "args", ()) if hasattr(k, "op"))


async def resync(session: Session, qresync: wire.Qresync) -> None:
    """The QRESYNC part of SELECT (§3.2.5): for a matching UIDVALIDITY, the
    known UIDs expunged since the client's MODSEQ as ``* VANISHED
    (EARLIER)``, then the messages changed since, with flags and MODSEQ.
    (The sequence match data need not be used: the expunge log is complete.)"""
    sel = session.selected
    if sel is None or qresync.uidvalidity != sel.uidvalidity:
        return
    ctx = session.ctx
    found = await ctx.run(ctx.mail.resync, sel.opened, sel.uids, qresync.modseq, qresync.known_uids)
    session.send(wire.vanished_line(found.vanished, earlier=True))
    announce_keywords(session, (f for c in found.changed for f in c.flags))
    recent = sel.recent_test()
    for c in found.changed:
        flags = (*c.flags, "\\Recent") if recent(c.uid) else c.flags
        session.send(flags_line(c.seq, c.uid, flags, c.modseq))
