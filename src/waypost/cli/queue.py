"""``waypost queue list|show|flush|release|delete``: the message queue.

The CLI works on the store directly (it is another process than the
server); the running server's delivery loop polls the database every
second, so a flush or release takes effect at once. "claimed by" names the
delivery process (host:pid:random) holding a recipient and until when its
lease runs (issue 15); "expired" means that process stopped renewing it
(died): another takes the recipient on its next claim.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import click

from waypost.cli.common import data_option, services
from waypost.cli.output import keyvalues, line, table
from waypost.services.queue import (
    QueuedMessage,
    QueuedRecipient,
    QueuePolicy,
    flush_queue,
    queue_label,
    recipient_state,
    release_queue,
)


@click.group("queue")
def queue_group() -> None:
    """Messages waiting for delivery: one queue per target, MODULE(queue)."""


@queue_group.command("list")
@data_option
def list_() -> None:
    """Waiting messages, one line per message and queue (held, deferred, queued),
    with the delivery process that has claimed them and until when."""
    with services() as svc:
        policy = QueuePolicy.from_settings(svc.settings())
        messages = svc.store.queue_list()
    table(["id", "from", "recipients", "queue", "state", "attempts", "claimed by",
           "last error"], _rows(messages, policy), empty="the queue is empty")


@queue_group.command("show")
@data_option
@click.argument("message_id", metavar="ID")
def show(message_id: str) -> None:
    """One message: envelope, client, every recipient's state and its history
    (each attempt, or look at a held queue: time, status, relay, reply)."""
    with services() as svc:
        policy = QueuePolicy.from_settings(svc.settings())
        m = svc.store.queue_get(message_id)
    keyvalues([
        ("id", m.id),
        ("from", f"<{m.mail_from}>"),
        ("created", _when(m.created)),
        ("size", m.size),
        ("client", f"{m.helo} [{m.client_ip}]" if m.client_ip else m.helo or None),
        ("authenticated", m.auth_user),
        ("protocol", m.protocol),
        ("parameters", {k: v for k, v in m.params.items() if k != "QueueID"} or None),
        ("body", m.blob),
    ])
    line()
    table(["recipient", "route", "state", "attempts", "claimed by", "last error"],
          [(r.address, _route(r), _state(r, policy), r.attempts, _claim(r),
            r.last_error or None) for r in m.recipients])
    history = [(r.address, _when(h.at), h.status, h.relay or None, h.reply)
               for r in m.recipients for h in r.history]
    if history:
        line()
        table(["recipient", "time", "status", "relay", "reply"], history)


@queue_group.command("flush")
@data_option
@click.argument("queue", required=False)
def flush(queue: str | None) -> None:
    """Retry deferred mail now (in QUEUE, e.g. SMTP(example.com), or everywhere).

    Held queues stay held; use `waypost queue release`.
    """
    with services() as svc:
        count = flush_queue(svc.store, queue)
    line(f"{count} recipient(s) scheduled for delivery now")


@queue_group.command("release")
@data_option
@click.argument("queue")
def release(queue: str) -> None:
    """One delivery attempt now for QUEUE, even if held (like ETRN).

    QUEUE is a target host (example.com), MODULE(queue), or @domain for a
    domain and its subdomains. Mail that fails again returns to the hold.
    """
    with services() as svc:
        count = release_queue(svc.store, queue)
    line(f"{count} recipient(s) released" if count else f"no mail waiting in {queue}")


@queue_group.command("delete")
@data_option
@click.argument("message_id", metavar="ID")
def delete(message_id: str) -> None:
    """Remove a message from the queue without delivering or bouncing it."""
    with services() as svc:
        svc.store.queue_delete(message_id)
    line(f"message {message_id} deleted")


def _rows(messages: Iterable[QueuedMessage], policy: QueuePolicy) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for m in messages:
        groups: dict[tuple[str, str, str | None], list[QueuedRecipient]] = {}
        for r in m.recipients:
            key = (queue_label(r.module, r.queue), _state(r, policy), _claim(r))
            groups.setdefault(key, []).append(r)
        for (label, state, claim), rcpts in groups.items():
            error = next((r.last_error for r in rcpts if r.last_error), None)
            rows.append((m.id, f"<{m.mail_from}>", sorted({r.address for r in rcpts}), label,
                         state, max(r.attempts for r in rcpts), claim, error))
    return rows


def _state(r: QueuedRecipient, policy: QueuePolicy) -> str:
    state = recipient_state(r, policy)
    if state == "deferred" or (state == "queued" and r.next_attempt > time.time()):
        return f"{state} until {_when(r.next_attempt)}"
    return state


def _claim(r: QueuedRecipient) -> str | None:
    if r.owner is None:
        return None
    expired = " (expired)" if r.lease_until <= time.time() else ""
    return f"{r.owner} until {_when(r.lease_until)}{expired}"


def _route(r: QueuedRecipient) -> str:
    suffix = f"#{r.mailbox}" if r.mailbox else r.route_address
    return f"{r.module}({r.queue}){suffix}"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


COMMANDS = [queue_group]
