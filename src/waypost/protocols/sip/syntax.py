"""The lexical pieces of RFC 3261 §25.1 every SIP header parser shares:
tokens, quoted strings, ``;param=value`` lists, comma lists, and the one
exception a SIP parser raises. Pure: no I/O.

Whitespace: after unfolding (wire.py) a header value holds no CR or LF, so
SWS/LWS (§25.1) is any run of SP and HTAB; ``SEMI``, ``EQUAL``, ``COMMA``,
``SLASH`` and ``COLON`` allow it on both sides (RFC 4475 §3.1.1.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from waypost.protocols.sip.headers import Headers
    from waypost.protocols.sip.wire import SipMessage

WSP = " \t"
TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
"""token (§25.1): alphanum and ``-.!%*_+`'~``."""

_GEN_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
"""gen-value when not quoted: a token or a host (``[2001:db8::1]``)."""


class SipError(Exception):
    """Bad input. ``status`` and ``reason`` are the response to send
    (§21.4: 400 with the problem named in the reason phrase, 413, 505,
    513); ``drop`` means nothing may be sent: the message is a response
    (§18.1.2 discards a garbled one) or not SIP at all. ``fatal`` (streams
    only) means the framing is lost: answer if you can, then close the
    connection (§18.3). ``message`` is what could be read of the request
    (None when its start line is unreadable) and ``headers`` its
    well-formed header fields, for
    :func:`~waypost.protocols.sip.wire.error_response`."""

    def __init__(self, status: int | None, reason: str, *, drop: bool = False,
                 fatal: bool = False, message: SipMessage | None = None) -> None:
        super().__init__(f"{status} {reason}" if status else reason)
        self.status = status
        self.reason = reason
        self.drop = drop or status is None
        self.fatal = fatal
        self.message = message
        self.headers: Headers | None = None


def bad(reason: str) -> SipError:
    """A ``400 Bad Request`` naming the problem (§21.4.1)."""
    return SipError(400, reason)


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in WSP:
        pos += 1
    return pos


def quoted_end(text: str, pos: int) -> int:
    """The index after the quoted-string starting at ``text[pos] == '"'``
    (quoted-pair: a backslash escapes any one character, §25.1)."""
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
        elif ch == '"':
            return pos + 1
        else:
            pos += 1
    raise bad("Unterminated quoted string")


def unquote(value: str) -> str:
    """A quoted-string's content with its quoted-pairs undone; other values as they are."""
    if len(value) < 2 or not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_commas(value: str) -> list[str]:
    """The elements of a comma list (§7.3.1), commas inside quoted strings
    and ``<...>`` kept; an empty value is no element, an empty element is
    kept (the typed parsers refuse it: RFC 4475 §3.1.2.1)."""
    if "," not in value:  # the common case, without the scan
        element = value.strip(WSP)
        return [element] if element else []
    if not value.strip(WSP):
        return []
    parts: list[str] = []
    start = pos = 0
    angle = False
    while pos < len(value):
        ch = value[pos]
        if ch == '"' and not angle:
            pos = quoted_end(value, pos)
            continue
        if ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:pos].strip(WSP))
            start = pos + 1
        pos += 1
    parts.append(value[start:].strip(WSP))
    return parts


@dataclass(frozen=True, slots=True)
class Params:
    """``;name[=value]`` parameters in order. Values are kept as written
    (quoted strings with their quotes), so ``str()`` gives them back;
    names compare case-insensitively (§7.3.1)."""

    items: tuple[tuple[str, str | None], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.items)

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(n.lower() == key for n, _ in self.items)

    def raw(self, name: str) -> str | None:
        """The value as written; None when absent or a flag (see :meth:`has`)."""
        key = name.lower()
        for n, v in self.items:
            if n.lower() == key:
                return v
        return None

    def get(self, name: str) -> str | None:
        """The value, a quoted string unquoted."""
        value = self.raw(name)
        return None if value is None else unquote(value)

    def replaced(self, name: str, value: str | None = None) -> Params:
        """These parameters with ``name`` set (in its place, else at the end)."""
        key = name.lower()
        if not self.has(name):
            return Params((*self.items, (name, value)))
        return Params(tuple((n, value) if n.lower() == key else (n, v) for n, v in self.items))

    def without(self, name: str) -> Params:
        key = name.lower()
        return Params(tuple((n, v) for n, v in self.items if n.lower() != key))


def parse_params(text: str, what: str) -> Params:
    """``*( SEMI generic-param )`` (§25.1): ``text`` is what follows the
    main value; anything else in it is a 400 naming ``what``."""
    items: list[tuple[str, str | None]] = []
    pos = skip_ws(text, 0)
    while pos < len(text):
        if text[pos] != ";":
            raise bad(f"Malformed {what}")
        pos = skip_ws(text, pos + 1)
        name = TOKEN.match(text, pos)
        if not name:
            raise bad(f"Malformed {what} (empty parameter)")
        pos = skip_ws(text, name.end())
        value: str | None = None
        if pos < len(text) and text[pos] == "=":
            pos = skip_ws(text, pos + 1)
            if pos < len(text) and text[pos] == '"':
                end = quoted_end(text, pos)
            else:
                match = _GEN_VALUE.match(text, pos)
                if not match:
                    raise bad(f"Malformed {what} (parameter value)")
                end = match.end()
            value = text[pos:end]
            pos = skip_ws(text, end)
        items.append((name.group(), value))
    return Params(tuple(items))
