"""CONDSTORE and QRESYNC (RFC 7162) on the mail-access service: what changed
since a MODSEQ, as data, for the IMAP session to format.

Per-message MODSEQs live in the process's :class:`MailboxIndex` (``modseqs``
beside ``uids``), so ``FETCH ... (CHANGEDSINCE n)``, ``FETCH MODSEQ`` and the
FETCH part of ``SELECT ... (QRESYNC ...)`` read no message row. Expunged
UIDs come from the store's expunge log (``mail_changes_since``), which keeps
every expunged UID with the MODSEQ of its removal and is never trimmed, so
``VANISHED (EARLIER)`` is exact. Were it ever trimmed, the answer would have
to be every UID below UIDNEXT not in the mailbox (a superset, which RFC 7162
§3.2.5.2 allows); that is written down here so that whoever trims does so.

A freshly created mailbox has HIGHESTMODSEQ 0 in the store, which RFC 7162's
``mod-sequence-value`` does not allow: it is reported as 1 (as Dovecot
does); the first change of such a mailbox then also has MODSEQ 1, which
matters only for a new message, found by UID anyway.

Blocking (the store): call from a worker thread.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from waypost.services.mailaccess.criteria import SequenceSet
from waypost.services.mailaccess.index import IndexCache, mailbox_key_of
from waypost.services.mailaccess.rights import Opened
from waypost.storage.interface import FlagUpdates

if TYPE_CHECKING:
    from waypost.services.mailaccess.service import MessageData

SEEN = "\\Seen"


def reported(modseq: int) -> int:
    """A MODSEQ as RFC 7162 lets it be written (never 0)."""
    return max(modseq, 1)


@dataclass(frozen=True, slots=True)
class Changed:
    """A message of the view whose flags changed since a MODSEQ."""

    seq: int
    uid: int
    modseq: int
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """What ``SELECT ... (QRESYNC ...)`` reports (RFC 7162 §3.2.5)."""

    vanished: list[int]
    changed: list[Changed]


class CondstoreAccess:
    """The RFC 7162 part of :class:`~waypost.services.mailaccess.service.MailAccess`."""

    _store: Any
    indexes: IndexCache

    def changed_pairs(
        self, opened: Opened, pairs: Sequence[tuple[int, int]], since: int
    ) -> list[tuple[int, int]]:
        """The (message number, UID) ``pairs`` whose MODSEQ is above ``since``
        (the CHANGEDSINCE modifier, RFC 7162 §3.1.4.1), from the index."""
        ref = opened.target.ref
        with self.indexes.current(mailbox_key_of(ref), ref) as index:
            uids, modseqs, count = index.uids, index.modseqs, len(index.uids)
            out = []
            for seq, uid in pairs:
                # the view and the index mostly agree: no search then
                i = seq - 1 if seq <= count and uids[seq - 1] == uid else index.position(uid)
                if i is not None and modseqs[i] > since:
                    out.append((seq, uid))
            return out

    def highest_modseq(self, opened: Opened, uids: Sequence[int]) -> int:
        """The highest MODSEQ among ``uids`` (``(MODSEQ n)`` of SEARCH, §3.1.5)."""
        ref = opened.target.ref
        with self.indexes.current(mailbox_key_of(ref), ref) as index:
            found = (index.position(uid) for uid in uids)
            return reported(max((index.modseqs[i] for i in found if i is not None), default=0))

    def current_modseq(self, opened: Opened) -> int:
        """The mailbox's HIGHESTMODSEQ in the store now."""
        return int(self._store.mail_mailbox_state(*opened.target.ref).highestmodseq)

    def vanished_since(
        self, opened: Opened, since: int, within: SequenceSet | None, largest: int
    ) -> list[int]:
        """UIDs expunged after ``since``, among ``within`` (``*`` is ``largest``)."""
        changes = self._store.mail_changes_since(*opened.target.ref, since, uidnext=0)
        if within is None:
            return list(changes.expunged)
        contains = within.matcher(largest)
        return [uid for uid in changes.expunged if contains(uid)]

    def resync(
        self, opened: Opened, uids: array[int], since: int, known: SequenceSet | None
    ) -> Resync:
        """For a view of ``uids`` just selected: the known UIDs expunged after
        ``since`` (none of them in the view) and the view's messages changed
        after it, flags and MODSEQ from the index. FETCH reports every changed
        message of the view (a superset of the known ones does no harm);
        VANISHED only known UIDs, as §3.2.5 asks."""
        largest = uids[-1] if uids else 0
        gone = self.vanished_since(opened, since, known, max(largest, 1))
        view = set(uids)
        vanished = [uid for uid in gone if uid not in view]
        ref = opened.target.ref
        changed: list[Changed] = []
        with self.indexes.current(mailbox_key_of(ref), ref) as index:
            for seq, uid in enumerate(uids, 1):
                i = index.position(uid)
                if i is not None and index.modseqs[i] > since:
                    changed.append(Changed(seq, uid, index.modseqs[i], index.flags[i]))
        return Resync(vanished, changed)

    def set_seen(self, opened: Opened, seen: Sequence[MessageData]) -> FlagUpdates:
        """Set \\Seen on messages a FETCH read, when the user holds ``s``:
        each one's UID, MODSEQ and flags afterwards (RFC 3501 §6.4.5)."""
        if not seen or not opened.can("s"):
            return FlagUpdates()
        result: FlagUpdates = self._store.mail_set_flags(
            *opened.target.ref, [m.uid for m in seen], [SEEN], "add",
            uidvalidity=opened.uidvalidity,
        )
        return result
