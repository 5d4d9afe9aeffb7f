"""Names of the processes that hold queue claims and locks in the store.

A holder is ``host:pid:random``: host and pid tell the administrator
(``waypost queue``) who holds what; the random part keeps a restarted
process with a reused pid from being taken for its predecessor.

:func:`gone` lets a starting process free at once what a killed process of
the same host left behind (a ``kill -9`` and restart, a worker the
supervisor restarted) instead of waiting out its lease. It answers only for
this host, and only "gone" when the pid does not run (or is this process,
under another name): a pid reused by an unrelated process counts as alive,
so the lease is waited out, never cut short for a live holder. Holders of
other nodes always count as alive: their leases run out by themselves.
"""

from __future__ import annotations

import os
import secrets
import socket


def holder_id() -> str:
    """A new name for this process as a holder (one per runner or lock table)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def gone(holder: str, mine: frozenset[str] = frozenset()) -> bool:
    """Whether ``holder`` was a process of this host that no longer runs;
    ``mine``: this process's own current holder names."""
    host, _, rest = holder.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or holder in mine:
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True  # this pid, another name: a predecessor (a container's pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False
