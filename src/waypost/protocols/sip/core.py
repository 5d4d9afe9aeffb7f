"""The SIP core: the transaction user that answers what the server answers
itself and hands everything else to the proxy.

Invariants:

* The core answers: REGISTER for one of our domains or this server
  (registrar, RFC 3261 §10.3, through ``services/signals``: digest 401
  challenge with realm = domain, ``digest.verify`` under the login guard,
  ``registrar.handle_register``); OPTIONS whose Request-URI has no user part
  and names this server or a local domain (200 with Allow, Accept,
  Supported, §11.2); a CANCEL matching no INVITE server transaction (481,
  §9.2: only the element holding the transaction can cancel it, and the
  layer keeps the transactions); Max-Forwards 0 on anything it would
  forward (483, §16.3 step 3). Everything else, CANCEL and ACK included, goes
  to :meth:`Proxy.handle`; the default proxy answers 501 and drops ACKs.
* Blocking work (the router's table, the store, unsealing secrets) runs in
  worker threads inside the services the core calls; the core reads the
  settings off the loop when the store's change counter moved, and the
  domain list and REGISTER realm on the loop only from the Router's current
  table (``Router.peek``; else in a thread too).
* A bad ``Authorization`` is a 400; a wrong, replayed or locked-out answer
  is a fresh 401 (a lock-out is never told apart from a wrong password).

Choices where the spec is silent:

* A REGISTER whose Request-URI names a domain that is not ours is handed to
  the proxy (§10.3 step 1: it would be forwarded), not refused here.
* ``Supported`` is empty: the registrar keeps ``+sip.instance``/``reg-id``
  but does not implement RFC 5626 flows or RFC 3327 Path, so it claims no
  option tag. A ``Require`` naming any option is answered ``420 Bad
  Extension`` (§8.2.2.3) for the requests the core answers.
* The 200 to a REGISTER carries a ``Date`` header (§10.3 step 8 suggests
  it; phones without a clock set theirs from it).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Callable
from typing import Protocol

from waypost.protocols.sip.headers import NameAddr
from waypost.protocols.sip.syntax import SipError
from waypost.protocols.sip.transaction import ServerTransaction, TransactionLayer
from waypost.protocols.sip.transport import Destination
from waypost.protocols.sip.uri import SipUri, host_key
from waypost.protocols.sip.wire import SipRequest, SipResponse, response_for
from waypost.services.container import Services
from waypost.services.login_guard import shared_guard
from waypost.services.signals import digest, registrar
from waypost.services.signals.nonces import shared_nonces
from waypost.settings import ServerSettings

log = logging.getLogger("waypost.sip")

ALLOW = ("INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, REFER, "
         "SUBSCRIBE, NOTIFY, PRACK")
ACCEPT = "application/sdp"


class Proxy(Protocol):
    async def handle(self, request: SipRequest, transaction: ServerTransaction | None,
                     source: Destination) -> None: ...

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None: ...


ProxyFactory = Callable[[Services, TransactionLayer], Proxy]


class RefusingProxy:
    """The proxy until one is plugged in: 501 to everything, ACKs dropped."""

    async def handle(self, request: SipRequest, transaction: ServerTransaction | None,
                     source: Destination) -> None:
        if transaction is not None:
            await transaction.respond(response_for(request, 501, "Not Implemented"))

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None:
        return None


def refusing_proxy(services: Services, layer: TransactionLayer) -> Proxy:
    return RefusingProxy()


class Core:
    """The :class:`~waypost.protocols.sip.transaction.TransactionUser`."""

    def __init__(self, services: Services, layer: TransactionLayer,
                 proxy: ProxyFactory | None = None, *, own_hosts: tuple[str, ...] = ()) -> None:
        self.services = services
        self.layer = layer
        self.own_hosts = {host_key(h) for h in (*own_hosts, layer.host) if h}
        self.proxy = (proxy or refusing_proxy)(services, layer)
        self.registers = 0
        """REGISTERs that reached the registrar (tests count them)."""
        self._settings: tuple[int, ServerSettings] | None = None

    # -- TransactionUser -----------------------------------------------------

    async def on_request(self, request: SipRequest, transaction: ServerTransaction | None,
                         source: Destination) -> None:
        if transaction is None:  # an ACK to a 2xx
            if request.max_forwards != 0:
                await self.proxy.handle(request, None, source)
            return
        method = request.method
        if method == "CANCEL":
            if self.layer.invite_for(request) is None:
                await transaction.respond(response_for(
                    request, 481, "Call/Transaction Does Not Exist"))
                return
            await self.proxy.handle(request, transaction, source)
            return
        if method in ("REGISTER", "OPTIONS") and await self._names_us(request):
            if await self._unsupported(request, transaction):
                return
            if method == "REGISTER":
                await self._register(request, transaction, source)
            else:
                await transaction.respond(self._options(request))
            return
        if request.max_forwards == 0:
            await transaction.respond(response_for(request, 483, "Too Many Hops"))
            return
        await self.proxy.handle(request, transaction, source)

    async def on_stray_response(self, response: SipResponse, source: Destination) -> None:
        await self.proxy.on_stray_response(response, source)

    # -- what the core answers -------------------------------------------------

    async def _names_us(self, request: SipRequest) -> bool:
        """The Request-URI has no user part (REGISTER never has one, §10.2)
        and names this server or one of its domains."""
        uri = request.uri
        if not isinstance(uri, SipUri) or (uri.user is not None and request.method == "OPTIONS"):
            return False
        host = host_key(uri.host)
        if host in self.own_hosts:
            return True
        current = self.services.router.peek()
        if current is not None:
            return current[1].real_domain(host) is not None
        return await asyncio.to_thread(self._local_domain, host)

    def _local_domain(self, host: str) -> bool:
        return self.services.router.current()[1].real_domain(host) is not None

    async def _current_settings(self) -> ServerSettings:
        """The settings, read again (in a thread) only after a store change."""
        version = self.services.store.version()
        if self._settings is None or self._settings[0] != version:
            self._settings = (version, await asyncio.to_thread(self.services.settings))
        return self._settings[1]

    async def _realm(self, to: str) -> str | None:
        try:
            return registrar.challenge_realm(self.services, to, block=False)
        except registrar.WouldBlock:
            return await asyncio.to_thread(registrar.challenge_realm, self.services, to)

    @staticmethod
    async def _unsupported(request: SipRequest, transaction: ServerTransaction) -> bool:
        required = request.headers.values("Require")
        if not required:
            return False
        answer = response_for(request, 420, "Bad Extension")
        answer.headers.add("Unsupported", ", ".join(required))
        await transaction.respond(answer)
        return True

    @staticmethod
    def _options(request: SipRequest) -> SipResponse:
        answer = response_for(request, 200, "OK")
        answer.headers.add("Allow", ALLOW)
        answer.headers.add("Accept", ACCEPT)
        answer.headers.add("Supported", "")
        return answer

    async def _register(self, request: SipRequest, transaction: ServerTransaction,
                        source: Destination) -> None:
        """§10.3 with digest authentication (services/signals/__init__.py)."""
        to = str(request.to.uri)
        settings = await self._current_settings()
        realm = await self._realm(to)
        if realm is None:
            await transaction.respond(response_for(request, 404, "Not Found"))
            return
        try:
            credentials = _credentials(request, realm)
        except digest.DigestError as exc:
            log.info("SIP REGISTER from %s: bad Authorization: %s", source.address, exc)
            await transaction.respond(response_for(request, 400, "Bad Request"))
            return
        if credentials is None:
            await transaction.respond(self._challenge(request, realm, settings))
            return
        result = await digest.verify(
            self.services, shared_guard(), shared_nonces(), settings,
            digest.DigestRequest(credentials, request.method, str(request.uri), realm,
                                 source.address))
        if result.verdict is digest.Verdict.MALFORMED:
            await transaction.respond(response_for(request, 400, "Bad Request"))
            return
        if result.verdict is not digest.Verdict.OK or result.account is None:
            stale = result.verdict is digest.Verdict.STALE
            await transaction.respond(self._challenge(request, realm, settings, stale=stale))
            return
        try:
            contacts = tuple(_contact(c) for c in _contacts(request))
            expires = request.expires
        except (SipError, ValueError):
            await transaction.respond(response_for(request, 400, "Bad Request"))
            return
        self.registers += 1
        outcome = await registrar.handle_register(self.services, registrar.RegisterRequest(
            to=to, call_id=request.call_id, cseq=request.cseq.number, contacts=contacts,
            account=result.account, expires=expires, transport=source.transport.upper(),
            address=source.address, port=source.port,
            user_agent=request.headers.get("User-Agent") or ""), settings)
        answer = response_for(request, outcome.status, outcome.reason)
        if outcome.status == 423 and outcome.min_expires is not None:
            answer.headers.add("Min-Expires", str(outcome.min_expires))
        if outcome.status == 200:
            for binding in outcome.bindings:
                answer.headers.add("Contact", _binding(binding))
            answer.headers.add("Date", email.utils.formatdate(usegmt=True))
        await transaction.respond(answer)

    def _challenge(self, request: SipRequest, realm: str, settings: ServerSettings, *,
                   stale: bool = False) -> SipResponse:
        answer = response_for(request, 401, "Unauthorized")
        nonce = shared_nonces().issue(realm)
        for value in digest.challenges(realm, nonce, stale=stale,
                                       algorithms=digest.offered(settings)):
            answer.headers.add("WWW-Authenticate", value)
        return answer


def _credentials(request: SipRequest, realm: str) -> digest.Credentials | None:
    """The Authorization for ``realm`` (§22.4: one per realm), None when
    there is none. DigestError when one does not parse."""
    for value in request.headers.fields("Authorization"):
        credentials = digest.parse_credentials(value)
        if credentials.realm.lower() == realm.lower():
            return credentials
    return None


def _contacts(request: SipRequest) -> list[NameAddr | None]:
    parsed = request.contacts
    if parsed.star:
        return [None]
    return list(parsed.addresses)


def _contact(value: NameAddr | None) -> registrar.Contact:
    if value is None:
        return registrar.Contact("*")
    params = value.params
    reg_id = params.get("reg-id")
    return registrar.Contact(
        uri=str(value.uri), expires=value.expires, q=params.get("q"),
        instance=params.raw("+sip.instance"),
        reg_id=int(reg_id) if reg_id is not None and reg_id.isdigit() else None)


def _binding(binding: registrar.Current) -> str:
    out = f"<{binding.contact}>;expires={binding.expires}"
    if binding.q_text is not None:
        out += f";q={binding.q_text}"
    if binding.instance is not None:
        out += f";+sip.instance={binding.instance}"
    if binding.reg_id is not None:
        out += f";reg-id={binding.reg_id}"
    return out
