"""The registrar: what a REGISTER does to an account's bindings (RFC 3261 §10.3).

The SIP session has done steps 1-4 (Request-URI, Require, digest
authentication through ``digest.py``) and hands over plain values
(:class:`RegisterRequest`); :func:`register` does steps 5-8 and returns the
status and the bindings for the 200's Contact headers.

Invariants and choices:

* The To URI is routed with kind ``signal`` (router.md §7, sip.md §2), so an
  alias or the ``user%domain`` form lands on its account, and the bindings
  are kept per account (by its object id: a renamed account keeps them, a
  deleted one loses them). Anything but one local account is ``404 Not
  Found`` (step 5); an account other than the authenticated one, or one whose
  AccessModes do not allow SIP, is ``403 Forbidden`` (step 4).
* ``Contact: *`` only with ``Expires: 0`` and alone, else ``400`` (step 6).
* Expiry: the contact's ``expires`` parameter, else the ``Expires`` header,
  else ``SIPDefaultExpires``; a non-zero value under ``SIPMinExpires`` (and
  under one hour, which the RFC sets as the ceiling of that refusal) is
  ``423 Interval Too Brief`` with ``Min-Expires``; values over
  ``SIPMaxExpires`` are shortened to it (a registrar may shorten, never
  lengthen); 0 removes the binding.
* Step 7: the same Call-ID with a CSeq not higher than the stored one
  aborts the whole request with ``500`` (an old REGISTER overtaken by a
  newer one); the check and the update are one store transaction
  (``Store.sip_change_bindings``), as are the purge of expired bindings.
* Identity of a binding: ``+sip.instance`` with ``reg-id`` when both are
  given (RFC 5626 §6: the phone's flow, whatever its contact address now);
  else the contact URI, compared as RFC 3261 §19.1.4 says, approximately
  (scheme, host and parameters case-insensitive, parameter order ignored).
* ``SIPMaxRegistrations`` per account: a REGISTER that would take an account
  past it with new contacts is refused with ``403 Forbidden`` (reason
  ``Too Many Registrations``). Kamailio answers 503 here; 503 invites the
  phone to retry and fail over (RFC 3263 §4.3), which cannot help with a
  limit the administrator set, so the refusal is final. Refreshing or
  removing contacts of an account already past a lowered limit still works.
* Expired bindings are never returned: every read asks for those alive at
  ``now``, and every REGISTER deletes the expired ones of all accounts.
* Routing reads an account's bindings per call (:func:`live_bindings`):
  they are kept in memory for ``BINDINGS_TTL`` seconds, so a burst of calls
  to one phone reads the store once, and the routing decision can be made
  on the event loop without a worker thread. A change made in this process
  drops the account's entry at once. A change made by another process on
  the same data directory (another worker: a REGISTER the kernel hashed to
  it; ``waypost sip unregister``) shows at once too: after every change the
  changer writes a fresh random token into ``DATA/sip-bindings.mark``,
  which every process maps into memory (:class:`_ChangeMark`), and a kept
  entry is used only while the token is the one read before the entry was
  read (8 octets compared per call, no system call). Binding changes do not
  move ``Store.version()`` (that would rebuild every snapshot on every
  REGISTER). Another node (another data directory on one shared store)
  sees a change within ``BINDINGS_TTL``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import mmap
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from waypost.services.auth import login_account
from waypost.services.container import Services
from waypost.services.names import DirectoryError
from waypost.services.router.address import sip_target, strip_sip_uri
from waypost.services.router.route import route as route_address
from waypost.services.router.table import CompiledTable
from waypost.services.router.view import DirectorySnapshot
from waypost.settings import ServerSettings
from waypost.storage.interface import NotFound, SipBinding, SipBindingChanges, Store

MAX_EXPIRES = 2**32 - 1
"""RFC 3261 §20.19: larger Expires values are taken as this one."""
BRIEF_CEILING = 3600
"""§10.3 step 7: only an interval under one hour may be refused as too brief."""
MAX_TEXT = 256
"""Octets of a User-Agent kept with a binding."""
BINDINGS_TTL = 1.0
"""Seconds an account's bindings read from the store are used again (see above)."""
MARK_FILE = "sip-bindings.mark"
"""In the data directory: the token every binding change renews (see above)."""
BINDINGS_KEPT = 10_000
"""Accounts whose bindings are kept at most (then the memory starts over)."""
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Contact:
    """One Contact header value: its URI (``*`` for the wildcard) and the
    parameters the registrar reads, as the wire gave them."""

    uri: str
    expires: int | None = None
    q: str | None = None
    instance: str | None = None
    reg_id: int | None = None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A REGISTER, reduced to what steps 4-8 need. ``account`` is the account
    the digest authentication proved (``digest.py``)."""

    to: str
    call_id: str
    cseq: int
    contacts: tuple[Contact, ...]
    account: str
    expires: int | None = None
    transport: str = ""
    address: str = ""
    port: int = 0
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Current:
    """A binding for the 200's Contact header: ``expires`` in seconds from now;
    ``instance`` and ``reg_id`` to echo as the phone sent them (RFC 5626 §6)."""

    contact: str
    expires: int
    q: int | None = None
    instance: str | None = None
    reg_id: int | None = None

    @property
    def q_text(self) -> str | None:
        return None if self.q is None else format_q(self.q)


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    status: int
    reason: str
    bindings: tuple[Current, ...] = ()
    min_expires: int | None = None
    account: str | None = None


class _Refused(Exception):
    def __init__(self, outcome: RegisterOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def _fail(status: int, reason: str, **extra: int) -> RegisterOutcome:
    return RegisterOutcome(status, reason, min_expires=extra.get("min_expires"))


# -- pure helpers -------------------------------------------------------------


def parse_q(text: str) -> int:
    """qvalue (RFC 3261 §20.10): 0 to 1 with up to three decimals, in thousandths."""
    if not _QVALUE.fullmatch(text.strip()):
        raise ValueError(f"invalid q {text!r}")
    whole, _, frac = text.strip().partition(".")
    return int(whole) * 1000 + int(frac.ljust(3, "0"))


def format_q(milli: int) -> str:
    text = f"{milli / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def uri_key(uri: str) -> str:
    """A SIP URI in the form RFC 3261 §19.1.4 compares (approximately):
    scheme, host and parameters lower case, parameters sorted, the user part
    and headers as written. ValueError when it is no URI at all."""
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or not scheme.isascii() or not scheme.replace("+", "").replace(
            "-", "").replace(".", "").isalnum() or not rest:
        raise ValueError(f"invalid contact URI {uri!r}")
    rest, _, headers = rest.partition("?")
    main, *params = rest.split(";")
    user, at, host = main.rpartition("@")
    host = host.strip()
    if not host:
        raise ValueError(f"invalid contact URI {uri!r}")
    # Whitespace around a parameter is not part of it (the URI was
    # stripped as a whole, so a last parameter lost its own already).
    sorted_params = ";".join(sorted(p.strip().lower() for p in params if p.strip()))
    return (f"{scheme.lower()}:{user}{at}{host.lower()}"
            + (f";{sorted_params}" if sorted_params else "") + (f"?{headers}" if headers else ""))


def aor(to: str) -> str:
    """The address of record of a To URI, for routing: ``user@host``
    without the password, port, parameters and headers, %-escapes undone
    (§10.3 step 5), by the Router's own helper so REGISTER and calls agree."""
    key = to.strip().strip("<>")
    if sip_target(key) is not None:
        return strip_sip_uri(key)
    key = key.split(";", 1)[0].split("?", 1)[0]
    user, at, host = key.rpartition("@")
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return f"{user}{at}{host}"


def _binding_key(contact: Contact) -> str:
    if contact.instance and contact.reg_id is not None:
        return f"instance:{contact.instance};reg-id={contact.reg_id}"
    return uri_key(contact.uri)


def current(bindings: list[SipBinding], now: float) -> tuple[Current, ...]:
    return tuple(Current(b.contact, max(1, math.ceil(b.expires - now)), b.q, b.instance,
                         b.reg_id) for b in bindings if b.expires > now)


# -- the bindings routing reads ---------------------------------------------------


class _ChangeMark:
    """The token of ``DATA/sip-bindings.mark`` (see the module notes), mapped
    into memory; every change writes a new random one. Without a writable
    data directory the mark is absent and only ``BINDINGS_TTL`` holds."""

    SIZE = 8

    def __init__(self, data_dir: Path | None) -> None:
        self._map: mmap.mmap | None = None
        if data_dir is None:
            return
        try:
            fd = os.open(data_dir / MARK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size < self.SIZE:
                os.ftruncate(fd, self.SIZE)  # zeros: a racing creator changes nothing
            self._map = mmap.mmap(fd, self.SIZE)
        except (OSError, ValueError):
            self._map = None
        finally:
            os.close(fd)

    def read(self) -> bytes:
        return b"" if self._map is None else self._map[: self.SIZE]

    def move(self) -> None:
        if self._map is not None:
            self._map[: self.SIZE] = os.urandom(self.SIZE)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


_Entry = tuple[float, bytes, list[SipBinding]]


class _Bindings:
    """Accounts' bindings as last read from each store (monotonic read time).
    ``_generation`` moves on every change made here, so a read that raced
    with a change is not kept (it may be older than the change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_store: weakref.WeakKeyDictionary[Store, dict[tuple[str, str], _Entry]] = (
            weakref.WeakKeyDictionary())
        self._marks: weakref.WeakKeyDictionary[Store, _ChangeMark] = (
            weakref.WeakKeyDictionary())
        self._generation = 0

    def _mark(self, store: Store) -> _ChangeMark:
        mark = self._marks.get(store)
        if mark is None:
            with self._lock:
                mark = self._marks.get(store)
                if mark is None:
                    mark = _ChangeMark(getattr(store, "data_dir", None))
                    self._marks[store] = mark
                    weakref.finalize(store, mark.close)
        return mark

    def get(self, store: Store, domain: str, name: str, now: float, *, block: bool = True
            ) -> list[SipBinding] | None:
        key = (domain.lower(), name.lower())
        token = self._mark(store).read()
        with self._lock:
            entry = self._by_store.get(store, {}).get(key)
            generation = self._generation
        if (entry is not None and entry[1] == token
                and time.monotonic() - entry[0] < BINDINGS_TTL):
            return [b for b in entry[2] if b.expires > now]
        if not block:
            return None
        read_at = time.monotonic()  # the token was read before the bindings
        bindings = store.sip_bindings(domain, name, now=now)  # NotFound passes through
        with self._lock:
            if generation == self._generation:
                table = self._by_store.setdefault(store, {})
                if len(table) >= BINDINGS_KEPT:
                    table.clear()
                table[key] = (read_at, token, bindings)
        return [b for b in bindings if b.expires > now]

    def forget(self, store: Store, domain: str, name: str) -> None:
        """After a change (committed or not) of the account's bindings: here
        and, through the mark, in every process on this data directory."""
        self._mark(store).move()
        with self._lock:
            self._generation += 1
            self._by_store.get(store, {}).pop((domain.lower(), name.lower()), None)


_BINDINGS = _Bindings()


def live_bindings(services: Services, account: str, now: float, *, block: bool = True
                  ) -> list[SipBinding] | None:
    """The bindings of ``account`` alive at ``now`` (highest q first, as the
    store orders them); None when ``block`` is false and they would have to
    be read from the store. NotFound when the account is gone."""
    name, _, domain = account.rpartition("@")
    return _BINDINGS.get(services.store, domain, name, now, block=block)


# -- the registrar ------------------------------------------------------------


class WouldBlock(Exception):
    """A call made with ``block=False`` needs the store (or a rebuild of the
    Router's table) first: make it again in a worker thread."""


def router_tables(services: Services, block: bool) -> tuple[CompiledTable, DirectorySnapshot]:
    """The Router's table and snapshot; without ``block`` only when current."""
    if block:
        return services.router.current()
    current = services.router.peek()
    if current is None:
        raise WouldBlock
    return current


def target_account(services: Services, to: str, *, block: bool = True) -> str | None:
    """The one local account the To URI routes to as a signal, or None
    (§10.3 step 5). Blocking (run in a worker thread) unless ``block`` is
    false (:class:`WouldBlock`). The digest realm of a REGISTER is this
    account's domain."""
    table, snap = router_tables(services, block)
    result = route_address(aor(to), "signal", True, table, snap)
    if result.error or len(result.routes) != 1 or result.routes[0].module != "LOCAL":
        return None
    return result.routes[0].queue


def challenge_realm(services: Services, to: str, *, block: bool = True) -> str | None:
    """The realm a REGISTER for ``to`` is challenged with (realm = domain,
    sip.md §4): the domain of the account the To routes to; else the To's
    own domain when it is one of ours, so an unknown name is challenged like
    a known one and the 401 tells nobody which names exist; None when the
    domain is not ours either (404 at once). Blocking (run in a worker
    thread) unless ``block`` is false (:class:`WouldBlock`)."""
    account = target_account(services, to, block=block)
    if account is not None:
        return account.rpartition("@")[2]
    host = aor(to).rpartition("@")[2].lower().rstrip(".")
    snap = router_tables(services, block)[1]
    host = snap.domain_aliases.get(host, host)
    return host if host in snap.domains else None


def register(services: Services, request: RegisterRequest, *, now: float | None = None,
             settings: ServerSettings | None = None) -> RegisterOutcome:
    """Steps 4-8 of RFC 3261 §10.3. Blocking: run in a worker thread.
    ``settings``: the current ones when the caller has them (else read)."""
    now = time.time() if now is None else now
    account = target_account(services, request.to)
    if account is None:
        return _fail(404, "Not Found")
    if account.lower() != request.account.lower():
        return _fail(403, "Forbidden")
    if not services.directory.service_enabled(account, "SIP"):
        return _fail(403, "Forbidden")
    settings = settings or services.settings()
    low, high = settings.number("SIPMinExpires"), settings.number("SIPMaxExpires")
    default = min(max(settings.number("SIPDefaultExpires"), low), max(high, low))
    try:
        plan = _plan(request, low, max(high, low), default)
    except _Refused as refused:
        return refused.outcome
    name, _, domain = account.rpartition("@")
    limit = settings.number("SIPMaxRegistrations")

    def decide(existing: list[SipBinding]) -> SipBindingChanges:
        return _changes(request, plan, existing, now, limit)

    try:
        after = services.store.sip_change_bindings(domain, name, now, decide)
    except _Refused as refused:
        return RegisterOutcome(refused.outcome.status, refused.outcome.reason, account=account)
    finally:
        _BINDINGS.forget(services.store, domain, name)
    return RegisterOutcome(200, "OK", current(after, now), account=account)



async def handle_register(services: Services, request: RegisterRequest,
                          settings: ServerSettings | None = None) -> RegisterOutcome:
    return await asyncio.to_thread(functools.partial(register, settings=settings),
                                   services, request)


_Plan = list[tuple[Contact, str | None, int, int | None]]  # contact, key, expires, q


def _plan(request: RegisterRequest, low: int, high: int, default: int) -> _Plan:
    """Check the Contacts (step 6) and give each its key, expiry and q."""
    stars = [c for c in request.contacts if c.uri.strip() == "*"]
    if stars:
        if len(request.contacts) != 1 or request.expires != 0 or stars[0].expires not in (
                None, 0):
            raise _Refused(_fail(400, "Bad Request"))
        return [(stars[0], None, 0, None)]
    plan: _Plan = []
    for contact in request.contacts:
        expires = contact.expires if contact.expires is not None else request.expires
        expires = default if expires is None else expires
        if expires < 0:
            raise _Refused(_fail(400, "Bad Request"))
        expires = min(expires, MAX_EXPIRES)
        if 0 < expires < min(low, BRIEF_CEILING):
            raise _Refused(_fail(423, "Interval Too Brief", min_expires=low))
        try:
            q = parse_q(contact.q) if contact.q is not None else None
            key = _binding_key(contact)
        except ValueError:
            raise _Refused(_fail(400, "Bad Request")) from None
        plan.append((contact, key, min(expires, high), q))
    return plan


def _changes(request: RegisterRequest, plan: _Plan, existing: list[SipBinding], now: float,
             limit: int) -> SipBindingChanges:
    """Step 7 over the account's current bindings, inside the store's transaction."""
    by_key = {b.key: b for b in existing}
    if plan and plan[0][1] is None:  # Contact: *
        for b in existing:
            _check_order(request, b)
        return SipBindingChanges(remove=tuple(b.id for b in existing))
    remove: list[int] = []
    put: dict[str, SipBinding] = {}
    for contact, key, expires, q in plan:
        assert key is not None
        old = by_key.get(key)
        if old is not None:
            _check_order(request, old)
        if expires == 0:
            put.pop(key, None)
            if old is not None:
                remove.append(old.id)
            continue
        put[key] = SipBinding(
            key=key, contact=contact.uri.strip(), expires=now + expires,
            call_id=request.call_id, cseq=request.cseq, registered=now, q=q,
            instance=contact.instance, reg_id=contact.reg_id, transport=request.transport,
            address=request.address, port=request.port,
            user_agent=request.user_agent[:MAX_TEXT])
    gone = set(remove)
    count = len({b.key for b in existing if b.id not in gone} | put.keys())
    if count > limit and count > len(existing):
        raise _Refused(_fail(403, "Too Many Registrations"))
    return SipBindingChanges(remove=tuple(remove), put=tuple(put.values()))


def _check_order(request: RegisterRequest, binding: SipBinding) -> None:
    if binding.call_id == request.call_id and request.cseq <= binding.cseq:
        raise _Refused(_fail(500, "Server Internal Error"))


# -- administration (the CLI) ------------------------------------------------


def account_of(services: Services, name: str) -> str:
    """The account a name given to the CLI stands for (aliases and
    ``user%domain`` work, as for logins)."""
    account = login_account(services, name)
    if account is None:
        raise DirectoryError(f"no account {name}")
    return account


def registrations(services: Services, account: str | None = None, *,
                  now: float | None = None) -> list[SipBinding]:
    """The live bindings of one account (any name of it) or of all."""
    now = time.time() if now is None else now
    if account is None:
        return services.store.sip_bindings(now=now)
    name, _, domain = account_of(services, account).rpartition("@")
    return services.store.sip_bindings(domain, name, now=now)


def unregister(services: Services, account: str, contact: str | None = None, *,
               now: float | None = None) -> int:
    """Remove the account's bindings (only ``contact``'s when given, matched
    as a URI); the number removed."""
    now = time.time() if now is None else now
    name, _, domain = account_of(services, account).rpartition("@")
    try:
        wanted = uri_key(contact) if contact is not None else None
    except ValueError as exc:
        raise DirectoryError(str(exc)) from None
    removed: list[int] = []

    def decide(existing: list[SipBinding]) -> SipBindingChanges:
        removed[:] = [b.id for b in existing if wanted is None or _matches(b, wanted)]
        return SipBindingChanges(remove=tuple(removed))

    try:
        services.store.sip_change_bindings(domain, name, now, decide)
    except NotFound as exc:
        raise DirectoryError(str(exc)) from None
    finally:
        _BINDINGS.forget(services.store, domain, name)
    return len(removed)


def _matches(binding: SipBinding, wanted: str) -> bool:
    try:
        return uri_key(binding.contact) == wanted
    except ValueError:
        return False
