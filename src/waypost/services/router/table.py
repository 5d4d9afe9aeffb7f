"""Router Table text -> compiled table (router.md §2, §3, §5).

The table is compiled once per change: exact records go into hash maps and
wildcard records into a :class:`WildcardIndex` keyed on their literal prefix
and suffix, so a lookup costs a few dictionary probes whatever the size of
the table. ``first match wins`` among wildcard records is kept by comparing
the records' line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from waypost.services.router.address import normalise_domain


class Kind(StrEnum):
    MAIL = "mail"
    SIGNAL = "signal"
    ACCESS = "access"


ALL_KINDS = frozenset(Kind)

_PREFIX = re.compile(r"\s*(relayall|norelay|relay|mail|signal|access)\s*:\s*", re.IGNORECASE)
_KIND_PREFIXES = {"mail": Kind.MAIL, "signal": Kind.SIGNAL, "access": Kind.ACCESS}
_DOMAIN_PATTERN = re.compile(r"^[a-z0-9*_.\-\[\]:]+$")


class TableError(ValueError):
    """A Router Table line that cannot be used; names the line number."""

    def __init__(self, line: int, reason: str, text: str = "") -> None:
        self.line = line
        self.reason = reason
        self.text = text
        super().__init__(f"line {line}: {reason}" + (f": {text.strip()}" if text else ""))


@dataclass(frozen=True, slots=True)
class Record:
    line: int
    text: str
    left: str  # lower-case; address records in canonical form without brackets
    right: str
    is_address: bool
    kinds: frozenset[Kind] = ALL_KINDS
    relay: bool = False  # Relay: or RelayAll:
    no_relay: bool = False

    def applies(self, kind: Kind, trusted: bool) -> bool:
        return kind in self.kinds and (trusted or not self.no_relay)

    def wildcard(self) -> bool:
        return "*" in self.left

    def substitute(self, matched: str) -> str:
        return self.right.replace("*", matched)


class WildcardIndex:
    """Patterns with one ``*`` (``prefix*suffix``), found without a scan.

    Patterns are bucketed by suffix, then by prefix. A lookup tries only the
    suffix and prefix lengths that occur in the table, so its cost depends
    on the length of the name, not on the number of patterns.
    """

    def __init__(self, star_excludes: str = "") -> None:
        # Address patterns: ``*`` never spans the ``@`` (``<report-*>`` is a
        # Main Domain pattern and must not match ``report-x@elsewhere``).
        self._star_excludes = star_excludes
        self._buckets: dict[str, dict[str, list[Record]]] = {}
        self._suffix_lengths: list[int] = []
        self._prefix_lengths: list[int] = []

    def add(self, pattern: str, record: Record) -> None:
        prefix, _, suffix = pattern.partition("*")
        self._buckets.setdefault(suffix, {}).setdefault(prefix, []).append(record)
        if len(suffix) not in self._suffix_lengths:
            self._suffix_lengths.append(len(suffix))
            self._suffix_lengths.sort()
        if len(prefix) not in self._prefix_lengths:
            self._prefix_lengths.append(len(prefix))
            self._prefix_lengths.sort()

    def match(self, name: str, accept: Callable[[Record], bool]) -> tuple[Record, str] | None:
        """The first record (in table order) whose pattern matches ``name``
        and that ``accept`` allows, with the text its ``*`` matched."""
        best: Record | None = None
        best_star = ""
        size = len(name)
        for slen in self._suffix_lengths:
            if slen > size:
                break
            bucket = self._buckets.get(name[size - slen :] if slen else "")
            if bucket is None:
                continue
            for plen in self._prefix_lengths:
                if plen + slen > size:
                    break
                records = bucket.get(name[:plen])
                if records is None:
                    continue
                for record in records:
                    if best is not None and record.line >= best.line:
                        break
                    star = name[plen : size - slen]
                    if self._star_excludes and self._star_excludes in star:
                        break
                    if accept(record):
                        best = record
                        best_star = star
                        break
        return None if best is None else (best, best_star)

    def __len__(self) -> int:
        return sum(len(r) for b in self._buckets.values() for r in b.values())


@dataclass
class CompiledTable:
    """The lookup structure; build it with :func:`compile_table`."""

    records: list[Record] = field(default_factory=list)
    exact_addresses: dict[str, list[Record]] = field(default_factory=dict)
    wild_addresses: WildcardIndex = field(default_factory=lambda: WildcardIndex("@"))
    exact_domains: dict[str, list[Record]] = field(default_factory=dict)
    wild_domains: WildcardIndex = field(default_factory=WildcardIndex)

    def match(
        self, canonical: str, domain: str, kind: Kind, trusted: bool
    ) -> tuple[Record, str] | None:
        """The record for one routing step, in the order of §3.4.

        ``canonical`` is the address in canonical form (lower-case) and
        ``domain`` its domain part (empty for Main Domain addresses).
        """

        def accept(record: Record) -> bool:
            return record.applies(kind, trusted)

        for record in self.exact_addresses.get(canonical, ()):
            if accept(record):
                return record, ""
        found = self.wild_addresses.match(canonical, accept)
        if found:
            return found
        if not domain:
            return None
        for record in self.exact_domains.get(domain, ()):
            if accept(record):
                return record, ""
        return self.wild_domains.match(domain, accept)

    def rewrite(self, record: Record, star: str, local: str) -> str:
        """The address a record turns the current one into (§3.1, §3.2)."""
        right = record.substitute(star)
        return right if record.is_address else f"{local}@{right}"


def _parse_prefixes(line: str, lineno: int, raw: str) -> tuple[str, set[Kind], bool, bool]:
    kinds: set[Kind] = set()
    relay = no_relay = False
    while True:
        m = _PREFIX.match(line)
        if not m:
            break
        word = m.group(1).lower()
        if word in _KIND_PREFIXES:
            kinds.add(_KIND_PREFIXES[word])
        elif word == "norelay":
            no_relay = True
        else:
            relay = True
        line = line[m.end() :]
    if relay and no_relay:
        raise TableError(lineno, "Relay: and NoRelay: cannot be combined", raw)
    return line, kinds, relay, no_relay


def _address_left(inner: str, main_names: Iterable[str]) -> str:
    """Canonical form of an address record's left side; a Main Domain part
    is stripped at load time ([waypost], §1.2)."""
    local, sep, domain = inner.rpartition("@")
    if not sep:
        return inner.lower()
    domain = normalise_domain(domain)
    if domain in main_names:
        return local.lower().replace("@", "%")
    return f"{local.lower().replace('@', '%')}@{domain}"


def parse_line(line: str, lineno: int, main_names: Iterable[str] = ()) -> Record | None:
    """One table line -> a record, None for blank and comment lines."""
    raw = line
    text = line.split(";", 1)[0].strip()
    if not text:
        return None
    body, kinds, relay, no_relay = _parse_prefixes(text, lineno, raw)
    left, sep, right = body.partition("=")
    left, right = left.strip(), right.strip()
    if not sep:
        raise TableError(lineno, "missing '='", raw)
    if not left:
        raise TableError(lineno, "empty left side", raw)
    if not right:
        raise TableError(lineno, "empty right side", raw)
    if any(ch.isspace() for ch in right) or "<" in right or ">" in right or "=" in right:
        raise TableError(lineno, "right side must be one address or domain, without brackets", raw)
    if left.startswith("<") or left.endswith(">"):
        if not (left.startswith("<") and left.endswith(">")) or len(left) < 3:
            raise TableError(lineno, "unbalanced angle brackets on the left side", raw)
        inner = left[1:-1].strip()
        if any(ch.isspace() for ch in inner) or "<" in inner or ">" in inner:
            raise TableError(lineno, "invalid characters in the address", raw)
        left_norm = _address_left(inner, main_names)
        is_address = True
    else:
        left_norm = normalise_domain(left)
        if "@" in left_norm:
            raise TableError(
                lineno, "an address on the left side must be written <in brackets>", raw
            )
        if not _DOMAIN_PATTERN.match(left_norm):
            raise TableError(lineno, "invalid domain name on the left side", raw)
        is_address = False
    if left_norm.count("*") > 1:
        raise TableError(lineno, "at most one '*' is allowed on the left side", raw)
    if "*" in right and "*" not in left_norm:
        raise TableError(lineno, "'*' on the right side needs a '*' on the left side", raw)
    return Record(
        line=lineno,
        text=raw.rstrip("\r\n"),
        left=left_norm,
        right=right,
        is_address=is_address,
        kinds=frozenset(kinds) if kinds else ALL_KINDS,
        relay=relay,
        no_relay=no_relay,
    )


def compile_table(text: str, main_names: Iterable[str] = ()) -> CompiledTable:
    """Compile the whole table or raise :class:`TableError` for its first bad line.

    ``main_names`` are the Main Domain name and its aliases, stripped from
    the left side of address records.
    """
    main = {normalise_domain(n) for n in main_names}
    table = CompiledTable()
    for lineno, line in enumerate(text.splitlines(), start=1):
        record = parse_line(line, lineno, main)
        if record is None:
            continue
        table.records.append(record)
        if record.is_address:
            if record.wildcard():
                table.wild_addresses.add(record.left, record)
            else:
                table.exact_addresses.setdefault(record.left, []).append(record)
        elif record.wildcard():
            table.wild_domains.add(record.left, record)
        else:
            table.exact_domains.setdefault(record.left, []).append(record)
    return table


def cli_escape(text: str) -> str:
    """Table text as one CLI string: lines joined by ``\\e`` (§2)."""
    return "".join(f"{line}\\e" for line in text.splitlines())


def cli_unescape(text: str) -> str:
    return "\n".join(text.split("\\e")).rstrip("\n") + "\n"
