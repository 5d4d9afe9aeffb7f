"""Mail storage quota: the account's ``MaxAccountSize`` against its usage.

The limit is the account's effective ``MaxAccountSize`` setting (account,
then domain AccountDefaults, then server defaults; ``unlimited`` or a size
such as ``100M``, spec/domains-accounts.md §4.2); a setting that cannot be
read refuses growth rather than allowing everything (as File Storage does).
The usage is the octets of all the account's messages (their RFC822.SIZE),
kept per account by the store (``mail_usage``, migration 7), so a check is
one row read, never a sum over messages.

IMAP (RFC 9208) sees one quota root per account with the one resource
``STORAGE`` in units of 1024 octets: usage rounded up, limit rounded down
(so a client never believes there is room that there is not). The root of
one's own mailboxes is ``""`` (as CommuniGate Pro and the RFC's examples
name it); another account's root is ``~account@domain``. An unlimited
account has no quota root (RFC 9208 §5.1 has no way to say "no limit").

Limits are set by administrators (``waypost account set <account>
MaxAccountSize 100M``, the WebAdmin, the CLI protocol); IMAP ``SETQUOTA``
is refused (RFC 9208 §4.1.3 lets the server do so), and QUOTASET is not
advertised.

Enforcement: APPEND, COPY and MOVE (into another account) that would take
the usage over the limit raise :class:`OverQuota`: first by a check before
the body is written (a clear message, no wasted blob), then for good inside
the store's writing transaction (``max_usage``), so sessions writing at the
same instant cannot overshoot the limit together. Local delivery defers
(then bounces) such messages (``services/delivery/local.py``); its check
precedes the delivery transaction, so concurrent deliveries to one account
may overshoot by a message each (as Dovecot's quota plugin can).
"""

from __future__ import annotations

from dataclasses import dataclass

from waypost.services.container import Services
from waypost.services.mailaccess.errors import OverQuota
from waypost.settings import SettingError, parse_size

RESOURCE = "STORAGE"
UNIT = 1024
"""RFC 9208 §5.1: STORAGE is counted in units of 1024 octets."""
LIMITS_KEPT = 10_000
"""Accounts whose limit :class:`Quotas` remembers (all forgotten when full)."""


def parse_limit(value: object) -> int | None:
    """``MaxAccountSize`` in octets; None is unlimited; unreadable is 0."""
    text = str(value if value is not None else "unlimited").strip()
    try:
        return parse_size(text)
    except SettingError:
        return 0


@dataclass(frozen=True, slots=True)
class Quota:
    """One quota root's STORAGE: usage and limit in octets."""

    root: str
    usage: int
    limit: int

    @property
    def resources(self) -> tuple[tuple[str, int, int], ...]:
        """``(name, usage, limit)`` in RFC 9208 units (KB: usage up, limit down)."""
        return ((RESOURCE, -(-self.usage // UNIT), self.limit // UNIT),)


class Quotas:
    """Limits and usage of accounts (``domain``, ``account`` as the store names them)."""

    def __init__(self, services: Services) -> None:
        self.directory = services.directory
        self.store = services.store
        self._limits: dict[tuple[str, str], tuple[int, int | None]] = {}

    def limit(self, domain: str, account: str) -> int | None:
        """The account's limit, remembered per store version: every APPEND asks,
        and the effective settings are several Directory reads. Any Directory
        or settings change moves the version (``Store.version``), so a new
        limit counts from the next check, as the Directory's own snapshot does."""
        key = (domain.lower(), account.lower())
        version = self.store.version()
        known = self._limits.get(key)
        if known is not None and known[0] == version:
            return known[1]
        settings = self.directory.effective_account_settings(f"{account}@{domain}")
        limit = parse_limit(settings.get("MaxAccountSize"))
        if len(self._limits) >= LIMITS_KEPT:
            self._limits.clear()
        self._limits[key] = (version, limit)
        return limit

    def usage(self, domain: str, account: str) -> int:
        return self.store.mail_usage(domain, account)

    def quota(self, domain: str, account: str, root: str) -> Quota | None:
        """The account's quota under the name ``root``; None when unlimited."""
        limit = self.limit(domain, account)
        if limit is None:
            return None
        return Quota(root, self.usage(domain, account), limit)

    def check(self, domain: str, account: str, adding: int) -> int | None:
        """:class:`OverQuota` unless ``adding`` more octets fit (RFC 9208 §4.3);
        the limit, for the store to hold the write to (``max_usage``)."""
        limit = self.limit(domain, account)
        if limit is None:
            return None
        usage = self.usage(domain, account)
        if adding > 0 and usage + adding > limit:
            raise OverQuota(
                f"over quota: {account}@{domain} uses {usage} of {limit} octets;"
                f" {adding} more do not fit"
            )
        return limit

    def fits(self, domain: str, account: str, adding: int) -> bool:
        try:
            self.check(domain, account, adding)
        except OverQuota:
            return False
        return True
