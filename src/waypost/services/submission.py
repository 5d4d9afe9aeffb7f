"""What an authenticated submission needs, whichever protocol it came by:
SMTP AUTH (``protocols/smtp/session.py``, one RCPT at a time) and the
WebUser's Send (issue 10 point 6, a whole message at once).

Both route every recipient as a trusted client's RCPT
(:meth:`Reception.route_recipient` with ``trusted=True``), put our trace
header on top (:func:`received_header`, RFC 5321 §4.4), and hand the
:class:`Submission` to :meth:`Reception.submit`, so server-wide rules,
routing and the queue apply the same way to both.

Invariants:

* nothing is queued unless every recipient was routed
  (:class:`RecipientRefused` names the first refused one) and the message
  is within ``MaxMessageSize`` and ``MaxRecipients``
  (:class:`SubmissionRefused`);
* :func:`submit_message` returns only after the queue made the message
  durable (or the rules discarded it); a ``Reject with`` rule raises
  :class:`~waypost.services.rules.enqueue.RuleRejected` and nothing is queued.

Choices [waypost]: the web's trace header says ``with HTTPA`` (HTTP,
authenticated), in the style of RFC 3848's ``ESMTPA``; its ``from`` clause
is the browser's address in brackets, as there is no HELO name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email.utils import formatdate

from waypost.services.message import Recipient, Submission, new_message_id
from waypost.services.reception import Reception
from waypost.services.router.route import RouteResult

WEB_PROTOCOL = "HTTPA"
"""The ``with`` keyword of a message sent from a WebUser session [waypost]."""


class SubmissionRefused(ValueError):
    """The message as a whole cannot be submitted (too big, too many recipients)."""


class RecipientRefused(ValueError):
    """A recipient the Router refuses; ``smtp`` is the reply code pair
    (code, enhanced status) an SMTP client gets for it."""

    def __init__(self, address: str, text: str, smtp: tuple[int, str]) -> None:
        super().__init__(f"<{address}> {text}")
        self.address = address
        self.text = text
        self.smtp = smtp


def routed(address: str, result: RouteResult, notify: Sequence[str] = (),
           orcpt: str | None = None) -> list[Recipient]:
    """The queue recipients of one routed RCPT (a group gives several);
    :class:`RecipientRefused` when the Router refused it."""
    if result.error is not None:
        raise RecipientRefused(address, result.error.text, result.error.smtp)
    return [Recipient(address, route, tuple(notify), orcpt) for route in result.routes]


def received_header(*, helo: str, client_ip: str, hostname: str, protocol: str,
                    queue_id: str, addresses: Iterable[str]) -> bytes:
    """Our ``Received:`` line (RFC 5321 §4.4); ``for`` only with one
    recipient (several would tell each of them about the others)."""
    unique = set(addresses)
    for_clause = f"\r\n\tfor <{next(iter(unique))}>" if len(unique) == 1 else ""
    source = f"{helo} ([{client_ip}])" if helo else f"[{client_ip}]"
    header = (
        f"Received: from {source}\r\n"
        f"\tby {hostname} (Waypost) with {protocol} id {queue_id}"
        f"{for_clause};\r\n\t{formatdate(localtime=False, usegmt=True)}\r\n"
    )
    return header.encode("utf-8", "replace")


async def submit_message(reception: Reception, *, account: str, addresses: Sequence[str],
                         message: bytes, client_ip: str, protocol: str = WEB_PROTOCOL
                         ) -> str:
    """Submit ``message`` (CRLF lines, no trace header yet) from ``account``
    to ``addresses`` as an authenticated client: the queue id.

    Raises :class:`SubmissionRefused`, :class:`RecipientRefused` or
    ``RuleRejected``; nothing is queued then."""
    await reception.refresh()
    settings = reception.settings
    max_size = settings.size("MaxMessageSize")
    if max_size and len(message) > max_size:
        raise SubmissionRefused(
            f"The message is {len(message)} bytes; this server accepts at most {max_size}.")
    if len(addresses) > settings.number("MaxRecipients"):
        raise SubmissionRefused(
            f"Too many recipients: at most {settings.number('MaxRecipients')}.")
    recipients: list[Recipient] = []
    for address in addresses:
        recipients += routed(address, await reception.route_recipient(address, True))
    queue_id = new_message_id()
    trace = received_header(helo="", client_ip=client_ip, hostname=reception.main_domain,
                            protocol=protocol, queue_id=queue_id, addresses=addresses)
    params = {"QueueID": queue_id}
    if not message.isascii():
        params["BODY"] = "8BITMIME"
    submission = Submission(mail_from=account, recipients=recipients, body=trace + message,
                            params=params, client_ip=client_ip, auth_user=account,
                            trusted=True, protocol=protocol)
    return await reception.submit(submission)
