"""The textual form of rules (rules.md §2.1, cli.md §2) and their JSON form.

A rule set is a CGP array of rules::

    ( ( 9, "Copy outgoing",
        ( ("Source", "in", "trusted,authenticated") ),
        ( ("Store in", "~security/outgoing") ) ) )

A single rule (``( 9, "name", (...), (...) )``) is accepted where a set is
expected and means a set of one. The parser reads the whole CGP object
syntax (quoted strings with ``\\e`` ``\\nnn`` escapes, atoms, ``#`` numbers,
arrays, dictionaries, data blocks, comments); a mistake is reported as
:class:`~waypost.services.rules.model.RuleError` with the rule's name when it
is known, the position (``line L, column C`` and the rule's number) and the
reason. :func:`format_rules` prints the same form, one condition or action
per line, so ``show`` and ``set`` round-trip.

JSON (``--json``): a list of ``{"priority", "name", "conditions": [[data, op,
param]], "actions": [[action] | [action, param]]}``; the plain array form
``[9, "name", [...], [...]]`` is accepted too. Storage keeps the array form.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from waypost.services.rules.model import (
    Action,
    Condition,
    Level,
    Rule,
    RuleError,
    check_rules,
    parse_priority,
    priority_name,
)

# -- the CGP object syntax ----------------------------------------------------------

_ATOM = re.compile(r"[A-Za-z0-9.@\-_%!#:]+")  # cli.md §2: atoms as real clients send them


@dataclass(frozen=True, slots=True)
class Node:
    """A parsed object with the place it started (1-based line and column)."""

    value: Any  # str | list[Node] | dict[str, Node] | int | bytes | None
    line: int
    column: int

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}"


class SyntaxProblem(ValueError):
    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


MAX_NESTING = 100
"""Deepest nesting of arrays and dictionaries read (a rule set needs 4): the
parser recurses, and deeper text would exhaust Python's stack (found by
tests/fuzz/test_fuzz_rules.py)."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def place(self, pos: int | None = None) -> tuple[int, int]:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, column

    def fail(self, reason: str, pos: int | None = None) -> SyntaxProblem:
        return SyntaxProblem(reason, *self.place(pos))

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r\n\f\v":
                self.pos += 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated comment")
                self.pos = end + 2
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            else:
                return

    def document(self) -> Node:
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail('empty text: expected a rule set such as ( (9, "name", (...), (...)) )')
        node = self.object()
        self.skip()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r} after the end of the rule set")
        return node

    def object(self) -> Node:
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end of text")
        start = self.pos
        line, column = self.place()
        ch = self.text[self.pos]
        if ch in "({":
            if self.depth >= MAX_NESTING:
                raise self.fail(f"nested deeper than {MAX_NESTING} levels")
            self.depth += 1
            node = Node(self.array() if ch == "(" else self.dictionary(), line, column)
            self.depth -= 1
            return node
        if ch == '"':
            return Node(self.quoted(), line, column)
        if ch == "[":
            end = self.text.find("]", self.pos)
            if end < 0:
                raise self.fail("unterminated data block")
            try:
                data = base64.b64decode(self.text[self.pos + 1 : end], validate=True)
            except ValueError:
                raise self.fail("invalid base64 in data block") from None
            self.pos = end + 1
            return Node(data, line, column)
        if self.text.startswith("#NULL#", self.pos):
            self.pos += 6
            return Node(None, line, column)
        m = _ATOM.match(self.text, self.pos)
        if not m:
            raise self.fail(f"unexpected {ch!r}: expected a string, a number or '('", start)
        self.pos = m.end()
        word = m.group()
        if re.fullmatch(r"#-?\d+", word):
            if len(word) > 20:  # int() refuses 4300 digits with a bare ValueError
                raise self.fail("number too long", start)
            return Node(int(word[1:]), line, column)
        return Node(word, line, column)

    def array(self) -> list[Node]:
        self.pos += 1  # "("
        items: list[Node] = []
        self.skip()
        if self.text.startswith(")", self.pos):
            self.pos += 1
            return items
        while True:
            items.append(self.object())
            self.skip()
            if self.pos >= len(self.text):
                raise self.fail("unexpected end of text: ')' missing")
            ch = self.text[self.pos]
            if ch == ",":
                self.pos += 1
                continue
            if ch == ")":
                self.pos += 1
                return items
            raise self.fail(f"expected ',' or ')', found {ch!r}")

    def dictionary(self) -> dict[str, Node]:
        self.pos += 1  # "{"
        items: dict[str, Node] = {}
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return items
            key = self.object()
            if not isinstance(key.value, str):
                raise self.fail("a dictionary key must be a string")
            self.skip()
            if not self.text.startswith("=", self.pos):
                raise self.fail("expected '=' after a dictionary key")
            self.pos += 1
            items[key.value] = self.object()
            self.skip()
            if not self.text.startswith(";", self.pos):
                raise self.fail("expected ';' after a dictionary value")
            self.pos += 1

    def quoted(self) -> str:
        text = self.text
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(text):
                raise self.fail("unterminated string", start)
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                esc = text[self.pos + 1 : self.pos + 2]
                if esc.isdigit():
                    digits = text[self.pos + 1 : self.pos + 4]
                    if not re.fullmatch(r"\d{3}", digits):
                        raise self.fail("expected three decimal digits after '\\'")
                    out.append(chr(int(digits)))
                    self.pos += 4
                    continue
                mapped = {'"': '"', "\\": "\\", "r": "\r", "n": "\n", "t": "\t", "e": "\n"}.get(esc)
                if mapped is None:
                    raise self.fail(f"unknown escape '\\{esc}' in a string")
                out.append(mapped)
                self.pos += 2
                continue
            if ch == "\n":
                raise self.fail("line break inside a string (write \\e)")
            out.append(ch)
            self.pos += 1


def parse_object(text: str) -> Node:
    """Any CGP textual object (positions kept), or SyntaxProblem."""
    return _Parser(text).document()


def plain(node: Node) -> Any:
    """A parsed object without positions."""
    if isinstance(node.value, list):
        return [plain(n) for n in node.value]
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    return node.value


def quote(text: str) -> str:
    """A string as CGP prints it: an atom when letters and digits only."""
    if text and text.isascii() and text.isalnum():
        return text
    return quote_always(text)


def quote_always(text: str) -> str:
    """A quoted string with CGP escapes (``\\e`` for a line break)."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\e")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# -- rules from the textual form ---------------------------------------------------


def _text_of(node: Node, what: str, rule: str | None, where: str) -> str:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        return str(node.value)
    if not isinstance(node.value, str):
        raise RuleError(f"{what} must be a string", rule=rule, position=f"{where} ({node.where})")
    return node.value


def _is_single_rule(items: list[Node]) -> bool:
    return bool(items) and not isinstance(items[0].value, list)


def rules_from_node(node: Node) -> list[tuple[Rule, dict[str, str]]]:
    """(rule, places) pairs from a parsed rule set, no semantic checks yet;
    ``places`` maps "" (the rule), "priority", "condition N", "action N" to
    ``line L, column C``."""
    if not isinstance(node.value, list):
        raise RuleError("a rule set must be an array: ( rule, rule, ... )", position=node.where)
    items = [node] if _is_single_rule(node.value) else node.value
    out = []
    for index, rnode in enumerate(items, 1):
        where = f"rule {index}"
        if not isinstance(rnode.value, list):
            raise RuleError(
                'a rule must be an array ( priority, "name", (conditions), (actions) )',
                position=f"{where} ({rnode.where})",
            )
        parts = rnode.value
        places = {"": rnode.where}
        name = None
        if len(parts) >= 2 and isinstance(parts[1].value, str):
            name = parts[1].value
        if len(parts) not in (4, 5):
            raise RuleError(
                f"a rule has 4 elements (priority, name, conditions, actions), found {len(parts)}",
                rule=name,
                position=f"{where} ({rnode.where})",
            )
        try:
            priority = parse_priority(parts[0].value)
        except ValueError as exc:
            raise RuleError(
                str(exc), rule=name, position=f"{where}, priority ({parts[0].where})"
            ) from None
        name = _text_of(parts[1], "the rule name", None, f"{where}, name")
        conditions = []
        cnode = parts[2]
        if not isinstance(cnode.value, list):
            raise RuleError(
                'the conditions must be an array ( ("Data", "operation", "parameter"), ... )',
                rule=name,
                position=f"{where}, conditions ({cnode.where})",
            )
        citems = cnode.value
        if citems and not isinstance(citems[0].value, list):
            citems = [cnode]  # one condition written without the outer parentheses
        for n, c in enumerate(citems, 1):
            pos = f"{where}, condition {n}"
            places[f"condition {n}"] = c.where
            if not isinstance(c.value, list) or len(c.value) not in (2, 3):
                raise RuleError(
                    'a condition is ("Data", "operation", "parameter")',
                    rule=name,
                    position=f"{pos} ({c.where})",
                )
            vals = [_text_of(v, "a condition part", name, pos) for v in c.value]
            conditions.append(Condition(vals[0], vals[1], vals[2] if len(vals) > 2 else ""))
        anode = parts[3]
        if not isinstance(anode.value, list):
            raise RuleError(
                'the actions must be an array ( ("Action", "parameter"), ... )',
                rule=name,
                position=f"{where}, actions ({anode.where})",
            )
        aitems = anode.value
        if aitems and not isinstance(aitems[0].value, list):
            aitems = [anode]
        actions = []
        for n, a in enumerate(aitems, 1):
            pos = f"{where}, action {n}"
            places[f"action {n}"] = a.where
            if isinstance(a.value, str):  # an action without parameter may be bare
                actions.append(Action(a.value))
                continue
            if not isinstance(a.value, list) or len(a.value) not in (1, 2):
                raise RuleError(
                    'an action is ("Action") or ("Action", "parameter")',
                    rule=name,
                    position=f"{pos} ({a.where})",
                )
            vals = [_text_of(v, "an action part", name, pos) for v in a.value]
            actions.append(Action(vals[0], vals[1] if len(vals) > 1 else None))
        comment = None
        if len(parts) == 5:
            comment = _text_of(parts[4], "the comment", name, f"{where}, comment")
        places["priority"] = parts[0].where
        places["name"] = parts[1].where
        places["actions"] = anode.where
        out.append((Rule(priority, name, tuple(conditions), tuple(actions), comment), places))
    return out


def _checked(pairs: list[tuple[Rule, dict[str, str]]], level: Level) -> list[Rule]:
    try:
        return check_rules([r for r, _ in pairs], level)
    except RuleError as exc:
        # add the place in the text to "rule N, condition M"
        m = re.fullmatch(r"rule (\d+)(?:, (.+))?", exc.position)
        if not m:
            raise
        places = pairs[int(m.group(1)) - 1][1]
        place = places.get(m.group(2) or "", places[""])
        raise RuleError(exc.reason, rule=exc.rule, position=f"{exc.position} ({place})") from None


def parse_rules(text: str, level: Level = Level.ACCOUNT) -> list[Rule]:
    """The CGP textual form -> checked rules (canonical names), or RuleError."""
    try:
        node = parse_object(text)
    except SyntaxProblem as exc:
        raise RuleError(exc.reason, position=f"line {exc.line}, column {exc.column}") from None
    return _checked(rules_from_node(node), level)


def parse_any(text: str, level: Level = Level.ACCOUNT) -> list[Rule]:
    """JSON when the text starts with ``[`` or ``{``, else the CGP form."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        return rules_from_json(text, level)
    return parse_rules(text, level)


# -- the printed form ------------------------------------------------------------


def format_rule(rule: Rule, indent: str = "") -> str:
    """One rule; every string quoted, as rules.md writes rules."""
    q = quote_always
    head = f"{indent}( {rule.priority}, {q(rule.name)},"
    cond_lines = [f"({q(c.data)}, {q(c.op)}, {q(c.param)})" for c in rule.conditions]
    act_lines = [
        f"({q(a.name)})" if a.param is None else f"({q(a.name)}, {q(a.param)})"
        for a in rule.actions
    ]
    pad = indent + "  "
    out = [head]
    out.append(_group(cond_lines, pad) + ",")
    tail = _group(act_lines, pad)
    if rule.comment is not None:
        out.append(tail + ",")
        out.append(f"{pad}{q(rule.comment)} )")
    else:
        out.append(tail + " )")
    return "\n".join(out)


def _group(items: Sequence[str], pad: str) -> str:
    if not items:
        return f"{pad}()"
    if len(items) == 1:
        return f"{pad}( {items[0]} )"
    inner = (",\n" + pad + "  ").join(items)
    return f"{pad}( {inner} )"


def format_rules(rules: Sequence[Rule]) -> str:
    """The rule set in the CGP textual form, one condition or action per line,
    with a comment naming each priority that is not a plain number."""
    if not rules:
        return "()\n"
    body = ",\n".join(
        (f"  /* {priority_name(r.priority)} */\n" if r.priority in (0, 10) else "")
        + format_rule(r, "  ")
        for r in rules
    )
    return f"(\n{body}\n)\n"


# -- JSON -------------------------------------------------------------------------


def rule_to_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "priority": rule.priority,
        "name": rule.name,
        "conditions": [[c.data, c.op, c.param] for c in rule.conditions],
        "actions": [[a.name] if a.param is None else [a.name, a.param] for a in rule.actions],
    }
    if rule.comment is not None:
        out["comment"] = rule.comment
    return out


def rules_to_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    return [rule_to_json(r) for r in rules]


def rules_to_stored(rules: Sequence[Rule]) -> list[list[Any]]:
    """The compact array form kept in storage."""
    out = []
    for r in rules:
        item: list[Any] = [
            r.priority,
            r.name,
            [[c.data, c.op, c.param] for c in r.conditions],
            [[a.name] if a.param is None else [a.name, a.param] for a in r.actions],
        ]
        if r.comment is not None:
            item.append(r.comment)
        out.append(item)
    return out


def _json_rule(item: Any, index: int) -> Rule:
    where = f"rule {index}"
    if isinstance(item, dict):
        name = item.get("name")
        unknown = set(item) - {"priority", "name", "conditions", "actions", "comment"}
        if unknown:
            raise RuleError(
                f"unknown key {sorted(unknown)[0]!r}",
                rule=name if isinstance(name, str) else None,
                position=where,
            )
        parts = [item.get("priority"), name, item.get("conditions", []), item.get("actions", [])]
        comment = item.get("comment")
    elif isinstance(item, list) and len(item) in (4, 5):
        parts = item[:4]
        comment = item[4] if len(item) == 5 else None
    else:
        raise RuleError(
            "a rule is an object {priority, name, conditions, actions} or an "
            "array [priority, name, conditions, actions]",
            position=where,
        )
    priority, name, conditions, actions = parts
    if not isinstance(name, str):
        raise RuleError("the rule name must be a string", position=f"{where}, name")
    try:
        priority = parse_priority(priority)
    except ValueError as exc:
        raise RuleError(str(exc), rule=name, position=f"{where}, priority") from None
    if not isinstance(conditions, list):
        raise RuleError("conditions must be a list", rule=name, position=f"{where}, conditions")
    conds = []
    for n, c in enumerate(conditions, 1):
        if isinstance(c, dict):
            c = [c.get("data"), c.get("op") or c.get("operation"), c.get("param", "")]
        if (
            not isinstance(c, list)
            or len(c) not in (2, 3)
            or not all(isinstance(v, str) for v in c)
        ):
            raise RuleError(
                "a condition is [data, operation, parameter] (strings)",
                rule=name,
                position=f"{where}, condition {n}",
            )
        conds.append(Condition(c[0], c[1], c[2] if len(c) > 2 else ""))
    if not isinstance(actions, list):
        raise RuleError("actions must be a list", rule=name, position=f"{where}, actions")
    acts = []
    for n, a in enumerate(actions, 1):
        if isinstance(a, str):
            a = [a]
        if isinstance(a, dict):
            a = [a.get("action")] + ([a["param"]] if a.get("param") is not None else [])
        if (
            not isinstance(a, list)
            or len(a) not in (1, 2)
            or not all(isinstance(v, str) for v in a)
        ):
            raise RuleError(
                "an action is [action] or [action, parameter] (strings)",
                rule=name,
                position=f"{where}, action {n}",
            )
        acts.append(Action(a[0], a[1] if len(a) > 1 else None))
    if comment is not None and not isinstance(comment, str):
        raise RuleError("the comment must be a string", rule=name, position=f"{where}, comment")
    return Rule(priority, name, tuple(conds), tuple(acts), comment)


def rules_from_json(text_or_data: str | Any, level: Level = Level.ACCOUNT) -> list[Rule]:
    """JSON text (or already decoded data) -> checked rules, or RuleError."""
    data = text_or_data
    if isinstance(text_or_data, str):
        try:
            data = json.loads(text_or_data)
        except json.JSONDecodeError as exc:
            raise RuleError(
                f"invalid JSON: {exc.msg}", position=f"line {exc.lineno}, column {exc.colno}"
            ) from None
    if isinstance(data, dict) and "rules" in data:
        data = data["rules"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise RuleError("expected a list of rules")
    if data and not isinstance(data[0], (list, dict)):
        data = [data]  # one rule in the array form
    return check_rules([_json_rule(item, i) for i, item in enumerate(data, 1)], level)
