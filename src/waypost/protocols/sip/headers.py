"""SIP header fields (RFC 3261 §7.3, §20): the ordered field list and the
typed values the registrar and proxy read. Pure: no I/O.

* Names compare case-insensitively; compact forms (§7.3.3 and the IANA
  registry: RFC 3515, 3841, 3892, 4028, 4474, 6665, 8224) are stored under
  their long names, and the names this module knows are stored in their
  usual spelling (``cseq`` is ``CSeq``); others as received.
* :meth:`Headers.values` splits the headers whose grammar is a comma list
  (§7.3.1) on the commas outside quotes and ``<...>``, over every field of
  that name, in order; other headers give one value per field (``Date``
  holds a comma, ``Authorization`` commas between its parameters).
* A display name is kept decoded (its quoted-pairs undone) and written back
  quoted; a name-addr is always written with ``<...>`` (§20.10).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from waypost.protocols.sip.syntax import (
    TOKEN,
    WSP,
    Params,
    SipError,
    bad,
    parse_params,
    quote,
    quoted_end,
    skip_ws,
    split_commas,
    unquote,
)
from waypost.protocols.sip.uri import Uri, parse_host, parse_port, parse_uri

COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type",
    "d": "Request-Disposition", "e": "Content-Encoding", "f": "From", "i": "Call-ID",
    "j": "Reject-Contact", "k": "Supported", "l": "Content-Length", "m": "Contact",
    "n": "Identity-Info", "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To",
    "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}
"""Compact header names (RFC 3261 §7.3.3, and the IANA SIP header registry)."""

LIST_HEADERS = frozenset(name.lower() for name in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
    "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity", "P-Associated-URI",
    "Path", "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Request-Disposition",
    "Require", "Route", "Security-Client", "Security-Server", "Security-Verify",
    "Service-Route", "Supported", "Unsupported", "Via", "Warning",
))
"""Headers whose values are comma lists (§7.3.1; RFC 3261 §20 grammar and extensions)."""

_KNOWN = (
    *COMPACT.values(), "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Authentication-Info", "Authorization", "Call-Info", "Content-Disposition",
    "Content-Language", "CSeq", "Date", "Error-Info", "Expires", "In-Reply-To", "Max-Forwards",
    "Min-Expires", "MIME-Version", "Organization", "Path", "Priority", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To", "Require",
    "Retry-After", "Route", "Server", "Service-Route", "Subscription-State", "Timestamp",
    "Unsupported", "User-Agent", "Warning", "WWW-Authenticate", "RSeq", "RAck",
)
_SPELLING = {name.lower(): name for name in _KNOWN}


def canonical_name(name: str) -> str:
    """The stored spelling of a header name: compact forms expanded."""
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _SPELLING.get(lower, name)


def _key(name: str) -> str:
    """What names are compared by: the canonical name in lower case."""
    lower = name.lower()
    return COMPACT[lower].lower() if lower in COMPACT else lower


class Headers:
    """The header fields of a message in order (several of one name kept).
    Each field is kept with its comparison key, computed once."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []  # (key, name, value)
        for name, value in fields:
            self.add(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(n, v) for _, n, v in self._fields])

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._fields = list(self._fields)
        return new

    def fields(self, name: str) -> list[str]:
        """Every field value of ``name`` (one per header line), in order."""
        key = _key(name)
        return [v for k, _, v in self._fields if k == key]

    def values(self, name: str) -> list[str]:
        """Every value of ``name`` in order: comma lists split (§7.3.1)."""
        found = self.fields(name)
        if _key(name) not in LIST_HEADERS:
            return found
        return [part for value in found for part in split_commas(value)]

    def get(self, name: str) -> str | None:
        key = _key(name)
        return next((v for k, _, v in self._fields if k == key), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append (or with ``first``, put before every other) a field."""
        if not TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"not a header field: {name!r}")
        item = (_key(name), canonical_name(name), value.strip(WSP))
        if first:
            self._fields.insert(0, item)
        else:
            self._fields.append(item)

    def remove(self, name: str) -> int:
        """Drop every field of ``name``; how many there were."""
        key = _key(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != key]
        return before - len(self._fields)

    def set(self, name: str, value: str) -> None:
        """One field of ``name`` with ``value``, where the first one was."""
        key = _key(name)
        at = next((i for i, f in enumerate(self._fields) if f[0] == key), None)
        self.remove(name)
        self.add(name, value)
        if at is not None:
            self._fields.insert(at, self._fields.pop())

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a list header (a proxy removes
        its own Via this way, §16.7 step 3, whether or not it shares a field)."""
        key = _key(name)
        for i, (k, n, v) in enumerate(self._fields):
            if k != key:
                continue
            parts = split_commas(v)
            if len(parts) <= 1:
                del self._fields[i]
            else:
                self._fields[i] = (k, n, ", ".join(parts[1:]))
            return parts[0] if parts else ""
        return None


# --------------------------------------------------------------------------
# Typed values


_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~ \t]*")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr or addr-spec (§20.10, §25.1) with its header parameters."""

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=Params)

    def __str__(self) -> str:
        name = "" if self.display is None else quote(self.display) + " "
        return f"{name}<{self.uri}>{self.params}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        return NameAddr(self.uri, self.display, self.params.replaced(name, value))

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter of a Contact (§20.10): delta-seconds."""
        value = self.params.get("expires")
        return None if value is None else parse_delta(value, "Contact expires parameter")

    @property
    def q(self) -> float | None:
        """The ``q`` parameter of a Contact: a qvalue from 0 to 1 (§20.10)."""
        value = self.params.get("q")
        if value is None:
            return None
        if not re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", value):
            raise bad("Malformed Contact q parameter")
        return float(value)


PARSED_CACHE = 4096
"""Header values whose parse is remembered (:func:`parse_via`,
:func:`parse_name_addr`, :func:`parse_cseq`): a proxied message's Via,
From, To and CSeq are read many times (matching, forwarding, the
transaction keys) and the typed values are immutable, so each text is
parsed once while it is in use. Errors are not remembered."""


@functools.lru_cache(maxsize=PARSED_CACHE)
def parse_name_addr(text: str, what: str) -> NameAddr:
    """``( name-addr / addr-spec ) *( SEMI param )``. In the addr-spec form
    the URI ends at the first ``;`` and may hold no ``?`` or ``,`` (§20:
    such URIs need ``<...>``; RFC 4475 §3.1.2.13)."""
    text = text.strip(WSP)
    display: str | None = None
    if text.startswith('"'):
        end = quoted_end(text, 0)
        display = unquote(text[:end])
        pos = skip_ws(text, end)
        if not text.startswith("<", pos):
            raise bad(f"Malformed {what} (display name)")
    else:
        lead = _DISPLAY_TOKENS.match(text)
        pos = lead.end() if lead else 0
        if text.startswith("<", pos):
            words = text[:pos].split()
            display = " ".join(words) if words else None
        else:
            pos = -1
    if pos >= 0:
        end = text.find(">", pos)
        if end < 0:
            raise bad(f"Malformed {what} (no closing >)")
        uri_text, rest = text[pos + 1 : end], text[end + 1 :]
    else:
        cut = text.find(";")
        uri_text, rest = (text, "") if cut < 0 else (text[:cut].rstrip(WSP), text[cut:])
        if "?" in uri_text or "," in uri_text:
            raise bad(f"Malformed {what} (URI needs <>)")
    return NameAddr(parse_uri(uri_text, what), display, parse_params(rest, what))


@dataclass(frozen=True, slots=True)
class Contacts:
    """The Contact header(s) of a message: ``*`` (§10.2.2) or addresses."""

    star: bool = False
    addresses: tuple[NameAddr, ...] = ()


def parse_contacts(values: list[str]) -> Contacts:
    if "*" in values:
        if len(values) != 1:
            raise bad("Contact * must be the only contact")
        return Contacts(star=True)
    return Contacts(addresses=tuple(parse_name_addr(v, "Contact header field") for v in values))


_SENT_PROTOCOL = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+)"
    r"(?:[ \t]*:[ \t]*([0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm (§20.42, RFC 3581 ``rport``). ``transport`` upper case."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP"
    version: str = "2.0"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.version}/{self.transport} {self.host}{port}{self.params}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return None if value is None else int(value)

    @property
    def has_rport(self) -> bool:
        """``rport`` is present, as a flag (a request asking for it) or a value."""
        return self.params.has("rport")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return None if value is None else int(value)

    def with_param(self, name: str, value: str | None = None) -> Via:
        return Via(self.transport, self.host, self.port, self.params.replaced(name, value),
                   self.protocol, self.version)

    def received_from(self, address: str, port: int) -> Via:
        """This Via as a server stamps it on a request from ``address``:
        ``received`` when the sent-by host is a name or another address
        (§18.2.1), and with ``rport`` asked for, its value and ``received``
        in any case (RFC 3581 §4)."""
        same = _same_address(self.host.removeprefix("[").removesuffix("]"), address)
        via = self
        if self.has_rport:
            via = via.with_param("rport", str(port))
        if not same or self.has_rport:
            via = via.with_param("received", address)
        return via


@functools.lru_cache(maxsize=1024)
def _same_address(host: str, address: str) -> bool:
    """Whether a sent-by host is the IP address ``address`` (remembered: a
    phone or peer sends from the same address again and again)."""
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(address)
    except ValueError:
        return False


@functools.lru_cache(maxsize=PARSED_CACHE)
def parse_via(text: str) -> Via:
    match = _SENT_PROTOCOL.match(text.strip(WSP))
    if not match:
        raise bad("Malformed Via header field")
    protocol, version, transport, host, port = match.groups()
    params = parse_params(text.strip(WSP)[match.end() :], "Via header field")
    via = Via(transport.upper(), parse_host(host, "Via header field"),
              None if port is None else parse_port(port, "Via header field"),
              params, protocol.upper(), version)
    _check_via_params(via)
    return via


def _check_via_params(via: Via) -> None:
    """The values §20.42 and RFC 3581 give a grammar to."""
    p = via.params
    try:
        if p.has("ttl"):
            parse_delta(p.raw("ttl") or "", "Via ttl", 255)
        if p.raw("rport") is not None:
            parse_port(p.raw("rport") or "", "Via rport")
        received = p.raw("received")
        if p.has("received"):
            try:  # an IP address (§20.42), bracketed or not (RFC 5118 §4.5)
                ipaddress.ip_address((received or "").removeprefix("[").removesuffix("]"))
            except ValueError:
                raise bad("Malformed Via received") from None
        if p.has("maddr"):
            parse_host(p.raw("maddr") or "", "Via maddr")
        if p.has("branch") and not TOKEN.fullmatch(p.raw("branch") or ""):
            raise bad("Malformed Via branch")
    except SipError:
        raise bad("Malformed Via header field") from None


@dataclass(frozen=True, slots=True)
class CSeq:
    """§20.16: a sequence number below 2**32 and the method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@functools.lru_cache(maxsize=PARSED_CACHE)
def parse_cseq(text: str) -> CSeq:
    match = re.fullmatch(r"[ \t]*([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*", text)
    if not match or int(match.group(1)) >= 2**32:
        raise bad("Malformed CSeq header field")
    return CSeq(int(match.group(1)), match.group(2))


def parse_delta(text: str, what: str, most: int = 2**32 - 1) -> int:
    """delta-seconds and other small decimal counts; a value beyond ``most``
    is a 400 (RFC 4475 §3.1.2.4 allows either that or a default)."""
    text = text.strip(WSP)
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > most:
        raise bad(f"Malformed {what}")
    return int(text)


def parse_call_id(text: str) -> str:
    """callid = word [ "@" word ] (§25.1): visible ASCII, no spaces."""
    if not re.fullmatch(r"[!-~]+", text) or text.count("@") > 1:
        raise bad("Malformed Call-ID header field")
    return text
