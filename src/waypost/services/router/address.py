"""Address model of router.md §1: parsing into (local part, domain part).

The local part is kept in CGP's *percent form* (``a%b%c``): a local part
that itself holds further hops. Re-splitting moves the text after the last
``%`` into the domain part. Domain parts are compared without case and
without a trailing dot; local parts are kept as written, because they are
passed on to other servers exactly so.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes


class AddressError(ValueError):
    """The text is not an address at all (empty, unbalanced brackets, ...)."""


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str = ""

    def canonical(self) -> str:
        """``local@domain``, or ``local`` alone for a Main Domain address (§3.1)."""
        return f"{self.local}@{self.domain}" if self.domain else self.local

    def __str__(self) -> str:
        return self.canonical()


def normalise_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _unquote_local(local: str) -> str:
    """Remove RFC 5321 quoting so ``"a%b"@x`` routes like ``a%b@x`` (relay tricks)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        out: list[str] = []
        escaped = False
        for ch in local[1:-1]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return local


def _split_last_at(text: str) -> tuple[str, str]:
    """Split at the last ``@`` outside a quoted local part."""
    in_quotes = False
    escaped = False
    last = -1
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quotes:
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == "@" and not in_quotes:
            last = i
    if last < 0:
        return text, ""
    return text[:last], text[last + 1 :]


def to_percent(local: str) -> str:
    """Any ``@`` left in a local part counts as ``%`` ([waypost], §1.1)."""
    return local.replace("@", "%")


@dataclass(frozen=True, slots=True)
class SipTarget:
    """The parts of a ``sip:``/``sips:``/``tel:`` URI that routing reads.

    ``user`` has its %-escapes undone (None: the URI has no user part);
    ``host`` is as written, lower case, IPv6 references with brackets;
    ``params`` maps lower-case URI parameter names to their values
    (``""`` for a flag such as ``lr``)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def address(self) -> str:
        """``user@host`` (the host alone without a user): the routing address."""
        return f"{self.user}@{self.host}" if self.user is not None else self.host


def unescape_user(text: str) -> str:
    """Undo RFC 3261 §19.1.2 %-escapes of a user part.

    A phone that writes CGP's ``user%domain`` form raw (``bob%abc.com``) is
    not escaping anything, so the text is kept as written when undoing the
    escapes would not give valid UTF-8 without control characters."""
    if "%" not in text:
        return text
    try:
        out = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return text
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in out):
        return text
    return out


def sip_target(text: str) -> SipTarget | None:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI (RFC 3261 §19.1.1,
    RFC 3966) for routing; None when ``text`` has none of these schemes
    (``host`` is empty when the URI has none). A name-addr's display name,
    brackets and header parameters are dropped; the password, port,
    parameters and headers are split off (a phone's
    ``sip:alice:pw@domain.dom:5060;transport=tcp`` is ``alice@domain.dom``)."""
    text = text.strip()
    start = text.find("<")
    end = text.find(">", start + 1)
    if start >= 0 and end > start:  # a name-addr: "Alice" <sip:...>;tag=x
        text = text[start + 1 : end].strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        return None
    if scheme == "tel":
        number, _, params = rest.partition(";")
        return SipTarget("tel", unescape_user(number) or None, "", None, _params(params))
    # The user part may hold ';', '?' and '/' (RFC 4475 §3.1.1.9), never '@':
    # everything before the one '@' is the userinfo.
    userinfo, at, hostpart = rest.rpartition("@")
    user: str | None = None
    if at:
        user = unescape_user(userinfo.partition(":")[0])
    hostpart, _, _headers = hostpart.partition("?")
    hostport, _, params = hostpart.partition(";")
    host, port = _host_port(hostport)
    return SipTarget(scheme, user, host.lower(), port, _params(params))


def _host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]``; an IPv6 reference keeps its brackets; a bad port is dropped."""
    if text.startswith("[") and "]" in text:
        end = text.index("]")
        host, port_text = text[: end + 1], text[end + 2 :]
    else:
        host, _sep, port_text = text.partition(":")
    if port_text.isdigit() and 0 < int(port_text) < 65536:
        return host, int(port_text)
    return host, None


def _params(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in text.split(";"):
        if item:
            name, _, value = item.partition("=")
            out.append((name.strip().lower(), value.strip()))
    return tuple(out)


def strip_sip_uri(text: str) -> str:
    """The address a SIP URI is routed as (the one helper for the Router and
    the registrar's address of record): ``sip:bob:pw@host:5060;transport=udp?x=y``
    -> ``bob@host``, %-escapes of the user part undone. Text that is not a
    ``sip:``/``sips:``/``tel:`` URI is returned as it is (a plain address)."""
    target = sip_target(text)
    if target is None:
        return text
    if target.scheme == "tel":
        return target.user or ""
    return target.address()


def _check_characters(text: str) -> None:
    """Control characters never; brackets and white space only inside quotes."""
    in_quotes = False
    for ch in text:
        if ch in "\r\n\0" or (ord(ch) < 32 and ch != "\t"):
            raise AddressError(f"control character in address {text!r}")
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and (ch.isspace() or ch in "<>()"):
            raise AddressError(f"invalid character {ch!r} in address {text!r}")
    if in_quotes:
        raise AddressError(f"unterminated quoted string in {text!r}")


def parse_address(text: str) -> Address:
    """Parse any written form of §1.1 into an :class:`Address`.

    Forms: ``xxx@yyy``, ``<@zzz:xxx@yyy>`` (source route, several hops
    allowed), ``zzz!yyy!xxx`` (UUCP bang path), ``xxx%yyy@zzz`` and ``xxx``.
    """
    text = text.strip()
    if text.startswith("<") or text.endswith(">"):
        if not (text.startswith("<") and text.endswith(">")):
            raise AddressError(f"unbalanced angle brackets in {text!r}")
        text = text[1:-1].strip()
    if not text:
        raise AddressError("empty address")
    _check_characters(text)
    if text.startswith("@"):
        route, sep, rest = text.partition(":")
        if not sep:
            raise AddressError(f"source route without ':' in {text!r}")
        hops = [h.strip().lstrip("@") for h in route.split(",")]
        if any(not h for h in hops):
            raise AddressError(f"empty hop in source route {text!r}")
        if any("@" in h for h in hops):  # a hop is a domain (RFC 5321 §4.1.2 A-d-l)
            raise AddressError(f"'@' inside a hop of source route {text!r}")
        final = parse_address(rest)
        local = final.canonical() if final.domain else final.local
        # Later hops are deeper inside the percent form: @a,@b:x@y -> x%y%b @ a.
        for hop in reversed(hops[1:]):
            local = f"{local}%{hop}"
        return Address(to_percent(local), normalise_domain(hops[0]))
    local, domain = _split_last_at(text)
    if domain or text.endswith("@"):
        if not domain:
            raise AddressError(f"empty domain part in {text!r}")
        if not local:
            raise AddressError(f"empty local part in {text!r}")
        return Address(to_percent(_unquote_local(local)), normalise_domain(domain))
    if "!" in text and not text.startswith('"'):
        parts = text.split("!")
        if any(not p for p in parts):
            raise AddressError(f"empty element in bang path {text!r}")
        *hops, user = parts
        local = user
        for hop in reversed(hops[1:]):
            local = f"{local}%{hop}"
        return Address(local, normalise_domain(hops[0]))
    return Address(_unquote_local(text), "")


def resplit(address: Address) -> Address:
    """Move the text after the last ``%`` of the local part into the domain."""
    local, sep, domain = address.local.rpartition("%")
    if not sep or not local or not domain:
        return address
    return Address(local, normalise_domain(domain))


def ip_literal(domain: str) -> str | None:
    """The IP address named by a domain part (``[1.2.3.4]``, ``1.2.3.4``,
    ``[IPv6:...]``), or None."""
    text = domain
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text.lower().startswith("ipv6:"):
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def ip_queue(ip: str) -> str:
    """How an IP host is written as a queue name: ``[1.2.3.4]``, ``[IPv6:...]``."""
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
