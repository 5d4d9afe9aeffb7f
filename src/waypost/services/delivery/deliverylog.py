"""One INFO line per delivery outcome, as Postfix's ``smtp``/``local`` agents log.

An operator must be able to answer "did my message to X leave, and where
to" from the log alone (issue 13, point 5). Every outcome the delivery
runner applies -- local or remote, sent, deferred, bounced, or left in a
held queue -- becomes one line on the ``waypost.delivery.log`` logger::

    QUEUEID: to=<rcpt>, orig_to=<as written>, route=SMTP(host), relay=host[addr]:port,
    delay=0.42, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1)

The same fields ride on the record as ``record.fields`` (the JSON log
format, ``waypost serve --log-format json``, makes them keys), and the
same status and reply become the recipient's history row
(:class:`~waypost.storage.interface.QueueAttempt`, ``waypost queue show``).

Choices, and why:

* ``to`` is the address the mail goes to after routing (the account for
  LOCAL), ``orig_to`` the RCPT TO address; the text line shows ``orig_to``
  only when it differs, as Postfix does; JSON always has both.
* ``relay`` is ``host[address]:port`` for SMTP (``none`` when no host was
  reached), ``local`` for LOCAL, the module's name otherwise (Postfix:
  ``relay=local``, ``relay=none``).
* ``delay`` is seconds since the message entered the queue (Postfix's
  ``delay``), two decimals.
* Only envelope data and replies are logged: never a body, header or
  password.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from waypost.services.delivery.outbound import Outcome
from waypost.services.message import one_line
from waypost.storage.interface import QueueAttempt, QueuedMessage, QueuedRecipient

log = logging.getLogger("waypost.delivery.log")

SENT, DEFERRED, BOUNCED, HELD = "sent", "deferred", "bounced", "held"
_STATUS = {"delivered": SENT, "deferred": DEFERRED, "failed": BOUNCED, "held": HELD}


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    queue_id: str
    to: str
    orig_to: str
    route: str
    relay: str
    delay: float
    dsn: str
    status: str
    reply: str

    def text(self) -> str:
        parts = [f"to=<{self.to}>"]
        if self.orig_to.lower() != self.to.lower():
            parts.append(f"orig_to=<{self.orig_to}>")
        parts += [f"route={self.route}", f"relay={self.relay}", f"delay={self.delay:.2f}"]
        if self.dsn:
            parts.append(f"dsn={self.dsn}")
        parts.append(f"status={self.status} ({self.reply})")
        return f"{self.queue_id}: " + ", ".join(parts)

    def attempt(self, at: float) -> QueueAttempt:
        """The recipient's history row for this outcome."""
        return QueueAttempt(at, self.status, self.reply, self.relay)


def final_address(r: QueuedRecipient) -> str:
    """Where the recipient goes after routing (the account, for LOCAL)."""
    if r.module == "LOCAL":
        return f"{r.queue}#{r.mailbox}" if r.mailbox else r.queue
    return r.route_address or r.address


def reply_text(o: Outcome) -> str:
    return one_line(" ".join(str(p) for p in (o.code or "", o.enhanced, o.text) if p))


def record(m: QueuedMessage, r: QueuedRecipient, o: Outcome, now: float | None = None
           ) -> DeliveryRecord:
    """The log record of outcome ``o`` (status ``delivered``/``deferred``/
    ``failed``/``held``) of recipient ``r`` of message ``m``."""
    now = time.time() if now is None else now
    if r.module == "LOCAL":
        relay = "local"
    elif r.module == "SMTP":
        relay = o.relay or o.remote or "none"
    else:
        relay = r.module.lower()
    return DeliveryRecord(
        queue_id=m.id, to=final_address(r), orig_to=r.address,
        route=f"{r.module}({r.queue})", relay=relay, delay=max(now - m.created, 0.0),
        dsn=o.enhanced, status=_STATUS.get(o.status, o.status), reply=reply_text(o),
    )


def emit(rec: DeliveryRecord) -> None:
    fields = asdict(rec)
    fields["delay"] = round(rec.delay, 2)
    log.info("%s", rec.text(), extra={"fields": fields})


def logged(m: QueuedMessage, r: QueuedRecipient, o: Outcome) -> QueueAttempt:
    """Log outcome ``o`` and return its history row."""
    now = time.time()
    rec = record(m, r, o, now)
    emit(rec)
    return rec.attempt(now)
