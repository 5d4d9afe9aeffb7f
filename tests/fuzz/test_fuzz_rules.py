"""Fuzz targets for the rules text (``services/rules``): the CGP object
syntax, rule sets in the text and JSON forms, the typed parameter values and
the header block the engine reads.

Properties: any text parses or is refused with :class:`RuleError` (with a
position), never another exception, at every level; what parses prints
(``format_rules``) and re-parses to the same rules, and goes through JSON
and the stored array form unchanged; the value parsers raise only
``ValueError``; the engine's header parser never raises and yields stripped
names and values.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds

from waypost.services.rules import model
from waypost.services.rules.engine import parse_header
from waypost.services.rules.model import Level, RuleError
from waypost.services.rules.text import (
    SyntaxProblem,
    format_rules,
    parse_any,
    parse_object,
    parse_rules,
    plain,
    quote_always,
    rules_from_json,
    rules_to_json,
    rules_to_stored,
)

RULE_SETS = text_seeds("rules/sets")
VALUES = text_seeds("rules/values.lines")
TOKENS = ["(", ")", ",", '"', "\\", "\\e", "\\233", "/*", "*/", "//", "#", "[", "]", "{", "}",
          "=", ";", " ", "\n", "Highest", "Inactive", '"Store in"', '"Mark"', '"Subject"',
          '"is"', '"not in"', '"greater than"', '"~a/b"', "é", "\x00", "9" * 30]


def check_rules(text: str) -> None:
    for level in Level:
        try:
            rules = parse_any(text, level)
        except RuleError as exc:
            assert exc.reason
            continue
        assert parse_rules(format_rules(rules), level) == rules
        assert rules_from_json(json.dumps(rules_to_json(rules)), level) == rules
        assert rules_from_json(rules_to_stored(rules), level) == rules


@pytest.mark.parametrize("text", RULE_SETS, ids=seed_ids(RULE_SETS))
def test_rule_set_seeds(text: str) -> None:
    check_rules(text)


@TARGET
@given(text_mutants(RULE_SETS, TOKENS))
def test_rule_sets(text: str) -> None:
    check_rules(text)


@TARGET
@given(text_mutants(RULE_SETS, TOKENS))
def test_cgp_objects(text: str) -> None:
    try:
        node = parse_object(text)
    except SyntaxProblem as exc:
        assert exc.line >= 1 and exc.column >= 1
        return
    plain(node)


@TARGET
@given(st.text())
def test_quoted_strings_round_trip(text: str) -> None:
    assert plain(parse_object(quote_always(text))) == text


def check_value(text: str) -> None:
    for parse in (model.parse_size, model.parse_time, model.parse_date, model.parse_bool,
                  model.parse_flags, model.ip_item):
        try:
            parse(text)
        except ValueError:
            pass


@pytest.mark.parametrize("text", VALUES, ids=seed_ids(VALUES))
def test_value_seeds(text: str) -> None:
    check_value(text)


@TARGET
@given(text_mutants(VALUES, [":", "-", ".", "/", ",", " ", "am", "pm", "K", "M", "\\", "０"]))
def test_values(text: str) -> None:
    check_value(text)


@TARGET
@given(text_mutants([s for s in text_seeds("mime") if s][:20], ["\r\n", "\n", " ", "\t", ":"]))
def test_header_blocks(block: str) -> None:
    for low, name, value in parse_header(block):
        assert name and low == name.lower() and name == name.strip()
        assert value == value.strip() and "\n" not in value


def test_a_blank_folded_line_adds_no_trailing_space() -> None:
    """Found by test_header_blocks: a whitespace-only continuation line left
    a trailing space on the value, so ``Header Field is "Content-Type: text/
    plain"`` no longer matched."""
    fields = parse_header("Content-Type: text/plain\r\n \r\n\tcharset=x\r\nSubject: a\r\n \r\n")
    assert fields == [("content-type", "Content-Type", "text/plain charset=x"),
                      ("subject", "Subject", "a")]
