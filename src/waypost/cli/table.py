"""The machinery that turns the table of Directory nouns (``cli/directory.py``) into click.

A ``Noun`` is a click group; each ``Verb`` is one command: its name, help text,
arguments and options, and what it runs. The builders here (``change``,
``listing``, ``showing``, ``settings``, ``dictionary``) make the verbs that
every noun shares; a verb that fits none of them names its own function.

Invariants: every generated command takes ``--data`` first, then its
arguments and options in table order, so the command lines stay those of the
hand-written commands they replace; arguments are converted (``KEY VALUE``
pairs, member lists) before the store is opened, so a usage error is exit
status 2 whatever the data directory holds; every command and group has a
help text (a table entry without one is refused when the tree is built);
a Directory refusal is one ``error:`` line and status 1 (``services()``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import click

from waypost.cli.common import data_param, pairs, services
from waypost.cli.output import keyvalues, line, table
from waypost.services.container import Services
from waypost.services.directory import Directory


class Record(Protocol):
    """What the CLI reads of a Directory object (the store's ``ObjectRecord``)."""

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


Field = Callable[[Record], Any]
Run = Callable[..., None]


@dataclass(frozen=True)
class Arg:
    """A positional argument. ``kind``: one value, ``optional``, ``many`` (a list, maybe
    empty) or ``pairs`` (``KEY VALUE [KEY VALUE ...]``, given to the Directory as a dict)."""

    name: str
    kind: Literal["one", "optional", "many", "pairs"] = "one"

    def param(self) -> click.Argument:
        if self.kind == "optional":
            return click.Argument([self.name], required=False)
        if self.kind == "many":
            return click.Argument([self.name], nargs=-1)
        if self.kind == "pairs":
            return click.Argument([self.name], nargs=-1, required=True,
                                  metavar="KEY VALUE [KEY VALUE ...]")
        return click.Argument([self.name])

    def convert(self, value: Any) -> Any:
        if self.kind == "pairs":
            return pairs(value)
        if self.kind == "many":
            return list(value)
        return value


@dataclass(frozen=True)
class Opt:
    """An option: ``--NAME VALUE``, or a flag."""

    flag: str
    help: str
    is_flag: bool = False
    required: bool = False

    def param(self) -> click.Option:
        if self.is_flag:
            return click.Option([self.flag], is_flag=True, help=self.help)
        return click.Option([self.flag], required=self.required, help=self.help)


@dataclass(frozen=True)
class Verb:
    """One command. ``run`` is called as ``run(svc, **arguments)`` inside ``services()``;
    with ``opens=False`` as ``run(**arguments)``, for a command that must ask something
    (a password) before the store is opened."""

    name: str
    help: str
    args: Sequence[Arg]
    run: Run
    opts: Sequence[Opt] = ()
    opens: bool = True


@dataclass(frozen=True)
class Noun:
    """A group of verbs, possibly with groups of its own (``domain alias ...``)."""

    name: str
    help: str
    verbs: Sequence[Verb]
    groups: Sequence[Noun] = ()


# --- building click commands ------------------------------------------------------

def build(noun: Noun) -> click.Group:
    """The click group of ``noun`` with a command per verb and a group per sub-noun."""
    _require_help(noun.name, noun.help)
    group = click.Group(noun.name, help=noun.help)
    for verb in noun.verbs:
        group.add_command(command(verb))
    for sub in noun.groups:
        group.add_command(build(sub))
    return group


def command(verb: Verb) -> click.Command:
    """One click command; ``--data`` comes first, as on every hand-written command."""
    _require_help(verb.name, verb.help)
    own: list[click.Parameter] = [arg.param() for arg in verb.args]
    own += [opt.param() for opt in verb.opts]
    order = [param.name for param in own]  # click passes them in command-line order
    converters = {arg.name: arg.convert for arg in verb.args}

    def callback(**given: Any) -> None:
        values = {k: converters.get(k, _same)(given[k]) for k in order if k is not None}
        if not verb.opens:
            verb.run(**values)
            return
        with services() as svc:
            verb.run(svc, **values)

    return click.Command(verb.name, callback=callback, params=[data_param(), *own],
                         help=verb.help)


def _same(value: Any) -> Any:
    return value


def _require_help(name: str, text: str) -> None:
    if not text.strip():
        raise ValueError(f"the CLI command {name!r} has no help text")


# --- the verbs every noun shares ----------------------------------------------------

class _Messages(string.Formatter):
    """``str.format`` with ``!l`` (lower case, as the Directory stores names) and
    ``!n`` (how many) conversions, so the table's messages stay one string each."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "l":
            return str(value).lower()
        if conversion == "n":
            return len(value)
        return super().convert_field(value, conversion)


_MESSAGES = _Messages()


def change(name: str, help: str, method: Callable[..., Any], args: Sequence[Arg],
           done: str, opts: Sequence[Opt] = ()) -> Verb:
    """Call ``method`` with the arguments and options in order, then print ``done``
    formatted with them (and ``result``, what the method returned)."""

    def run(svc: Services, **values: Any) -> None:
        result = method(svc.directory, *values.values())
        line(_MESSAGES.format(done, result=result, **values))

    return Verb(name, help, args, run, opts)


def listing(help: str, method: Callable[[Directory, str], Iterable[Record]],
            columns: Sequence[tuple[str, Field]], empty: str) -> Verb:
    """``list [DOMAIN]``: a table of the objects of DOMAIN (the Main Domain when omitted)."""

    def run(svc: Services, domain: str | None) -> None:
        domain = domain or svc.directory.main_domain()
        table([header for header, _ in columns],
              [[cell(record) for _, cell in columns] for record in method(svc.directory, domain)],
              empty=empty.format(domain=domain))

    return Verb("list", help, [Arg("domain", "optional")], run)


def showing(help: str, arg: str, method: Callable[[Directory, str], Record],
            fields: Sequence[tuple[str, Field]], *, with_data: bool = False) -> Verb:
    """``show NAME``: the object's fields (and with ``with_data`` all of its data)."""

    def run(svc: Services, **values: str) -> None:
        record = method(svc.directory, values[arg])
        rows = [(label, cell(record)) for label, cell in fields]
        keyvalues(rows + list(record.data.items()) if with_data else rows)

    return Verb("show", help, [Arg(arg)], run)


def settings(help: str, arg: str, method: Callable[[Directory, str, dict[str, str]], Any],
             effective: Callable[[Directory, str], Mapping[str, Any]], *,
             canonical: bool = False) -> Verb:
    """``set NAME KEY VALUE ...``: change settings, then print each changed one as now in
    force (``default`` when inherited); ``canonical`` prints the key as the Directory
    spells it rather than as typed."""

    def run(svc: Services, values: dict[str, str], **target: str) -> None:
        method(svc.directory, target[arg], values)
        now = effective(svc.directory, target[arg])
        for key in values:
            if canonical:
                key = next((k for k in now if k.lower() == key.lower()), key)
            line(f"{key} = {now.get(key, 'default')}")

    return Verb("set", help, [Arg(arg), Arg("values", "pairs")], run)


def dictionary(what: str, getter: Callable[[Directory, str], Mapping[str, Any]],
               setter: Callable[[Directory, str, dict[str, Any]], Any]) -> list[Verb]:
    """``show NAME`` and ``set NAME KEY VALUE ...`` for one of a domain's dictionaries;
    a VALUE that is JSON (a list or an object) is stored as such."""

    def show(svc: Services, name: str) -> None:
        values = getter(svc.directory, name)
        if values:
            keyvalues(values)
        else:
            line(f"({what} is empty)")

    def set_(svc: Services, name: str, values: dict[str, str]) -> None:
        setter(svc.directory, name, {k: _json_or_text(v) for k, v in values.items()})
        keyvalues(getter(svc.directory, name))

    return [
        Verb("show", f"Show the domain's {what}.", [Arg("name")], show),
        Verb("set", f"Change the domain's {what}; a VALUE that is JSON (a list or object) is "
             "stored as such; 'default' removes the key.",
             [Arg("name"), Arg("values", "pairs")], set_),
    ]


def _json_or_text(value: str) -> object:
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def effective_settings(effective: Mapping[str, Any], stored: Iterable[str]) -> None:
    """The settings in force, those not stored on the object itself marked ``(default)``."""
    own = set(stored)
    table(["setting", "value", ""],
          [(k, v, "" if k in own else "(default)") for k, v in effective.items()])


# --- fields of records ----------------------------------------------------------------

def name(record: Record) -> str:
    return record.name


def address(record: Record) -> str:
    return f"{record.name}@{record.domain}"


def data(key: str, default: Any = "") -> Field:
    """The value of ``key`` in the record's data (``default`` when absent)."""
    return lambda record: record.data.get(key, default)
