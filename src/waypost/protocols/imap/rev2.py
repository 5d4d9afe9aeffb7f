"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, and mailbox names that name nothing.

A session turns IMAP4rev2 on with ``ENABLE IMAP4rev2`` (RFC 9051 §6.3.1);
until then it is an IMAP4rev1 session and sees no change. What differs in a
rev2 session (``Session.rev2``), per RFC 9051 Appendix E:

* mailbox names are UTF-8 on the wire (§5.1), as after ``ENABLE UTF8=ACCEPT``
  (RFC 6855 §3): ``wire.parse_command(..., utf8=True)`` and the serialisers'
  ``utf8=True``;
* no ``\\Recent`` flag and no ``* n RECENT`` (Appendix E); ``STATUS ...
  (RECENT)`` and ``LIST ... RETURN (STATUS (RECENT))`` are BAD (the item is
  gone from the grammar, §6.3.11); a rev2 session claims no ``\\Recent``
  messages when polling, so rev1 sessions still see them as recent (SELECT
  still claims them: the service decides that for every session alike);
* SELECT/EXAMINE send a ``* LIST`` response for the mailbox and no ``[UNSEEN
  n]`` (§6.3.2); with ``OLDNAME`` when the name came in another Unicode
  normalisation form, as CREATE of such a name does in any UTF-8 session
  (§6.3.4; ``wire.Denormalized``);
* the response code ``HASCHILDREN`` (§7.1) on DELETE of a ``\\Noselect`` name
  that still has children; rev1 sessions get ``CANNOT`` as before
  (:func:`response_code`);
* [waypost] LSUB, deprecated by RFC 9051 (Appendix E: clients should use
  LIST (SUBSCRIBED)), is still answered, as are CHECK and the RFC822.* FETCH
  items: clients written for Dovecot and CommuniGate still send them.

UID EXPUNGE, NAMESPACE, UNSELECT, ENABLE, IDLE, SASL-IR, MOVE, SPECIAL-USE and
the RFC 5530 codes (``NONEXISTENT``, ``ALREADYEXISTS``, ...) are the same in
both. ``LITERAL-`` is satisfied by ``LITERAL+`` (a superset, RFC 7888 §5).
UNAUTHENTICATE (RFC 8437) is optional in rev2 and not offered.

**Advertisement.** ``IMAP4rev2`` is advertised, and ``ENABLE IMAP4rev2``
honoured, only when every capability in :data:`REV2_REQUIRES` is advertised
(:func:`advertise`), so the server never claims rev2 while a folded-in
extension is missing.

**Invalid names.** A name that is a valid astring but cannot name a mailbox
(invalid modified UTF-7; see ``wire.InvalidName``) is refused here, before
the handler and the service: ``NO [NONEXISTENT]`` where an existing mailbox is
meant, ``NO [CANNOT]`` where a new name is given (CREATE, RENAME's target,
SUBSCRIBE), and LIST/LSUB with such a reference or pattern match nothing
(tagged OK, no untagged LIST). SELECT/EXAMINE check the name themselves
after deselecting, so a failing one deselects (RFC 3501 §6.3.1) as any
failing SELECT does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from waypost.protocols.imap import wire
from waypost.services.mailaccess.errors import InvalidMailboxName, NoSuchMailbox

REV2_REQUIRES = (
    # RFC 9051 Appendix E item 2: extensions folded into IMAP4rev2
    "NAMESPACE", "UNSELECT", "UIDPLUS", "ESEARCH", "SEARCHRES", "ENABLE", "IDLE", "SASL-IR",
    "LIST-EXTENDED", "LIST-STATUS", "MOVE", "LITERAL-", "BINARY", "SPECIAL-USE",
    # E item 3: STATUS SIZE (RFC 8438); E item 1, §5.1: UTF-8 mailbox names (RFC 6855)
    "STATUS=SIZE", "UTF8=ACCEPT",
)  # fmt: skip
"""Capabilities whose behaviour RFC 9051 makes part of IMAP4rev2 (Appendix E)."""

SUPERSETS = {"LITERAL-": "LITERAL+"}
"""A capability that is satisfied by another one advertised (RFC 7888 §5)."""

def missing(capabilities: str) -> list[str]:
    """What :data:`REV2_REQUIRES` lacks in a CAPABILITY string."""
    have = set(capabilities.upper().split())
    return [cap for cap in REV2_REQUIRES if cap not in have and SUPERSETS.get(cap, cap) not in have]


def advertise(capabilities: str) -> str:
    """``capabilities`` with ``IMAP4rev2`` added when nothing is :func:`missing`."""
    if missing(capabilities):
        return capabilities
    return capabilities + " IMAP4rev2"


def response_code(code: str | None, rev2: bool) -> str | None:
    """The code a session sends: ``HASCHILDREN`` exists only in IMAP4rev2
    (RFC 9051 §7.1); a rev1 client gets ``CANNOT``, as before."""
    if code == "HASCHILDREN" and not rev2:
        return "CANNOT"
    return code


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command answered before its handler runs: ``tag status [code] text``."""

    status: str
    text: str
    code: str | None = None


NEW_NAME_FIELDS = {("CREATE", "mailbox"), ("RENAME", "new"), ("SUBSCRIBE", "mailbox")}
"""(command, field) where the name given is one to create: CANNOT, not NONEXISTENT."""


def _invalid(value: object) -> wire.InvalidName | None:
    if isinstance(value, wire.InvalidName):
        return value
    if isinstance(value, tuple):
        return next((v for v in value if isinstance(v, wire.InvalidName)), None)
    return None


CHECKED_BY_HANDLER = frozenset({"SELECT", "EXAMINE"})
"""They deselect first, also when they fail (RFC 3501 §6.3.1), then call
:func:`check_name` themselves."""


def check_name(name: str, *, new: bool = False) -> None:
    """Refuse an :class:`~waypost.protocols.imap.wire.InvalidName` as the
    service refuses a name: :class:`NoSuchMailbox` (``NONEXISTENT``), or for a
    ``new`` name :class:`InvalidMailboxName` (``CANNOT``)."""
    if isinstance(name, wire.InvalidName):
        shown = str(name).encode("ascii", "backslashreplace").decode()  # resp-text is 7-bit
        text = f"Invalid mailbox name {shown!r}: {name.reason}"
        raise InvalidMailboxName(text) if new else NoSuchMailbox(text)


def refusal(command: wire.Command, rev2: bool) -> Refusal | None:
    """The answer to a command that cannot reach its handler: what IMAP4rev2
    removed (BAD), a LIST of a name that names nothing (OK, nothing listed);
    any other such name raises as :func:`check_name` says."""
    args = command.args
    if dataclasses.is_dataclass(args) and command.name not in CHECKED_BY_HANDLER:
        for field in dataclasses.fields(args):
            bad = _invalid(getattr(args, field.name))
            if bad is None:
                continue
            if command.name in ("LIST", "LSUB"):
                return Refusal("OK", f"{command.name} completed (no mailbox has such a name)")
            check_name(bad, new=(command.name, field.name) in NEW_NAME_FIELDS)
    if (
        rev2
        and command.name in ("STATUS", "LIST")
        and "RECENT" in (args.items if command.name == "STATUS" else args.status)
    ):
        return Refusal("BAD", "RECENT is not a status item in IMAP4rev2 (RFC 9051 §6.3.11)")
    return None
