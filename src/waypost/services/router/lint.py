"""Warnings about a Router table that is valid but would break something
(issue 11 point 5). Pure: a compiled table and the Directory snapshot in,
warnings out.

Records are matched before local domains (router.md §4: the table is
consulted at every step before the domain is resolved), so a wildcard
domain record written for personal web sites (``*.company.dom = *@fict``,
router.md §7.8) also rewrites MAIL to an existing server domain such as
``dept1.company.dom``, which then fails. Waypost keeps the spec's order
(changing it would break tables that rely on it, such as relaying a local
domain through ``._via``) and warns instead, naming the line and the
remedy: the ``Access:`` prefix (router.md §7.8 note).
"""

from __future__ import annotations

from dataclasses import dataclass

from waypost.services.router.table import CompiledTable, Kind
from waypost.services.router.view import DirectorySnapshot


@dataclass(frozen=True, slots=True)
class Catch:
    """A wildcard record that would take mail for a server domain."""

    line: int
    record: str
    domain: str
    kind: Kind

    def text(self) -> str:
        return (f"line {self.line} `{self.record}` catches {self.kind.value} for the server "
                f"domain {self.domain} (records come before local domains): write it as "
                f"`Access:{self.record}` if it is meant for web sites only")


def caught_domains(table: CompiledTable, snap: DirectorySnapshot) -> list[Catch]:
    """Wildcard records that match a server domain or domain alias for mail
    or signals (exact records naming a domain are deliberate and not reported)."""
    names = sorted(set(snap.domains) | set(snap.domain_aliases))
    out: list[Catch] = []
    for name in names:
        if name == snap.main_domain:
            continue  # Main Domain addresses lose their domain before matching (§1.2)
        for kind in (Kind.MAIL, Kind.SIGNAL):
            found = table.match(f"postmaster@{name}", name, kind, True)
            if found is None:
                continue
            record, _ = found
            if record.wildcard() and "*" in record.left.rpartition("@")[2]:
                out.append(Catch(record.line, record.text.strip(), name, kind))
                break
    return out
