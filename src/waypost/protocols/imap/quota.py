"""IMAP QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA, SETQUOTA and their responses.

The decisions (which root, whose quota the user may read, the units) are the
mail-access service's (``services/mailaccess/quota.py``); this module only
writes ``* QUOTAROOT`` and ``* QUOTA`` (RFC 9208 §5.1, §5.2). Capability
``QUOTA QUOTA=RES-STORAGE``: the one resource is STORAGE. ``SETQUOTA``
answers ``NO [NOPERM]`` (RFC 9208 §4.1.3 allows refusing it): limits are
the administrator's (``waypost account set <account> MaxAccountSize 100M``),
so ``QUOTASET`` is not advertised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from waypost.protocols.imap import wire
from waypost.services.mailaccess.errors import NoPermission
from waypost.services.mailaccess.quota import Quota

if TYPE_CHECKING:  # the handlers are Session methods in all but name
    from waypost.protocols.imap.session import Session

CAPABILITY = "QUOTA QUOTA=RES-STORAGE"


def quota_line(quota: Quota) -> bytes:
    """``* QUOTA "" (STORAGE 10 512)`` (RFC 9208 §5.1; usage and limit in KB)."""
    items = b" ".join(b"%s %d %d" % (name.encode(), used, limit)
                      for name, used, limit in quota.resources)  # fmt: skip
    return b"* QUOTA " + wire.string(quota.root) + b" (" + items + b")\r\n"


def quotaroot_line(mailbox: str, roots: Iterable[str]) -> bytes:
    """``* QUOTAROOT "INBOX" ""`` (RFC 9208 §5.2); no root: unlimited."""
    return b" ".join([b"* QUOTAROOT", wire.mailbox(mailbox), *map(wire.string, roots)]) + b"\r\n"


async def cmd_getquotaroot(session: Session, command: wire.Command) -> str:
    name = command.args.mailbox
    roots, quotas = await session.ctx.run(session.ctx.mail.quota_root, session.account, name)
    session.send(quotaroot_line(name, roots))
    for quota in quotas:
        session.send(quota_line(quota))
    return "GETQUOTAROOT completed"


async def cmd_getquota(session: Session, command: wire.Command) -> str:
    args: wire.QuotaRoot = command.args
    quota = await session.ctx.run(session.ctx.mail.get_quota, session.account, args.root)
    session.send(quota_line(quota))
    return "GETQUOTA completed"


async def cmd_setquota(session: Session, command: wire.Command) -> str:
    """Refused for every root and resource (see the module docstring)."""
    raise NoPermission("a", "Quota limits are set by the administrator (MaxAccountSize)")
