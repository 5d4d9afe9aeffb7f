"""A real Services container over a fresh store (a SQLite data directory or
a PostgreSQL URL: ``store_location`` in tests/conftest.py), populated with the
small world the queue, delivery, mailstore, rules and CLI-queue tests share.

The world: main domain ``main.dom`` with accounts alice and dd-customer;
``secondary.dom`` with carol; ``client.dom`` and ``other.dom`` routed by the
Router table (a dd-customer local route and a domain-level reroute to carol);
``bounced.dom`` and ``discarded.dom`` with their MailToUnknown settings; and
group ``team`` (alice plus a remote member). Tests may add to it, never rely
on anything else being there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from waypost.services.container import Services
from waypost.services.message import Recipient, Submission
from waypost.storage.open import open_store


def open_at(location: Path | str, *, create: bool = False) -> Services:
    """Services over the store at ``location``: a data directory or a
    PostgreSQL URL (``open_services`` takes a directory only)."""
    return Services(open_store(location, create=create))


def open_world(data: Path | str) -> Services:
    """The shared world in ``data`` (created); the caller closes it."""
    services = open_at(data, create=True)
    d = services.directory
    d.init_server("main.dom")
    d.create_account("alice")
    d.create_account("dd-customer")
    d.create_domain("secondary.dom")
    d.create_account("carol@secondary.dom")
    d.create_domain("client.dom")
    d.create_domain("other.dom")
    d.create_domain("bounced.dom", {"MailToUnknown": "Accepted and Bounced"})
    d.create_domain("discarded.dom", {"MailToUnknown": "Discarded"})
    d.create_group("team", ["alice", "bob@remote.example"])
    services.router.set_table(
        "client.dom = dd-customer.local\n"
        "other.dom = carol@secondary.dom.domain\n"
    )
    return services


def routed(svc: Services, *addresses: str, notify: Sequence[str] = ()) -> list[Recipient]:
    """Recipients as the SMTP session builds them at RCPT time."""
    out = []
    for address in addresses:
        result = svc.router.route(address, "mail", trusted=True)
        assert result.routes, (address, result.error)
        out += [Recipient(address, r, tuple(notify)) for r in result.routes]
    return out


def body(subject: str = "hello", *, extra: bytes = b"") -> bytes:
    """A small message as received from a remote client: Received on top, CRLF lines."""
    return (b"Received: from client ([192.0.2.1])\r\n\tby main.dom (Waypost); now\r\n"
            b"From: Bob <bob@remote.example>\r\nTo: alice@main.dom\r\n"
            + f"Subject: {subject}\r\n".encode() + extra + b"\r\nHi there.\r\n")


def submission(svc: Services, *addresses: str, mail_from: str = "bob@remote.example",
               data: bytes | None = None, **params: str) -> Submission:
    """What the SMTP session hands the queue after DATA from client 192.0.2.1."""
    return Submission(mail_from, routed(svc, *addresses), data or body(), params=dict(params),
                      client_ip="192.0.2.1", helo="client")
