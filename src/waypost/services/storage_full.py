"""A full data directory, as the services handle it (issue 13, point 6).

Invariants: a write refused for lack of space (:class:`StorageFull`, from
``ENOSPC`` or ``SQLITE_FULL``) changes nothing, so nothing acknowledged is
lost and nothing is stored twice; every protocol answers it as a temporary
failure and the same request succeeds once space returns, without a restart.

Choices (where the RFCs leave one):

* SMTP refuses at RCPT, before the client sends the body, when less than
  ``StorageMinFree`` plus the declared ``SIZE`` is free, and at the end of
  DATA when a write fails anyway: ``452 4.3.1 Insufficient system storage``
  (RFC 5321 §4.2.3/§4.5.3.1.10, RFC 3463 §3.5), Postfix's reply and text.
  Postfix checks at MAIL with ``1.5 × message_size_limit`` free; Waypost
  needs only the declared size over a small floor (1M by default), so a
  small disk still takes small mail.
* IMAP APPEND answers ``NO [OVERQUOTA]``, as Dovecot does for ``ENOSPC``
  (RFC 5530 has no "disk full" code; ``SERVERBUG`` would call it a bug).
* Delivery defers a recipient it cannot store without counting an attempt,
  and pauses for ``StorageFullRetry`` seconds instead of retrying every tick.
* A server started on a disk that is already full cannot open its database
  (SQLite must create its ``-shm`` and ``-wal`` files): it stops with one
  line saying the file system is full. A running server keeps running.
* The log gets one warning when the disk fills, then one line a minute with
  the number of refused writes, and one line when space returns: never a
  traceback per refused message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from waypost.storage.interface import StorageFull  # protocols import it from here

SMTP_REPLY = (452, "4.3.1", "Insufficient system storage")
"""RFC 3463 §3.5 X.3.1 "Mail system full", with Postfix's text."""

NOTICE_EVERY = 60.0  # seconds between "still full" lines


class FullNotice:
    """The log of one full-disk episode: first refusal, a count per minute, the end."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic,
                 every: float = NOTICE_EVERY) -> None:
        self.log = log
        self.clock = clock
        self.every = every
        self._since: float | None = None  # when the episode started
        self._last = 0.0
        self._refused = 0  # since the last line

    @property
    def full(self) -> bool:
        """Whether the last write that reported was refused for lack of space."""
        return self._since is not None

    def refused(self, what: str, exc: object) -> None:
        """A write was refused (or not tried) for lack of space."""
        now = self.clock()
        if self._since is None:
            self._since, self._last, self._refused = now, now, 0
            self.log.warning("the data directory is full (%s: %s): mail is deferred "
                             "until space returns", what, exc)
            return
        self._refused += 1
        if now - self._last >= self.every:
            self.log.warning("the data directory is still full: %d more write(s) refused "
                             "in %.0f s", self._refused, now - self._last)
            self._last, self._refused = now, 0

    def cleared(self) -> None:
        """A write succeeded: the episode, if any, is over."""
        if self._since is not None:
            self.log.info("the data directory has space again after %.0f s",
                             self.clock() - self._since)
            self._since = None


__all__ = ["NOTICE_EVERY", "SMTP_REPLY", "FullNotice", "StorageFull"]
