"""What the Router may know about the Directory: an immutable snapshot.

The Router is a pure function, so it never queries storage. The Directory
service builds a :class:`DirectorySnapshot` from the store whenever domains,
objects or domain settings change, and hands it to the Router together with
the compiled table. Everything here is keyed by lower-case names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ObjectKind(StrEnum):
    ACCOUNT = "account"
    ALIAS = "alias"
    FORWARDER = "forwarder"
    GROUP = "group"
    LIST = "list"


class UnknownMode(StrEnum):
    """Values of the domain settings MailToUnknown / SignalToUnknown / AccessToUnknown."""

    REJECTED = "Rejected"
    DISCARDED = "Discarded"
    REROUTED = "Rerouted to"
    BOUNCED = "Accepted and Bounced"


@dataclass(frozen=True, slots=True)
class DirObject:
    """A domain object as routing sees it.

    ``targets`` is the alias's account name, the forwarder's address, or the
    group's member addresses; empty for accounts and lists.
    """

    kind: ObjectKind
    name: str
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownPolicy:
    mode: UnknownMode = UnknownMode.REJECTED
    reroute: str = ""


@dataclass(frozen=True, slots=True)
class DomainView:
    name: str
    mail_unknown: UnknownPolicy = UnknownPolicy()
    signal_unknown: UnknownPolicy = UnknownPolicy()
    access_unknown: UnknownPolicy = UnknownPolicy()


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """Routing-relevant state of the Directory and of the server settings.

    * ``domains``: real domain name -> view (the Main Domain included);
    * ``domain_aliases``: alias name -> real domain name;
    * ``objects``: (real domain, object name) -> object;
    * ``own_ips``: the server's own addresses (127.0.0.1 and 0.0.0.0 are
      always own, see router.md §1.3);
    * ``ip_domains``: IP assigned to a secondary domain -> that domain;
    * ``hold_domains``: patterns of "Hold Mail for Domains" (``*`` allowed),
      which also permit relaying (router.md §8.3, case 3).
    """

    main_domain: str
    domains: Mapping[str, DomainView]
    domain_aliases: Mapping[str, str] = field(default_factory=dict)
    objects: Mapping[tuple[str, str], DirObject] = field(default_factory=dict)
    own_ips: frozenset[str] = frozenset()
    ip_domains: Mapping[str, str] = field(default_factory=dict)
    hold_domains: tuple[str, ...] = ()

    def real_domain(self, name: str) -> str | None:
        """The real name of a server domain or domain alias, else None."""
        name = name.lower().rstrip(".")
        if name in self.domains:
            return name
        return self.domain_aliases.get(name)

    def find_object(self, domain: str, name: str) -> DirObject | None:
        return self.objects.get((domain, name.lower()))
