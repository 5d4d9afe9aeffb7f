""""Relay to All Hosts We Backup" (smtp.md §5, router.md §8.3 case 2), in one place.

The Router is pure and cannot ask DNS, so it refuses an untrusted relay
with the route it would have taken (``RouteError.denied_route``); whoever
applies the relaying decision -- the SMTP session at RCPT TO, ETRN, and
``waypost route --source`` -- lifts the refusal here when the setting is on
and the recipient domain's MX list names this server (by one of its
domain names or addresses). A DNS failure means "no": relaying is never
opened because DNS did not answer.
"""

from __future__ import annotations

from waypost.services.delivery.dns import DNSError, Resolver
from waypost.services.router.route import ErrorKind, RouteResult
from waypost.services.router.view import DirectorySnapshot
from waypost.settings import ServerSettings


async def we_back_up(resolver: Resolver, snap: DirectorySnapshot, domain: str) -> bool:
    """Whether ``domain``'s MX list names this server. Answers are cached by
    the resolver for their TTL."""
    own_ips = set(snap.own_ips) | {"127.0.0.1"}
    try:
        for _pref, host in await resolver.mx_hosts(domain):
            if snap.real_domain(host) is not None:
                return True
            if own_ips & set(await resolver.addresses(host)):
                return True
    except DNSError:
        return False
    return False


def backup_domain(result: RouteResult, settings: ServerSettings) -> str | None:
    """The domain to look up when ``result`` is a relaying refusal the
    setting may lift, else None."""
    error = result.error
    if (error is None or error.kind is not ErrorKind.RELAY_DENIED
            or error.denied_route is None or not settings.flag("RelayToAllHostsWeBackup")):
        return None
    return error.denied_route.address.rpartition("@")[2] or None


def allow_backup(result: RouteResult) -> None:
    """Turn the refusal into the route it denied (the MX check passed)."""
    assert result.error is not None and result.error.denied_route is not None
    result.routes = [result.error.denied_route]
    result.error = None
