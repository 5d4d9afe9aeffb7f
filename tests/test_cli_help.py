"""Every `waypost` command and group explains itself: a help text, and `--help` that exits 0
with a one-line summary and the arguments."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from waypost.cli import table
from waypost.cli.main import cli


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """Every command and group under ``command`` (itself first), with its command path."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def without_help(root: click.Command) -> list[str]:
    return [" ".join(("waypost", *path)) for path, command in walk(root)
            if not (command.help or "").strip()]


TREE = list(walk(cli))


def test_the_tree_holds_every_noun() -> None:
    nouns = {path[0] for path, _ in TREE if path}
    assert {"init", "serve", "domain", "account", "alias", "forwarder", "group", "list",
            "router", "route", "settings", "queue", "mailbox", "rules"} <= nouns
    paths = {path for path, _ in TREE}
    assert {("domain", "alias", "add"), ("domain", "template", "set"),
            ("group", "member", "remove"), ("account", "passwd")} <= paths


def test_every_command_and_group_has_a_help_text() -> None:
    assert without_help(cli) == []


def test_a_command_without_help_is_found() -> None:
    @click.group("bare")
    def bare() -> None:
        """Has help."""

    @bare.command("quiet")
    def quiet() -> None:
        pass

    assert without_help(bare) == ["waypost quiet"]


def test_the_table_refuses_a_verb_without_help() -> None:
    verb = table.Verb("mute", "  ", [table.Arg("address")], lambda svc, address: None)
    with pytest.raises(ValueError, match="mute"):
        table.build(table.Noun("thing", "Things.", [verb]))


@pytest.mark.parametrize("path", [path for path, _ in TREE], ids=lambda p: " ".join(p) or "-")
def test_help_exits_0_with_summary_and_arguments(path: tuple[str, ...]) -> None:
    command = dict(TREE)[path]
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="waypost",
                                terminal_width=100)
    assert result.exit_code == 0, result.output
    usage, *rest = result.output.splitlines()
    assert usage.startswith(f"Usage: {' '.join(('waypost', *path))} ")
    ctx = click.Context(command)
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.make_metavar(ctx) in usage, (param.name, usage)
    summary = " ".join((command.help or "").strip().splitlines()[0].split())
    assert summary in " ".join(" ".join(rest).split()), (summary, rest)
