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


def strip_sip_uri(text: str) -> str:
    """``sip:bob@host;transport=udp?x=y`` -> ``bob@host`` for signal routing."""
    lowered = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    for sep in (";", "?"):
        cut = text.find(sep)
        if cut >= 0:
            text = text[:cut]
    return text


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
