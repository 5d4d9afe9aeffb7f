"""Automated Rules as data (rules.md §2, §4, §5): rules, conditions, actions.

A rule is ``(priority, name, conditions, actions)``; this module knows every
Data item, Operation and Action name of the spec, their canonical spelling
(names are matched case-insensitively), which level may use which, and checks
a rule set before it is stored, so a bad rule never replaces the rules in
force. Errors are :class:`RuleError`: the rule's name, the position and the
reason.

Priorities: ``Inactive`` = 0, ``1`` ... ``9``, ``Highest`` = 10 [waypost].
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    SERVER = "server"
    DOMAIN = "domain"
    ACCOUNT = "account"


INACTIVE = 0
HIGHEST = 10
PRIORITY_NAMES = {INACTIVE: "Inactive", HIGHEST: "Highest"}


def priority_name(priority: int) -> str:
    return PRIORITY_NAMES.get(priority, str(priority))


def parse_priority(value: object) -> int:
    """``0``..``10``, ``Inactive``, ``Highest`` -> the number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid priority {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        for number_, name in PRIORITY_NAMES.items():
            if text.lower() == name.lower():
                return number_
        try:
            number = int(text.removeprefix("#"))
        except ValueError:
            raise ValueError(
                f"invalid priority {value!r}: use 0 (Inactive), 1 to 9 or 10 (Highest)"
            ) from None
    if not INACTIVE <= number <= HIGHEST:
        raise ValueError(f"invalid priority {value!r}: use 0 (Inactive), 1 to 9 or 10 (Highest)")
    return number


# -- operations ---------------------------------------------------------------

IS, IS_NOT, IN, NOT_IN, GREATER, LESS = (
    "is",
    "is not",
    "in",
    "not in",
    "greater than",
    "less than",
)
OPERATIONS = (IS, IS_NOT, IN, NOT_IN, GREATER, LESS)
NEGATIVE = frozenset({IS_NOT, NOT_IN})
NUMERIC = frozenset({GREATER, LESS})


# -- data ---------------------------------------------------------------------


class Kind(StrEnum):
    """How a Data item's value is shaped (rules.md §3, §3.1)."""

    SINGLE = "single"  # one value or missing
    MULTI = "multi"  # several values, met if one matches (negations: if none does)
    ANY = "any"  # "Any X": at least one element satisfies the operation
    EACH = "each"  # "Each X": every element does, and there is one


class ValueType(StrEnum):
    TEXT = "text"
    SIZE = "size"
    TIME = "time"
    DATE = "date"
    BOOL = "bool"
    DAY = "day"
    IP = "ip"
    MAILBOX = "mailbox"
    PREFERENCE = "preference"


@dataclass(frozen=True, slots=True)
class DataSpec:
    name: str
    kind: Kind
    type: ValueType = ValueType.TEXT
    levels: frozenset[Level] = frozenset(Level)
    supported: bool = True  # False: accepted, but the value is always missing


_ALL = frozenset(Level)
_SERVER = frozenset({Level.SERVER})
_LOCAL = frozenset({Level.DOMAIN, Level.ACCOUNT})

DATA: tuple[DataSpec, ...] = (
    DataSpec("From", Kind.SINGLE),
    DataSpec("Sender", Kind.SINGLE),
    DataSpec("Return-Path", Kind.SINGLE),
    DataSpec("To", Kind.MULTI),
    DataSpec("Cc", Kind.MULTI),
    DataSpec("Any To or Cc", Kind.ANY),
    DataSpec("Each To or Cc", Kind.EACH),
    DataSpec("Reply-To", Kind.SINGLE),
    DataSpec("'From' Name", Kind.SINGLE),
    DataSpec("Subject", Kind.SINGLE),
    DataSpec("Message-ID", Kind.SINGLE),
    DataSpec("Message Size", Kind.SINGLE, ValueType.SIZE),
    DataSpec("Header Field", Kind.MULTI),
    DataSpec("Any Recipient", Kind.ANY),
    DataSpec("Each Recipient", Kind.EACH),
    DataSpec("Human Generated", Kind.SINGLE, ValueType.BOOL),
    DataSpec("Time Of Day", Kind.SINGLE, ValueType.TIME),
    DataSpec("Current Date", Kind.SINGLE, ValueType.DATE),
    DataSpec("Current Day", Kind.SINGLE, ValueType.DAY),
    DataSpec("Preference", Kind.SINGLE, ValueType.PREFERENCE),
    DataSpec("FreeBusy", Kind.SINGLE, supported=False),
    DataSpec("Security", Kind.MULTI),
    DataSpec("Existing Mailbox", Kind.MULTI, ValueType.MAILBOX, _LOCAL),
    DataSpec("Source", Kind.MULTI),
    DataSpec("Submit Address", Kind.SINGLE, ValueType.IP),
    DataSpec("Any Route", Kind.ANY, levels=_SERVER),
    DataSpec("Each Route", Kind.EACH, levels=_SERVER),
)
DATA_BY_NAME = {d.name.lower(): d for d in DATA}
DATA_ALIASES = {
    "from name": "'From' Name",
    "message size": "Message Size",
    "header": "Header Field",
    "return path": "Return-Path",
}

SOURCES = ("local", "client", "authenticated", "trusted", "SMTP", "LIST", "RULES")


# -- actions ------------------------------------------------------------------


class ParamKind(StrEnum):
    NONE = "none"  # no parameter
    TEXT = "text"
    MAILBOX = "mailbox"
    ADDRESSES = "addresses"
    FLAGS = "flags"
    HEADERS = "headers"
    COMMAND = "command"


class Use(StrEnum):
    """What ``RulesAllowed`` (rules.md §5.1) a user needs for an action."""

    FILTER = "filter"  # Filter Only: store, mark, discard, stop, headers, log
    SEND = "send"  # All But Exec: sends mail (or other notifications)
    EXEC = "exec"  # runs a program: server administrators only


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    param: ParamKind
    use: Use = Use.FILTER
    supported: bool = True  # False: accepted and stored, logged and skipped when run
    stops: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("Store in", ParamKind.MAILBOX),
    ActionSpec("Mark", ParamKind.FLAGS),
    ActionSpec("Add Header", ParamKind.HEADERS),
    ActionSpec("Tag Subject", ParamKind.TEXT),
    ActionSpec("Redirect to", ParamKind.ADDRESSES, Use.SEND),
    ActionSpec("Forward to", ParamKind.ADDRESSES, Use.SEND),
    ActionSpec("Mirror to", ParamKind.ADDRESSES, Use.SEND),
    ActionSpec("Reply with", ParamKind.TEXT, Use.SEND),
    ActionSpec("Reply to All with", ParamKind.TEXT, Use.SEND),
    ActionSpec("React with", ParamKind.TEXT, Use.SEND, supported=False),
    ActionSpec("Reject with", ParamKind.TEXT),
    ActionSpec("Discard", ParamKind.NONE),
    ActionSpec("Stop Processing", ParamKind.NONE, stops=True),
    ActionSpec("Remember 'From' in", ParamKind.TEXT, supported=False),
    ActionSpec("Execute", ParamKind.COMMAND, Use.EXEC),
    ActionSpec("FingerNotify", ParamKind.TEXT, supported=False),
    ActionSpec("Write To Log", ParamKind.TEXT),
    ActionSpec("SendIM", ParamKind.TEXT, Use.SEND, supported=False),
    ActionSpec("SendPush", ParamKind.TEXT, Use.SEND, supported=False),
    ActionSpec("SendURL", ParamKind.TEXT, Use.SEND, supported=False),
    ActionSpec("Store Encrypted in", ParamKind.TEXT, supported=False),
    ActionSpec("Copy Attachments into", ParamKind.TEXT, supported=False),
    ActionSpec("Accept Request", ParamKind.TEXT, supported=False),
    ActionSpec("Accept Reply", ParamKind.TEXT, supported=False),
)
ACTIONS_BY_NAME = {a.name.lower(): a for a in ACTIONS}
ACTION_ALIASES = {
    "stop": "Stop Processing",
    "reject": "Reject with",
    "remember from in": "Remember 'From' in",
    "write to log": "Write To Log",
}
SIGNAL_ONLY = ("Fork to",)

# Mark: CGP flag names -> IMAP flags; other names are kept as keywords.
FLAG_NAMES = {
    "seen": "\\Seen",
    "read": "\\Seen",
    "flagged": "\\Flagged",
    "deleted": "\\Deleted",
    "answered": "\\Answered",
    "draft": "\\Draft",
    "junk": "$Junk",
    "notjunk": "$NotJunk",
    "forwarded": "$Forwarded",
    "mdnsent": "$MDNSent",
}
for _n in range(1, 8):
    FLAG_NAMES[f"label{_n}"] = f"$Label{_n}"

RULES_ALLOWED = ("None", "Filter Only", "All But Exec", "Any")


# -- the rule -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    data: str
    op: str
    param: str = ""

    @property
    def spec(self) -> DataSpec:
        return DATA_BY_NAME[self.data.lower()]


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    param: str | None = None

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS_BY_NAME[self.name.lower()]


@dataclass(frozen=True, slots=True)
class Rule:
    priority: int
    name: str
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()
    comment: str | None = None

    @property
    def active(self) -> bool:
        return self.priority > INACTIVE


class RuleError(ValueError):
    """A refused rule: ``rule`` is its name (None before the name was read),
    ``position`` where in the rule set, ``reason`` why."""

    def __init__(self, reason: str, *, rule: str | None = None, position: str = "") -> None:
        self.rule = rule
        self.position = position
        self.reason = reason
        where = position
        if rule is not None:
            named = f'"{rule}"'
            m = re.match(r"rule \d+", position)
            where = (
                f"{m.group()} {named}{position[m.end() :]}"
                if m
                else f"rule {named}" + (f", {position}" if position else "")
            )
        super().__init__(f"{where}: {reason}" if where else reason)


# -- canonical names ------------------------------------------------------------


def data_name(name: str) -> str:
    key = " ".join(str(name).split()).lower()
    key = DATA_ALIASES.get(key, key).lower()
    spec = DATA_BY_NAME.get(key)
    if spec is None:
        raise ValueError(f"unknown condition {name!r}")
    return spec.name


def operation(name: str) -> str:
    key = " ".join(str(name).split()).lower()
    if key not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; use one of: {', '.join(OPERATIONS)}")
    return key


def action_name(name: str) -> str:
    key = " ".join(str(name).split()).lower()
    key = ACTION_ALIASES.get(key, key).lower()
    if key in (s.lower() for s in SIGNAL_ONLY):
        raise ValueError(f"{name!r} is an action of signal rules, not of mail rules")
    spec = ACTIONS_BY_NAME.get(key)
    if spec is None:
        raise ValueError(f"unknown action {name!r}")
    return spec.name


# -- parameters -----------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([ap]m)?\s*$", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_FOREIGN = re.compile(r"^~([^/\s]+)/(.+)$")
_KEYWORD = re.compile(r"[A-Za-z0-9$_.\-]+")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def split_items(param: str) -> list[str]:
    """A comma-separated list; spaces around commas are ignored (rules.md §3)."""
    return [p.strip() for p in param.split(",") if p.strip()]


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"expected a size such as 1000, 512K or 1M, got {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def parse_time(text: str) -> int:
    """``HH:MM[:SS]`` (optionally ``am``/``pm``) -> seconds since midnight."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"expected a time such as 17:30, got {text!r}")
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if m.group(4):
        if not 1 <= hour <= 12:
            raise ValueError(f"invalid time {text!r}")
        hour = hour % 12 + (12 if m.group(4).lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid time {text!r}")
    return hour * 3600 + minute * 60 + second


def parse_date(text: str) -> tuple[int, int, int]:
    """``2024-01-31``, ``31-01-2024``, ``31.01.2024`` or ``31 Jan 2024`` -> (y, m, d)."""
    t = text.strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", t)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    else:
        m = re.fullmatch(r"(\d{1,2})[-./](\d{1,2})[-./](\d{4})", t)
        if m:
            d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        else:
            m = re.fullmatch(r"(\d{1,2})[ -]([A-Za-z]{3})[A-Za-z]*[ -](\d{4})", t)
            if not m or m.group(2).lower() not in _MONTHS:
                raise ValueError(f"expected a date such as 2024-01-31 or 31 Jan 2024, got {text!r}")
            d, mo, y = int(m.group(1)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        raise ValueError(f"invalid date {text!r}")
    return y, mo, d


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("", "true", "yes", "1", "on"):
        return True
    if t in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def ip_item(text: str) -> tuple[int, int, int] | None:
    """An address, CIDR network or ``a-b`` range as (version, first, last); None
    if the item is not one (it is then a picture)."""
    try:
        if "-" in text:
            first_text, _, last_text = text.partition("-")
            first = ipaddress.ip_address(first_text.strip())
            last = ipaddress.ip_address(last_text.strip())
            if first.version != last.version or int(first) > int(last):
                return None
            return first.version, int(first), int(last)
        net = ipaddress.ip_network(text.strip(), strict=False)
        return net.version, int(net.network_address), int(net.broadcast_address)
    except ValueError:
        return None


def parse_flags(param: str) -> tuple[str, ...]:
    flags = []
    for item in split_items(param):
        name = item.lstrip("\\")
        flag = FLAG_NAMES.get(name.lower())
        if flag is None:
            if not _KEYWORD.fullmatch(name):
                raise ValueError(f"invalid flag {item!r}")
            flag = name
        if flag not in flags:
            flags.append(flag)
    if not flags:
        raise ValueError("Mark needs at least one flag (Seen, Flagged, Deleted, Junk, ...)")
    return tuple(flags)


def header_lines(param: str) -> list[str]:
    """Header lines of ``Add Header`` (several separated by line breaks)."""
    lines = [ln.strip() for ln in param.replace("\r", "").split("\n") if ln.strip()]
    if not lines:
        raise ValueError("Add Header needs a header line 'Name: value'")
    for ln in lines:
        name, colon, _ = ln.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header line {ln!r}: expected 'Name: value'")
    return lines


def address_list(param: str) -> list[str]:
    items = [a.strip().strip("<>").strip() for a in split_items(param)]
    if not items:
        raise ValueError("an address is required")
    for a in items:
        if not a or any(ch.isspace() for ch in a) or a.startswith("@") or a.endswith("@"):
            raise ValueError(f"invalid address {a!r}")
    return items


def foreign_name(name: str) -> tuple[str, str] | None:
    """``~account[@domain]/mailbox`` -> (account, mailbox), else None."""
    m = _FOREIGN.match(name.strip())
    if not m:
        return None
    return m.group(1), m.group(2)


def execute_command(param: str) -> tuple[tuple[str, ...], str]:
    """``[FLAG] [FLAG] command args`` -> (flags upper-case, command line)."""
    text = param.strip()
    flags = []
    while text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated flag in {param!r}")
        flags.append(text[1:end].strip().upper())
        text = text[end + 1 :].lstrip()
    if not text:
        raise ValueError("Execute needs a command")
    return tuple(flags), text


# -- checking a rule set ----------------------------------------------------------


def check_condition(cond: Condition, level: Level) -> Condition:
    """The condition with canonical names, or ValueError with the reason."""
    name = data_name(cond.data)
    spec = DATA_BY_NAME[name.lower()]
    op = operation(cond.op)
    param = "" if cond.param is None else str(cond.param)
    if level not in spec.levels:
        where = "server-wide" if spec.levels == _SERVER else "domain and account"
        raise ValueError(f"{name!r} is a condition of {where} rules only")
    if op in NUMERIC and spec.type not in (ValueType.SIZE, ValueType.TIME, ValueType.DATE):
        raise ValueError(f"{op!r} compares numbers, sizes, times or dates; {name!r} is text")
    items = split_items(param) if op in (IN, NOT_IN) else [param]
    if spec.type is ValueType.SIZE and op in NUMERIC:
        parse_size(param)
    elif spec.type is ValueType.TIME and op in NUMERIC:
        parse_time(param)
    elif spec.type is ValueType.DATE and op in NUMERIC:
        parse_date(param)
    elif spec.type is ValueType.BOOL:
        for item in items:
            parse_bool(item)
    elif spec.type is ValueType.PREFERENCE:
        pref, eq, _ = param.partition("=")
        if not eq or not pref.strip():
            raise ValueError("Preference needs 'name=value'")
    elif spec.type is ValueType.MAILBOX and not items:
        raise ValueError("Existing Mailbox needs a mailbox name")
    return Condition(name, op, param)


def check_action(action: Action, level: Level) -> Action:
    name = action_name(action.name)
    spec = ACTIONS_BY_NAME[name.lower()]
    param = action.param
    if spec.param is ParamKind.NONE:
        if param not in (None, ""):
            raise ValueError(f"{name!r} takes no parameter")
        return Action(name, None)
    if param is None or (not str(param).strip() and spec.param is not ParamKind.TEXT):
        raise ValueError(f"{name!r} needs a parameter")
    param = str(param)
    if spec.param is ParamKind.MAILBOX:
        box = param.strip()
        if not box:
            raise ValueError("Store in needs a mailbox name")
        if level is not Level.ACCOUNT and foreign_name(box) is None:
            raise ValueError(
                f"{level.value}-wide rules store only into a full foreign mailbox name"
                f" such as ~account/mailbox or ~account@domain/mailbox, not {box!r}"
            )
        param = box
    elif spec.param is ParamKind.FLAGS:
        parse_flags(param)
    elif spec.param is ParamKind.HEADERS:
        header_lines(param)
    elif spec.param is ParamKind.ADDRESSES:
        address_list(param)
    elif spec.param is ParamKind.COMMAND:
        execute_command(param)
    return Action(name, param)


def check_rules(rules: Sequence[Rule], level: Level) -> list[Rule]:
    """Every rule checked and given canonical names; the first problem raises
    :class:`RuleError` naming the rule, the position and the reason."""
    out: list[Rule] = []
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules, 1):
        where = f"rule {index}"
        name = rule.name
        if not isinstance(name, str) or not name.strip():
            raise RuleError("the rule name must not be empty", position=where)
        key = name.strip().lower()
        if key in seen:
            raise RuleError(
                f"the name is used by rule {seen[key]} already", rule=name, position=where
            )
        seen[key] = index
        try:
            priority = parse_priority(rule.priority)
        except ValueError as exc:
            raise RuleError(str(exc), rule=name, position=f"{where}, priority") from None
        conditions = []
        for n, cond in enumerate(rule.conditions, 1):
            try:
                conditions.append(check_condition(cond, level))
            except ValueError as exc:
                raise RuleError(str(exc), rule=name, position=f"{where}, condition {n}") from None
        if not rule.actions:
            raise RuleError(
                "a rule needs at least one action", rule=name, position=f"{where}, actions"
            )
        actions = []
        for n, act in enumerate(rule.actions, 1):
            try:
                actions.append(check_action(act, level))
            except ValueError as exc:
                raise RuleError(str(exc), rule=name, position=f"{where}, action {n}") from None
        out.append(Rule(priority, name, tuple(conditions), tuple(actions), rule.comment))
    return out


def check_allowed(rules: Iterable[Rule], rules_allowed: str) -> None:
    """Rules a *user* sets for his own account, limited by ``RulesAllowed``
    (rules.md §5.1); administrators are not limited (do not call this for them).
    ``Execute`` is for server administrators only, whatever the setting."""
    allowed = next(
        (v for v in RULES_ALLOWED if v.lower() == str(rules_allowed).lower()), "Filter Only"
    )
    uses = {
        "None": set(),
        "Filter Only": {Use.FILTER},
        "All But Exec": {Use.FILTER, Use.SEND},
        "Any": {Use.FILTER, Use.SEND},
    }[allowed]
    for index, rule in enumerate(rules, 1):
        for n, act in enumerate(rule.actions, 1):
            spec = ACTIONS_BY_NAME[action_name(act.name).lower()]
            if spec.use not in uses:
                why = (
                    "only server administrators may use Execute"
                    if spec.use is Use.EXEC
                    else f"RulesAllowed is {allowed!r}"
                )
                raise RuleError(
                    f"{spec.name!r} is not allowed: {why}",
                    rule=rule.name,
                    position=f"rule {index}, action {n}",
                )


def sort_rules(rules: Iterable[tuple[Level, Rule]]) -> list[tuple[Level, Rule]]:
    """Active rules, higher priority first; equal priorities keep their order
    (domain rules before account rules when the caller lists them first)."""
    active = [(lvl, r) for lvl, r in rules if r.active]
    return sorted(active, key=lambda item: -item[1].priority)  # sorted() is stable
