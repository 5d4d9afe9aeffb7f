"""Login: names go through the Router (access kind), so account aliases,
``user%domain`` and ``user@domain`` all log in (router.md, access kind).

Used by SMTP AUTH, POP3 and IMAP alike; argon2 runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable

from waypost.services.container import Services
from waypost.services.credential_cache import CACHE
from waypost.services.login_guard import Attempt, LoginGuard
from waypost.services.names import DirectoryError
from waypost.services.router.table import Kind
from waypost.settings import ServerSettings, lookup
from waypost.storage.interface import NotFound

DEFAULT_CACHE_TIME = lookup("LoginCacheTime").default

log = logging.getLogger("waypost.auth")


def qualify_login(services: Services, login: str, server_ip: str | None) -> str:
    """A bare login name on a connection to an IP address assigned to a
    domain means an account of that domain (domains-accounts.md §2.3);
    anything else is routed as written (and a bare name then means the
    Main Domain). Blocking (reads the Router's snapshot): call in a thread."""
    if not server_ip or "@" in login or "%" in login:
        return login
    ip = server_ip.removeprefix("::ffff:")
    domain = services.router.current()[1].ip_domains.get(ip)
    return f"{login}@{domain}" if domain else login


async def qualified_login(services: Services, login: str, server_ip: str | None) -> str:
    return await asyncio.to_thread(qualify_login, services, login, server_ip)


def login_account(services: Services, login: str) -> str | None:
    """The account (``name@domain``) a login name routes to, or None."""
    result = services.router.route(login, Kind.ACCESS, trusted=True)
    if result.error or len(result.routes) != 1 or result.routes[0].module != "LOCAL":
        return None
    return result.routes[0].queue


def check_password(services: Services, login: str, password: str) -> str | None:
    """The account on success, None otherwise. A success is remembered for
    ``LoginCacheTime`` seconds (``credential_cache.py``): the same password
    for the same stored hash then logs in without running argon2 again."""
    account = login_account(services, login)
    ttl = cache_time(services)
    stored = _stored_hash(services, account) if account and ttl > 0 else None
    if account and stored and CACHE.hit(account, stored, password):
        return account
    ok = services.directory.verify_password(account or "\0unknown", password)
    if ok and account and stored:
        CACHE.remember(account, stored, password, ttl)
    return account if ok and account else None


def cache_time(services: Services) -> float:
    """``LoginCacheTime``: how long a verified password is remembered."""
    value = services.store.get_settings().get("LoginCacheTime")
    try:
        return float(value if value is not None else DEFAULT_CACHE_TIME)
    except ValueError:
        return 0.0


def _stored_hash(services: Services, account: str) -> str | None:
    try:
        return services.directory.get_account(account).secret
    except (NotFound, DirectoryError):
        return None


async def authenticate(services: Services, login: str, password: str) -> str | None:
    """The account name on success, None otherwise (never says which part failed)."""
    return await asyncio.to_thread(check_password, services, login, password)


def check_cram_md5(services: Services, login: str, challenge: str, digest: str) -> str | None:
    """RFC 2195: ``digest`` must be HMAC-MD5(password, challenge) in hex.

    Only accounts that keep a sealed copy of their password (see
    ``services/sealed.py``) can use it; the others fail like a wrong password.
    """
    account = login_account(services, login)
    secret = services.directory.cram_secret(account) if account else None
    if secret is None:
        if account:  # the administrator's fix, never the password or digest
            log.warning("CRAM-MD5 login of %s refused: the account keeps no reversible secret"
                        " (PasswordEncryption is not argon2+cram-md5); give it one with"
                        " `waypost account passwd %s --odmr`", account, account)
        return None
    expected = hmac.new(secret.encode("utf-8"), challenge.encode("utf-8"), "md5").hexdigest()
    return account if hmac.compare_digest(expected, digest.strip().lower()) else None


async def authenticate_cram_md5(services: Services, login: str, challenge: str, digest: str
                                ) -> str | None:
    return await asyncio.to_thread(check_cram_md5, services, login, challenge, digest)


async def guarded_login(
    services: Services,
    guard: LoginGuard,
    settings: ServerSettings,
    ip: str,
    login: str,
    verify: Callable[[], Awaitable[str | None]],
    *,
    service: str,
) -> Attempt:
    """One login under the login guard, for every protocol: the attempt is
    reserved before ``verify`` runs (``login_guard.py``); failures lock out
    the (account, client IP) pair, keyed by the account so its aliases share
    a counter, and only slow the IP and the account elsewhere. ``verify``
    holds the credentials cache, so a locked-out pair never reaches it."""
    guard.configure(settings, services.store)
    account = await asyncio.to_thread(login_account, services, login)
    return await guard.attempt(ip, account or login, verify, service=service)
