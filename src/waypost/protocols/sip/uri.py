"""SIP and SIPS URIs (RFC 3261 §19.1) and the other URIs a header may hold.

Every component is kept as written (escapes included), so ``str()`` gives
the URI back byte for byte (but the scheme in lower case and the port
without leading zeros); :meth:`SipUri.__eq__` is the comparison of
§19.1.4 (escapes undone, userinfo case-sensitive, the rest not; a ``user``,
``ttl``, ``method`` or ``maddr`` parameter in one URI only makes them
differ, any other one-sided parameter is ignored; headers must all match).
That comparison is not transitive, so URIs hash on the parts that must be
equal in any case.

Choices: a port must be 1-65535; a host is an IPv4 address, an IPv6
reference checked by :mod:`ipaddress`, or a host name of letters, digits
and hyphens (§25.1, no underscores); a user part may hold ``;``, ``?`` and
``/`` (user-unreserved, RFC 4475 §3.1.1.9), so the part before the one
``@`` is the userinfo.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from waypost.protocols.sip.syntax import Params, SipError, bad

_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
_PARAMCHARS = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")
_HNAME = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})+")
_HVALUE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OTHER_REST = re.compile(r"[!#-;=?-~]+")
"""The part after ``scheme:`` of any other absoluteURI: visible ASCII but
``<``, ``>`` and ``"`` (which would end or confuse a name-addr)."""
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_host(text: str, what: str) -> str:
    """``host`` (§25.1) as written; IPv6 references keep their brackets."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise bad(f"Malformed {what} (IPv6 reference)")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise bad(f"Malformed {what} (IPv6 reference)") from None
        return text
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if not text or not all(_LABEL.fullmatch(label) for label in labels):
        raise bad(f"Malformed {what} (host)")
    return text


def parse_port(text: str, what: str) -> int:
    port = int(text) if _PORT.fullmatch(text) else 0
    if not 0 < port < 65536:
        raise bad(f"Malformed {what} (port)")
    return port


@functools.lru_cache(maxsize=1024)
def host_key(host: str) -> str:
    """A host for comparing: lower case, IP addresses in one form (remembered:
    the same few hosts are compared for every message)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


@dataclass(frozen=True, slots=True, eq=False)
class SipUri:
    """``sip:`` / ``sips:`` URI. ``user`` and ``password`` are as written
    (escaped); ``password`` is ``""`` for ``user:@host``."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=Params)
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(str(self.params))
        if self.headers:
            out += ["?", "&".join(f"{n}={v}" for n, v in self.headers)]
        return "".join(out)

    @property
    def user_text(self) -> str | None:
        """The user part with its escapes undone (``%61lice`` is ``alice``)."""
        return None if self.user is None else unquote(self.user)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return None if value is None else value.lower()

    @property
    def loose_route(self) -> bool:
        """The ``lr`` parameter (§19.1.1, §16.4)."""
        return self.params.has("lr")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    def _key(self) -> tuple[object, ...]:
        user = None if self.user is None else unquote(self.user)
        password = None if self.password is None else unquote(self.password)
        return (self.scheme, user, password, host_key(self.host), self.port)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        """§19.1.4."""
        if not isinstance(other, SipUri):
            return NotImplemented
        if self._key() != other._key():
            return False
        mine, theirs = _param_map(self.params), _param_map(other.params)
        for name in mine.keys() | theirs.keys():
            if name in mine and name in theirs:
                if mine[name] != theirs[name]:
                    return False
            elif name in ("user", "ttl", "method", "maddr"):
                return False
        return _header_map(self.headers) == _header_map(other.headers)


def _param_map(params: Params) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name, value in params:
        found.setdefault(name.lower(), None if value is None else unquote(value).lower())
    return found


def _header_map(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return sorted((unquote(n).lower(), unquote(v).lower()) for n, v in headers)


@dataclass(frozen=True, slots=True)
class OtherUri:
    """A URI of another scheme (``tel:``, ``urn:``, ...), kept as written;
    the session answers ``416 Unsupported URI Scheme`` where it needs SIP."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | OtherUri


@functools.lru_cache(maxsize=4096)
def parse_uri(text: str, what: str = "URI") -> Uri:
    """A SIP/SIPS URI, or any other absoluteURI; else a 400 naming ``what``.
    Remembered (the value is immutable): a proxy reads the same Request-URI,
    Contact and Route texts several times per message."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme) or not _OTHER_REST.fullmatch(rest):
        raise bad(f"Malformed {what}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return OtherUri(scheme, rest)
    try:
        return _parse_sip(scheme, rest)
    except SipError:
        raise bad(f"Malformed {what}") from None


def parse_sip_uri(text: str, what: str = "URI") -> SipUri:
    """A SIP or SIPS URI; another scheme is ``416 Unsupported URI Scheme`` (§8.2.2.1)."""
    uri = parse_uri(text, what)
    if not isinstance(uri, SipUri):
        raise SipError(416, "Unsupported URI Scheme")
    return uri


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not _USER.fullmatch(user) or (password and not _PASSWORD.fullmatch(password)):
            raise bad("Malformed userinfo")
    rest, question, header_text = rest.partition("?")
    headers: list[tuple[str, str]] = []
    if question:
        for item in header_text.split("&"):
            name, equal, value = item.partition("=")
            if not equal or not _HNAME.fullmatch(name) or not _HVALUE.fullmatch(value):
                raise bad("Malformed URI headers")
            headers.append((name, value))
    hostport, *param_texts = rest.split(";")
    params: list[tuple[str, str | None]] = []
    for item in param_texts:
        name, equal, value = item.partition("=")
        if not _PARAMCHARS.fullmatch(name) or (equal and not _PARAMCHARS.fullmatch(value)):
            raise bad("Malformed URI parameter")
        params.append((name, value if equal else None))
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host_text, port_text = hostport[:end], hostport[end:]
        if end == 0 or (port_text and not port_text.startswith(":")):
            raise bad("Malformed host")
        port_text = port_text[1:]
        has_port = bool(hostport[end:])
    else:
        host_text, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
    host = parse_host(host_text, "host")
    port = parse_port(port_text, "URI") if has_port else None
    return SipUri(scheme, host, user, password, port, Params(tuple(params)), tuple(headers))
