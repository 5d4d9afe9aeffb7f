"""A message as the receiving side hands it to the queue.

The SMTP session (or a rule, a bounce, a forwarder) builds a
:class:`Submission`: the envelope, every recipient with the route the
Router gave it, and the message bytes with our trace header already on top.
The queue makes it durable; delivery reads only the queue.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from waypost.services.router.route import Route


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` as one reply or log line: every run of white space (line
    breaks included) becomes one space; at most ``limit`` characters
    (RFC 5321 §4.5.3.1.5: a reply line has at most 512 octets)."""
    return " ".join(text.split())[:limit]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One destination of one envelope recipient.

    ``address`` is the recipient as the client wrote it in RCPT TO (it is
    what a DSN reports); a group yields several recipients with the same
    ``address`` and different routes. ``notify``/``orcpt`` are the RFC 3461
    parameters, kept with the message.
    """

    address: str
    route: Route
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(slots=True)
class Submission:
    mail_from: str  # "" for the null reverse-path
    recipients: list[Recipient]
    body: bytes
    # RFC 1870/6152/6531/3461 parameters of MAIL FROM: SIZE, BODY, SMTPUTF8, RET, ENVID
    params: dict[str, str] = field(default_factory=dict)
    client_ip: str = ""
    helo: str = ""
    auth_user: str | None = None
    trusted: bool = False
    protocol: str = "ESMTP"


def new_message_id() -> str:
    """Sortable, unique queue id: time in microseconds plus random bits."""
    return f"{time.time_ns() // 1000:x}{os.urandom(4).hex()}".upper()
