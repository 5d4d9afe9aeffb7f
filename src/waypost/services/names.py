"""Validation and normalisation of Directory names (domains-accounts.md §3.1).

Object names keep the spelling they were written with and are compared
case-insensitively; domain names are stored lower-case, in ASCII (IDNA), with
no trailing dot, because the Router compares them that way.
"""

from __future__ import annotations

import ipaddress
import re

MAX_OBJECT_NAME = 128
MAX_DOMAIN_NAME = 253

# Characters with routing meaning (router.md): never part of an object name.
_ROUTING_CHARS = "%@#+~/"
_OBJECT_RE = re.compile(r"[A-Za-z0-9_.-]+")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class DirectoryError(Exception):
    """A Directory request refused, with one human-readable line.

    Messages name the thing quoted and say why, e.g.
    ``invalid name 'a@b': '@' is not allowed in object names``.
    """


def object_name(name: str) -> str:
    """Check an account/alias/forwarder/group/list name; return it as written."""
    if not isinstance(name, str) or not name:
        raise DirectoryError("object name must not be empty")
    for ch in _ROUTING_CHARS:
        if ch in name:
            raise DirectoryError(
                f"invalid name {name!r}: {ch!r} is not allowed in object names"
                " (it has a routing meaning)"
            )
    if not _OBJECT_RE.fullmatch(name):
        bad = next(ch for ch in name if not _OBJECT_RE.fullmatch(ch))
        raise DirectoryError(
            f"invalid name {name!r}: {bad!r} is not allowed"
            " (use letters, digits, '_', '-' and '.')"
        )
    if name[0] == "." or name[-1] == ".":
        raise DirectoryError(f"invalid name {name!r}: it may not start or end with '.'")
    if len(name) > MAX_OBJECT_NAME:
        raise DirectoryError(
            f"invalid name {name[:20]!r}...: longer than {MAX_OBJECT_NAME} characters"
        )
    return name


def domain_name(name: str) -> str:
    """Return the canonical (lower-case ASCII, no trailing dot) domain name."""
    if not isinstance(name, str):
        raise DirectoryError("domain name must be text")
    text = name.strip().rstrip(".")
    if not text:
        raise DirectoryError("domain name must not be empty")
    if "" in text.split("."):
        raise DirectoryError(f"invalid domain name {name!r}: empty label")
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise DirectoryError(f"invalid domain name {name!r}: {exc}") from None
    if len(ascii_name) > MAX_DOMAIN_NAME:
        raise DirectoryError(f"invalid domain name {name!r}: longer than {MAX_DOMAIN_NAME}")
    if _is_ip(ascii_name):
        raise DirectoryError(f"invalid domain name {name!r}: an IP address is not a domain")
    for label in ascii_name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise DirectoryError(
                f"invalid domain name {name!r}: label {label!r} must be 1-63 letters,"
                " digits or '-', not starting or ending with '-'"
            )
    return ascii_name


def split_address(address: str) -> tuple[str, str | None]:
    """Split ``name@domain`` into (name, domain); plain ``name`` gives (name, None).

    Only the Directory's own address form; routing forms (``%``, source
    routes) are the Router's business.
    """
    if not isinstance(address, str) or not address.strip():
        raise DirectoryError("address must not be empty")
    text = address.strip()
    if text.count("@") > 1:
        raise DirectoryError(f"invalid address {address!r}: more than one '@'")
    name, at, domain = text.partition("@")
    if at and not domain:
        raise DirectoryError(f"invalid address {address!r}: empty domain part")
    if not name:
        raise DirectoryError(f"invalid address {address!r}: empty name part")
    return object_name(name), (domain_name(domain) if at else None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
