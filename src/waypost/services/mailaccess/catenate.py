"""The messages CATENATE URLs name (RFC 4469 §3, RFC 5092), for a user who may read them.

The IMAP session parses the URL (``protocols/imap/imapurl.py``) and cuts the
section out of what this returns; the decisions are here:

* the host of an absolute URL must be a domain (or domain alias) of this
  server (the session also accepts the address the client connected to),
  and its user part, when there is one, the user itself: nothing is
  fetched on another server's or another user's behalf;
* the mailbox is opened with the ``r`` right (:class:`MailboxAccess`): a
  mailbox the user may not look up is missing, and one the user may see but
  not read is refused, both as :class:`UnresolvableUrl` with no word on
  which (RFC 4469 §3 and §6: no leak about mailboxes the user may not see);
* a ``UIDVALIDITY`` in the URL must be the mailbox's current one, and the UID
  must exist;
* reading through a URL does not set ``\\Seen`` (it is not a FETCH).

Blocking (store and blobs): call from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import waypost.services.mailaccess.errors as errors
from waypost import mime
from waypost.services.mailaccess.service import FetchNeeds, MailAccess
from waypost.services.names import DirectoryError
from waypost.storage.interface import NotFound


class UnresolvableUrl(errors.MailboxError):
    """The URL names nothing this user may read (``NO [BADURL url]``)."""

    code = "BADURL"


@dataclass(frozen=True, slots=True)
class UrlMessage:
    raw: bytes
    parsed: mime.ParsedMessage


def local_host(mail: MailAccess, host: str) -> bool:
    """``host`` names this server: one of its domains or domain aliases."""
    try:
        mail.services.directory.get_domain(host)
    except (NotFound, DirectoryError):
        return False
    return True


def same_user(user: str, named: str) -> bool:
    """The URL's user part names the logged-in ``user`` (``name`` or ``name@domain``)."""
    local, _, domain = user.lower().rpartition("@")
    named = named.lower()
    return named in (user.lower(), local) or (
        "%" in named and named.replace("%", "@", 1) == f"{local}@{domain}"
    )


def read_message(
    mail: MailAccess,
    user: str,
    mailbox: str,
    uid: int,
    uidvalidity: int | None = None,
    *,
    host: str | None = None,
    url_user: str | None = None,
) -> UrlMessage:
    """The whole message (bytes and parse) a URL names, checked as the module
    doc says; :class:`UnresolvableUrl` for anything else."""
    if host is not None and not local_host(mail, host):
        raise UnresolvableUrl("the URL names another server")
    if url_user is not None and not same_user(user, url_user):
        raise UnresolvableUrl("the URL names another user")
    try:
        opened = mail.open(user, mailbox, "r")
        if uidvalidity is not None:
            with mail.index(opened) as index:
                if index.uidvalidity != uidvalidity:
                    raise UnresolvableUrl("the mailbox's UIDVALIDITY has changed")
        batch = mail.fetch(opened, [(0, uid)], FetchNeeds(raw=True, parsed=True))
    except UnresolvableUrl:
        raise
    except (errors.MailboxError, NotFound):
        raise UnresolvableUrl("no such message, or it may not be read") from None
    if not batch.messages:
        raise UnresolvableUrl("no such message, or it may not be read")
    found = batch.messages[0]
    assert found.raw is not None and found.parsed is not None
    return UrlMessage(found.raw, found.parsed)
