"""What ``waypost domain`` does beyond the shared verbs: list with object counts, show.

The command lines (arguments, options, help) are in the table, ``cli/directory.py``.
Invariant: ``show`` prints effective settings and marks those not stored in the
domain as ``(default)``; the mail rules are counted, not printed (``waypost rules
show --domain``).
"""

from __future__ import annotations

from waypost.cli.output import keyvalues, line, table
from waypost.cli.table import effective_settings
from waypost.services.container import Services


def list_(svc: Services) -> None:
    rows = []
    for record in svc.directory.list_domains():
        count = len(svc.store.list_objects(record.name))
        rows.append((record.name, "main" if record.is_main else "secondary",
                     list(record.aliases), count))
    table(["domain", "kind", "aliases", "objects"], rows)


def show(svc: Services, name: str) -> None:
    record = svc.directory.get_domain(name)
    stored = svc.directory.domain_settings(record.name)
    effective = svc.directory.effective_domain_settings(record.name)
    rules = effective.pop("MailRules", None)
    keyvalues([
        ("domain", record.name),
        ("kind", "main" if record.is_main else "secondary"),
        ("aliases", list(record.aliases)),
        ("mail rules", f"{len(rules)} (waypost rules show --domain {record.name})"
         if rules else "none"),
    ])
    line()
    effective_settings(effective, stored)
    objects = svc.store.list_objects(record.name)
    if objects:
        line()
        counts: dict[str, int] = {}
        for obj in objects:
            counts[obj.kind] = counts.get(obj.kind, 0) + 1
        keyvalues({_plural(kind): n for kind, n in sorted(counts.items())})


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")
