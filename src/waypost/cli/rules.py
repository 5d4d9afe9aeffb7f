"""``waypost rules show|set``: server-wide, domain and account mail rules.

The text is the CGP textual form of rules.md §2.1 (what ``show`` prints,
``set`` reads back); ``--json`` prints JSON, and ``set`` reads JSON when the
text starts with ``[`` or ``{``. A refused rule set names the rule, the
position and the reason, and changes nothing. The CLI acts as an
administrator: ``RulesAllowed`` does not limit it (rules.md §5.1).
"""

from __future__ import annotations

import json
import sys

import click

from waypost.cli.common import data_option, read_text_argument, services
from waypost.cli.output import fail, line
from waypost.services.rules import book
from waypost.services.rules.model import Level, RuleError
from waypost.services.rules.text import (
    format_rules,
    parse_any,
    rules_from_json,
    rules_to_json,
)


def _level(domain: str | None, account: str | None) -> tuple[Level, str | None]:
    if domain and account:
        raise click.UsageError("give --domain or --account, not both")
    if domain:
        return Level.DOMAIN, domain
    if account:
        return Level.ACCOUNT, account
    return Level.SERVER, None


def _what(level: Level, target: str) -> str:
    return "server-wide rules" if level is Level.SERVER else f"rules of {level.value} {target}"


@click.group("rules")
def rules_group() -> None:
    """Automated mail rules: server-wide (no option), --domain D or --account A."""


@rules_group.command("show")
@data_option
@click.option("--domain", metavar="D", help="the rules of domain D")
@click.option("--account", metavar="A", help="the rules of account A (name or name@domain)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def show(domain: str | None, account: str | None, as_json: bool) -> None:
    """Print the rules in the textual form (or JSON)."""
    level, target = _level(domain, account)
    with services() as svc:
        book.target_of(svc, level, target)  # an unknown domain or account is an error
        rules = book.load(svc, level, target)
    if as_json:
        sys.stdout.write(json.dumps(rules_to_json(rules), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(format_rules(rules))


@rules_group.command("set")
@data_option
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--domain", metavar="D", help="the rules of domain D")
@click.option("--account", metavar="A", help="the rules of account A (name or name@domain)")
@click.option("--json", "as_json", is_flag=True, help="FILE is JSON (also detected by '[' / '{')")
def set_(file: str, domain: str | None, account: str | None, as_json: bool) -> None:
    """Replace the rules with those in FILE ('-' reads stdin); a bad rule set
    is refused with the rule's name, the position and the reason, and the
    rules in force stay."""
    level, target = _level(domain, account)
    text = read_text_argument(file)
    with services() as svc:
        owner = book.target_of(svc, level, target)
        try:
            if as_json:
                rules = rules_from_json(text, level)
            else:
                rules = parse_any(text, level)
            saved = book.save(svc, level, owner, rules)
        except RuleError as exc:
            fail(f"rules not changed: {exc}")
        active = sum(1 for r in saved if r.active)
        count = f"{len(saved)} rule{'' if len(saved) == 1 else 's'}"
        line(f"{_what(level, owner)} set: {count} ({active} active)")


COMMANDS = [rules_group]
