"""HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760).

Invariants and choices:

* **Challenges** name realm = the account's domain and offer
  ``algorithm=SHA-256`` first, then ``MD5`` (RFC 8760 §2.4: one challenge
  per algorithm, most preferred first; MD5 stays because most deployed
  phones know nothing else), both with ``qop="auth"``. ``auth-int`` and the
  ``-sess`` variants are not offered, so they are not accepted.
* **qop is required.** Without it there is no nonce count and a captured
  request could be replayed for the nonce's whole life (RFC 2069 mode);
  RFC 7616 §3.4 makes qop mandatory. A response without qop, nc or cnonce
  is malformed (400), as is one whose ``uri`` names another resource than
  the request (RFC 7616 §3.4.6).
* **Nonces** (``nonces.py``) name their realm and issue time, are signed,
  expire after ``SIPNonceLifetime`` and are never reused: ``nc`` must grow,
  and a replayed count is refused before any password is looked at. A
  signed nonce that is too old is *stale*: when the response is otherwise
  right the client gets a new challenge with ``stale=true`` (RFC 7616
  §3.3), else the reply of a wrong password. Either
  way it counts as a failed login for the guard: a right answer to an old
  nonce may be a captured request replayed, and a success would clear the
  pair's failures (a phone's next answer, to a fresh nonce, clears it).
* **Passwords**: accounts keep argon2 hashes only; digest needs the
  password itself, which exists only for accounts whose
  ``PasswordEncryption`` is ``argon2+cram-md5`` (``services/sealed.py``),
  read through :meth:`Directory.cram_secret`, the one place that gives it.
  Any other account fails like a wrong password, and the administrator is
  told once per account and process what to do (as CRAM-MD5 does,
  ``services/auth.py``) -- once, because a phone retries every few seconds.
* **Guessing**: every verification goes through the login guard
  (``services/login_guard.py``) under protocol name ``sip``, keyed by the
  account the digest user name routes to and the client address, so bad
  REGISTERs are slowed and locked out like mail logins; the lookup and the
  unsealing run in a worker thread, once per account and store state: the
  HA1 found is kept until the store's change counter moves, so a phone
  answering challenges again costs no thread (``_Ha1Cache``).
* The digest ``username`` is a login name: without ``@`` or ``%`` it is
  qualified by the realm (``alice`` in realm ``dom`` is ``alice@dom``),
  then routed with the access kind, so aliases and ``user%domain`` work; the
  account must be in the realm's domain.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from waypost.services import auth
from waypost.services.container import Services
from waypost.services.login_guard import LoginGuard
from waypost.services.signals.nonces import NonceBook, NonceState
from waypost.services.signals.registrar import WouldBlock
from waypost.settings import ServerSettings
from waypost.storage.interface import Store

log = logging.getLogger("waypost.sip.digest")

ALGORITHMS = {"SHA-256": "sha256", "MD5": "md5"}
"""What is offered, in the order of preference (RFC 8760 §2.4)."""
MAX_PARAMS = 32
"""auth-params accepted in one credentials header."""
_TOLD_MAX = 10_000


class DigestError(ValueError):
    """Credentials that do not parse (the request gets 400 Bad Request)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed ``Authorization``/``Proxy-Authorization`` value (RFC 7616 §3.4);
    ``params`` holds every auth-param, names in lower case, values unquoted."""

    params: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        return self.params.get(name, "")

    @property
    def username(self) -> str:
        return self.get("username")

    @property
    def realm(self) -> str:
        return self.get("realm")

    @property
    def nonce(self) -> str:
        return self.get("nonce")

    @property
    def uri(self) -> str:
        return self.get("uri")

    @property
    def algorithm(self) -> str:
        return self.get("algorithm") or "MD5"  # RFC 7616 §3.4: absent means MD5

    def nonce_count(self) -> int:
        """``nc``: exactly 8 hex digits (RFC 7616 §3.4)."""
        nc = self.get("nc")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise DigestError(f"invalid nonce count {nc!r}")
        return int(nc, 16)


# -- parsing (pure) ---------------------------------------------------------

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SPACE = " \t\r\n"


def parse_credentials(value: str) -> Credentials:
    """``Digest name=value, name="quoted", ...`` (RFC 7616 §3.4, RFC 3261
    §25.1 auth-param: token or quoted-string with ``\\`` escapes). Names are
    case-insensitive and may appear once."""
    text = value.strip(_SPACE)
    end = 0
    while end < len(text) and text[end] not in _SPACE:
        end += 1
    scheme, rest = text[:end], text[end:]
    if scheme.lower() != "digest":
        raise DigestError("not Digest credentials")
    params: dict[str, str] = {}
    pos, end = 0, len(rest)
    while True:
        pos = _skip(rest, pos)
        if pos >= end:
            break
        start = pos
        while pos < end and rest[pos] in _TOKEN:
            pos += 1
        name = rest[start:pos].lower()
        pos = _skip(rest, pos)
        if not name or pos >= end or rest[pos] != "=":
            raise DigestError("expected name=value")
        pos = _skip(rest, pos + 1)
        if pos < end and rest[pos] == '"':
            val, pos = _quoted(rest, pos + 1)
        else:
            start = pos
            while pos < end and rest[pos] in _TOKEN:
                pos += 1
            val = rest[start:pos]
            if not val:
                raise DigestError(f"empty value of {name}")
        if name in params:
            raise DigestError(f"{name} given twice")
        params[name] = val
        if len(params) > MAX_PARAMS:
            raise DigestError("too many parameters")
        pos = _skip(rest, pos)
        if pos < end:
            if rest[pos] != ",":
                raise DigestError("expected a comma between parameters")
            pos += 1
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise DigestError(f"{required} missing")
    return Credentials(params)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\":
            pos += 1
            if pos >= len(text):
                break
            ch = text[pos]
        if ch in "\r\n\0":
            raise DigestError("control character in a quoted string")
        out.append(ch)
        pos += 1
    raise DigestError("unterminated quoted string")


def quote(value: str) -> str:
    """A quoted-string for a challenge or credentials value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def response_for(algorithm: str, username: str, realm: str, password: str, method: str,
                 uri: str, nonce: str, nc: str, cnonce: str, qop: str = "auth") -> str:
    """The ``response`` a client computes (RFC 7616 §3.4.1, qop ``auth``):
    H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri)) in hex."""
    return _response(algorithm, ha1_of(algorithm, username, realm, password), method, uri,
                     nonce, nc, cnonce, qop)


def ha1_of(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(user:realm:password) in hex (RFC 7616 §3.4.2)."""
    return hashlib.new(ALGORITHMS[algorithm.upper()],
                       f"{username}:{realm}:{password}".encode()).hexdigest()


def _response(algorithm: str, ha1: str, method: str, uri: str, nonce: str, nc: str,
              cnonce: str, qop: str) -> str:
    name = ALGORITHMS[algorithm.upper()]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8")).hexdigest()

    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{h(f'{method}:{uri}')}")


class _Ha1Cache:
    """HA1 values of the accounts whose digest was checked, per store and
    for one value of its change counter (a password change, a removed
    account or a new alias moves it, and everything is read again), so a
    phone that answers challenge after challenge costs no store read, no
    unsealing and no worker thread. Only HA1 is kept (what a Kamailio
    subscriber table keeps), never the password; bounded by ``HA1_KEPT``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_store: weakref.WeakKeyDictionary[
            Store, tuple[int, dict[tuple[str, str, str], tuple[str, str]]]] = (
            weakref.WeakKeyDictionary())

    def get(self, store: Store, version: int, key: tuple[str, str, str]
            ) -> tuple[str, str] | None:
        with self._lock:
            entry = self._by_store.get(store)
            return entry[1].get(key) if entry is not None and entry[0] == version else None

    def put(self, store: Store, version: int, key: tuple[str, str, str],
            value: tuple[str, str]) -> None:
        with self._lock:
            entry = self._by_store.get(store)
            if entry is None or entry[0] != version or len(entry[1]) >= HA1_KEPT:
                entry = (version, {})
                self._by_store[store] = entry
            entry[1][key] = value


HA1_KEPT = 100_000
_HA1 = _Ha1Cache()


def offered(settings: ServerSettings) -> tuple[str, ...]:
    """The algorithms the ``SIPDigestAlgorithms`` setting offers, in its order."""
    return tuple(name.upper() for name in settings.items("SIPDigestAlgorithms")
                 if name.upper() in ALGORITHMS) or tuple(ALGORITHMS)


def challenges(realm: str, nonce: str, *, stale: bool = False,
               algorithms: Sequence[str] = tuple(ALGORITHMS)) -> list[str]:
    """The ``WWW-Authenticate`` (or ``Proxy-Authenticate``) values of a 401
    (407), one per algorithm in ``algorithms`` order (:func:`offered`;
    by default SHA-256 first, RFC 8760 §2.4)."""
    tail = ", stale=true" if stale else ""
    return [f"Digest realm={quote(realm)}, nonce={quote(nonce)}, algorithm={algorithm},"
            f' qop="auth"{tail}' for algorithm in algorithms]


# -- verification -----------------------------------------------------------


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"  # right response, old nonce: challenge again with stale=true
    REFUSED = "refused"  # wrong, replayed, foreign or locked out: challenge again
    MALFORMED = "malformed"  # 400 Bad Request


@dataclass(frozen=True, slots=True)
class DigestResult:
    """``account`` only with :attr:`Verdict.OK`; ``why`` is for the log,
    never for the client (a lock-out answers like a wrong password)."""

    verdict: Verdict
    account: str | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class DigestRequest:
    """What the SIP session hands over: the parsed credentials, the request's
    method and Request-URI, the realm it challenged with, the client address."""

    credentials: Credentials
    method: str
    request_uri: str
    realm: str
    ip: str


_told: set[str] = set()
_told_lock = threading.Lock()


def _tell_once(account: str) -> None:
    with _told_lock:
        if account in _told:
            return
        if len(_told) >= _TOLD_MAX:
            _told.clear()
        _told.add(account)
    log.warning("SIP digest login of %s refused: the account keeps no reversible secret"
                " (PasswordEncryption is not argon2+cram-md5); give it one with"
                " `waypost account passwd %s --odmr`", account, account)


def login_name(username: str, realm: str) -> str:
    """The login the digest user name stands for (see the module notes)."""
    if "@" in username or "%" in username:
        return username
    return f"{username}@{realm}"


def check_response(services: Services, login: str, request: DigestRequest, *,
                   block: bool = True) -> str | None:
    """The account when the response is right for its password, else None.
    Blocking (the store, unsealing: run in a worker thread) unless the
    account's HA1 is known for the store's current state; with ``block``
    false, :class:`WouldBlock` instead of blocking."""
    creds = request.credentials
    store = services.store
    version = store.version()
    key = (creds.username, request.realm.lower(), creds.algorithm.upper())
    known = _HA1.get(store, version, key)
    if known is None:
        if not block:
            raise WouldBlock
        account = auth.login_account(services, login)
        if account is None or account.rpartition("@")[2].lower() != request.realm.lower():
            return None
        secret = services.directory.cram_secret(account)
        if secret is None:
            _tell_once(account)
            return None
        known = (account, ha1_of(creds.algorithm, creds.username, creds.realm, secret))
        _HA1.put(store, version, key, known)  # as of the version read before
    account, ha1 = known
    expected = _response(creds.algorithm, ha1, request.method, creds.uri, creds.nonce,
                         creds.get("nc"), creds.get("cnonce"), creds.get("qop"))
    return account if hmac.compare_digest(expected, creds.get("response").lower()) else None


def _precheck(request: DigestRequest) -> DigestResult | None:
    """What is refused before any password is looked at."""
    creds = request.credentials
    if creds.get("qop").lower() != "auth" or not creds.get("cnonce") or not creds.get("nc"):
        return DigestResult(Verdict.MALFORMED, why="qop=auth with nc and cnonce required")
    try:
        creds.nonce_count()
    except DigestError as exc:
        return DigestResult(Verdict.MALFORMED, why=str(exc))
    if not _same_uri(creds.uri, request.request_uri):
        return DigestResult(Verdict.MALFORMED, why="uri is not the Request-URI")
    if creds.algorithm.upper() not in ALGORITHMS:
        return DigestResult(Verdict.REFUSED, why=f"algorithm {creds.algorithm} not offered")
    if creds.realm.lower() != request.realm.lower():
        return DigestResult(Verdict.REFUSED, why=f"realm {creds.realm!r} is not {request.realm}")
    return None


def _same_uri(given: str, request_uri: str) -> bool:
    """RFC 7616 §3.4.6: the digest covers the request's own target. Scheme
    and host are case-insensitive; clients copy the URI, so text is compared."""
    return given == request_uri or given.lower() == request_uri.lower()


async def verify(services: Services, guard: LoginGuard, nonces: NonceBook,
                 settings: ServerSettings, request: DigestRequest) -> DigestResult:
    """Check one Authorization answer; every password check is under the guard."""
    early = _precheck(request)
    if early is None and request.credentials.algorithm.upper() not in offered(settings):
        # challenged again (401/407) with the algorithms that are offered
        early = DigestResult(Verdict.REFUSED, why="an algorithm SIPDigestAlgorithms does "
                             "not offer")
    if early is not None:
        log.info("SIP digest from %s refused: %s", request.ip, early.why)
        return early
    creds = request.credentials
    nc = creds.nonce_count()
    state, issued = nonces.check(creds.nonce, request.realm,
                                 float(settings.number("SIPNonceLifetime")))
    if state is NonceState.FORGED:
        log.info("SIP digest from %s refused: a nonce we did not issue", request.ip)
        return DigestResult(Verdict.REFUSED, why="unknown nonce")
    if state is NonceState.FRESH and not nonces.unused(creds.nonce, nc):
        log.warning("SIP digest of %r from %s refused: nonce count %08x replayed",
                    creds.username, request.ip, nc)
        return DigestResult(Verdict.REFUSED, why="replayed nonce count")
    login = login_name(creds.username, request.realm)
    stale: list[str] = []

    async def run() -> str | None:
        try:
            account = check_response(services, login, request, block=False)
        except WouldBlock:
            account = await asyncio.to_thread(check_response, services, login, request)
        if account is not None and state is NonceState.STALE:
            # A right answer to an old nonce may be a captured request played
            # again: it must not clear the guard's failures, so it counts as one.
            stale.append(account)
            return None
        if account is None:
            return None
        return account if nonces.use(creds.nonce, nc, issued) else None

    attempt = await auth.guarded_login(services, guard, settings, request.ip, login, run,
                                       service="sip")
    if stale:
        return DigestResult(Verdict.STALE, why="stale nonce")
    if attempt.account is None:
        return DigestResult(Verdict.REFUSED, why="locked out" if attempt.locked else
                            "wrong credentials")
    return DigestResult(Verdict.OK, attempt.account)
