"""``waypost rules show|set`` at the three levels: the textual form and JSON,
and a bad rule set refused with the rule's name, the position and the reason
while the rules in force stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from waypost.cli.main import cli
from waypost.services.container import Services, open_services
from waypost.services.rules import book
from waypost.services.rules.model import Level

COPY = """( 9, "Copy outgoing",
  ( ("Source", "in", "trusted,authenticated") ),
  ( ("Store in", "~security/outgoing") ) )"""

JUNK = """(
  ( 5, "junk",
    ( ("Header Field", "is", "X-Spam-Flag: YES") ),
    ( ("Store in", "Junk"),
      ("Discard") ) ),
  ( 3, "boss",
    ( ("From", "is", "boss@*") ),
    ( ("Mark", "Flagged") ) )
)
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    services = open_services(tmp_path / "var", create=True)
    services.directory.init_server("main.dom")
    services.directory.create_account("alice")
    services.directory.create_domain("other.dom")
    services.directory.create_account("carol@other.dom")
    services.close()
    return tmp_path / "var"


@pytest.fixture
def wp(data: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, code: int = 0) -> Result:
        result = runner.invoke(cli, ["--data", str(data), *args], input=input)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    return invoke


def stored(data: Path, level: Level, target: str | None = None) -> list:
    services: Services = open_services(data)
    try:
        return book.load(services, level, target)
    finally:
        services.close()


def test_server_rules_set_and_show(wp, data: Path) -> None:
    assert wp("rules", "show").output == "()\n"
    out = wp("rules", "set", "-", input=COPY).output
    assert out.strip() == "server-wide rules set: 1 rule (1 active)"
    shown = wp("rules", "show").output
    assert shown == (
        '(\n  ( 9, "Copy outgoing",\n'
        '    ( ("Source", "in", "trusted,authenticated") ),\n'
        '    ( ("Store in", "~security/outgoing") ) )\n)\n'
    )
    assert [r.name for r in stored(data, Level.SERVER)] == ["Copy outgoing"]


def test_account_rules_from_a_file_round_trip(wp, data: Path, tmp_path: Path) -> None:
    path = tmp_path / "rules.txt"
    path.write_text(JUNK, encoding="utf-8")
    out = wp("rules", "set", "--account", "alice", str(path)).output
    assert "rules of account alice@main.dom set: 2 rules (2 active)" in out
    shown = wp("rules", "show", "--account", "alice@main.dom").output
    assert shown == JUNK
    again = wp("rules", "set", "--account", "alice", "-", input=shown).output
    assert "2 rules" in again
    assert wp("rules", "show").output == "()\n"  # the server's rules are apart


def test_domain_rules_and_json(wp, data: Path) -> None:
    wp(
        "rules",
        "set",
        "--domain",
        "other.dom",
        "-",
        input='(5, "archive", (), (("Store in", "~carol/archive")))',
    )
    data_out = json.loads(wp("rules", "show", "--domain", "other.dom", "--json").output)
    assert data_out == [
        {
            "priority": 5,
            "name": "archive",
            "conditions": [],
            "actions": [["Store in", "~carol/archive"]],
        }
    ]
    data_out[0]["priority"] = 10
    data_out.append(
        {
            "priority": 0,
            "name": "off",
            "conditions": [["Subject", "is", "x"]],
            "actions": [["Discard"]],
        }
    )
    out = wp(
        "rules", "set", "--domain", "OTHER.dom", "--json", "-", input=json.dumps(data_out)
    ).output
    assert "rules of domain other.dom set: 2 rules (1 active)" in out
    rules = stored(data, Level.DOMAIN, "other.dom")
    assert [(r.priority, r.name) for r in rules] == [(10, "archive"), (0, "off")]
    shown = wp("rules", "show", "--domain", "other.dom").output
    assert "/* Highest */" in shown and "/* Inactive */" in shown
    # JSON is recognised without --json too
    wp("rules", "set", "--domain", "other.dom", "-", input="[]")
    assert stored(data, Level.DOMAIN, "other.dom") == []


def test_an_invalid_rule_is_refused_and_the_old_rules_stay(wp, data: Path) -> None:
    wp("rules", "set", "--account", "alice", "-", input=JUNK)
    bad = JUNK.replace('("From", "is", "boss@*")', '("From", "matches", "boss@*")')
    result = wp("rules", "set", "--account", "alice", "-", input=bad, code=1)
    assert result.output.strip() == (
        'error: rules not changed: rule 2 "boss", condition 1 (line 7, column 7): '
        "unknown operation 'matches'; use one of: is, is not, in, not in, greater than, "
        "less than"
    )
    assert wp("rules", "show", "--account", "alice").output == JUNK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '(9, "x", (), (("Store in", "Junk")))',
            'rule 1 "x", action 1 (line 1, column 15): server-wide rules store only into a full '
            "foreign mailbox name",
        ),
        (
            '(9, "x", (("Subject", "is", "a"), ("Existing Mailbox", "is", "Junk")), (("Discard")))',
            "rule 1 \"x\", condition 2 (line 1, column 35): 'Existing Mailbox' is a condition of "
            "domain and account rules only",
        ),
        (
            '((9, "x", (), (("Discard")))\n (9, "y", (), (("Discard"))))',
            "line 2, column 2: expected ',' or ')', found '('",
        ),
        (
            '[{"priority": 9, "name": "j", "conditions": [], "actions": [["Explode"]]}]',
            "rule 1 \"j\", action 1: unknown action 'Explode'",
        ),
    ],
)
def test_refusals_name_rule_position_and_reason(wp, data: Path, text: str, expected: str) -> None:
    wp("rules", "set", "-", input=COPY)
    result = wp("rules", "set", "-", input=text, code=1)
    assert result.output.startswith(f"error: rules not changed: {expected}"), result.output
    assert [r.name for r in stored(data, Level.SERVER)] == ["Copy outgoing"]


def test_unknown_targets_and_usage(wp) -> None:
    assert "does not exist" in wp("rules", "show", "--account", "nobody", code=1).output
    assert "does not exist" in wp("rules", "show", "--domain", "no.dom", code=1).output
    assert (
        "not both"
        in wp("rules", "show", "--domain", "main.dom", "--account", "alice", code=2).output
    )
    assert "cannot read" in wp("rules", "set", "/nonexistent/file", code=1).output


def test_rules_go_with_a_renamed_account(wp, data: Path) -> None:
    wp("rules", "set", "--account", "alice", "-", input=JUNK)
    wp("account", "rename", "alice", "alicia")
    assert wp("rules", "show", "--account", "alicia").output == JUNK


def test_the_real_command_has_the_rules_noun(data: Path) -> None:
    env = dict(os.environ)
    env.pop("WAYPOST_DATA", None)
    proc = subprocess.run(
        [sys.executable, "-m", "waypost", "--data", str(data), "rules", "set", "-"],
        input=COPY,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "waypost", "--data", str(data), "rules", "show", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert json.loads(proc.stdout)[0]["name"] == "Copy outgoing"
