"""The textual form of rules (rules.md §2.1, cli.md §2): parse, print, JSON,
and refusals that name the rule, the position and the reason."""

from __future__ import annotations

import json

import pytest

from waypost.services.rules.model import (
    Action,
    Condition,
    Level,
    Rule,
    RuleError,
    check_allowed,
    check_rules,
    priority_name,
)
from waypost.services.rules.text import (
    format_rules,
    parse_any,
    parse_object,
    parse_rules,
    plain,
    quote,
    rules_from_json,
    rules_to_json,
    rules_to_stored,
)

COPY_OUTGOING = """
    ( 9, "Copy outgoing",
      ( ("Source", "in", "trusted,authenticated") ),
      ( ("Store in", "~security/outgoing") ) )
"""

DEPT1 = """
    ( 9, "dept1 limits",
      ( ("Return-Path", "is", "*@dept1.company.dom"),
        ("Return-Path", "is not", "boss@dept1.company.dom"),
        ("Any Recipient", "not in", "*@dept1.company.dom,supervisor@hq.company.dom") ),
      ( ("Reject with", "You are not allowed to send mail to these addresses"),
        ("Discard"), ("Stop Processing") ) )
"""

SCANSPAM = """
    ( 5, "scanspam-example.com",
      ( ("Any Recipient", "in", "*@example.com"),
        ("Header Field", "is not", "X-Spam-Status*") ),
      ( ("Execute", "[STDERR] [FILE] [RETPATH] [RCPT] /var/spam/scan.sh"),
        ("Discard") ) )
"""


def one(text: str, level: Level = Level.SERVER) -> Rule:
    (rule,) = parse_rules(text, level)
    return rule


def refused(text: str, level: Level = Level.SERVER) -> RuleError:
    with pytest.raises(RuleError) as info:
        parse_rules(text, level)
    return info.value


# -- the spec's rules ---------------------------------------------------------------


def test_the_how_to_rules_parse_as_written_in_the_spec() -> None:
    copy = one(COPY_OUTGOING)
    assert copy == Rule(
        9,
        "Copy outgoing",
        (Condition("Source", "in", "trusted,authenticated"),),
        (Action("Store in", "~security/outgoing"),),
    )
    dept1 = one(DEPT1)
    assert dept1.priority == 9 and dept1.name == "dept1 limits"
    assert [c.op for c in dept1.conditions] == ["is", "is not", "not in"]
    assert dept1.actions == (
        Action("Reject with", "You are not allowed to send mail to these addresses"),
        Action("Discard"),
        Action("Stop Processing"),
    )


def test_the_real_scanspam_example_parses() -> None:
    rule = one(SCANSPAM)
    assert rule.actions[0] == Action(
        "Execute", "[STDERR] [FILE] [RETPATH] [RCPT] /var/spam/scan.sh"
    )
    assert rule.conditions[1] == Condition("Header Field", "is not", "X-Spam-Status*")


def test_a_rule_set_of_several_rules_round_trips_through_the_printer() -> None:
    rules = parse_rules(f"({COPY_OUTGOING}, {DEPT1}, {SCANSPAM})", Level.SERVER)
    assert [r.name for r in rules] == ["Copy outgoing", "dept1 limits", "scanspam-example.com"]
    text = format_rules(rules)
    assert parse_rules(text, Level.SERVER) == rules
    # the printed form is the spec's: every string quoted, one item per line
    assert '("Return-Path", "is not", "boss@dept1.company.dom"),' in text
    assert '("Discard"),' in text and '("Stop Processing") ) )' in text


def test_empty_rule_set() -> None:
    assert parse_rules("()") == []
    assert format_rules([]) == "()\n"


def test_names_are_case_insensitive_and_made_canonical() -> None:
    rule = one(
        '(3, x, (("return-path", "IS NOT", "a@b"), ("any  recipient", In, "*")),'
        ' (("stop processing"), ("store IN", "~a/b")))'
    )
    assert rule.conditions == (
        Condition("Return-Path", "is not", "a@b"),
        Condition("Any Recipient", "in", "*"),
    )
    assert rule.actions == (Action("Stop Processing"), Action("Store in", "~a/b"))


def test_priorities_inactive_highest_and_numbers() -> None:
    rules = parse_rules(
        "((0, a, (), ((Discard))), (Highest, b, (), ((Discard))),"
        " (#7, c, (), ((Discard))), (Inactive, d, (), ((Discard))))"
    )
    assert [r.priority for r in rules] == [0, 10, 7, 0]
    assert [r.active for r in rules] == [False, True, True, False]
    assert priority_name(0) == "Inactive" and priority_name(10) == "Highest"
    printed = format_rules(rules)
    assert "/* Inactive */" in printed and "/* Highest */" in printed
    assert parse_rules(printed) == rules


def test_cgp_syntax_escapes_atoms_comments_and_non_ascii() -> None:
    text = (
        '/* a comment */ ( 4, "Ümlaut \\"quoted\\"", // line comment\n'
        '  ( (Subject, is, "*Привет*") ),\n'
        '  ( ("Reply with", "Line1\\eLine2\\tTab\\065") ) )'
    )
    rule = one(text, Level.ACCOUNT)
    assert rule.name == 'Ümlaut "quoted"'
    assert rule.conditions[0].param == "*Привет*"
    assert rule.actions[0].param == "Line1\nLine2\tTabA"
    again = one(format_rules([rule]), Level.ACCOUNT)
    assert again == rule
    assert "\\e" in format_rules([rule])  # line breaks print as \e


def test_the_object_parser_reads_every_cgp_type() -> None:
    node = parse_object(
        '( abc, "x y", #12, #-5, [SGk=], #NULL#, {a=1;"b c"=(x,y);}, user@dom.com )'
    )
    assert plain(node) == [
        "abc",
        "x y",
        12,
        -5,
        b"Hi",
        None,
        {"a": "1", "b c": ["x", "y"]},
        "user@dom.com",
    ]
    assert quote("abc") == "abc" and quote("a b") == '"a b"' and quote("") == '""'


def test_a_single_action_without_inner_parentheses_is_accepted() -> None:
    rule = one('(5, "x", ("Subject", "is", "y"), ("Discard"))', Level.ACCOUNT)
    assert rule.conditions == (Condition("Subject", "is", "y"),)
    assert rule.actions == (Action("Discard"),)


def test_a_fifth_element_is_kept_as_a_comment() -> None:
    rule = one('(5, "x", (), (("Discard")), "why this rule")', Level.ACCOUNT)
    assert rule.comment == "why this rule"
    assert one(format_rules([rule]), Level.ACCOUNT) == rule


# -- refusals: rule name, position, reason -------------------------------------------


def test_unknown_condition_names_rule_position_and_reason() -> None:
    err = refused(
        '( (9, "good", (), ((Discard))),\n  (9, "bad one", (("Subjct", "is", "x")), ((Discard))) )'
    )
    assert err.rule == "bad one"
    assert err.position == "rule 2, condition 1 (line 2, column 19)"
    assert err.reason == "unknown condition 'Subjct'"
    assert str(err) == (
        "rule 2 \"bad one\", condition 1 (line 2, column 19): unknown condition 'Subjct'"
    )


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        (
            '(9, a, (("Subject", "iss", "x")), ((Discard)))',
            "rule 1, condition 1",
            "unknown operation 'iss'",
        ),
        ('(9, a, (), (("Discard", "x")))', "rule 1, action 1", "'Discard' takes no parameter"),
        ('(9, a, (), (("Redirect to")))', "rule 1, action 1", "'Redirect to' needs a parameter"),
        (
            '(9, a, (), (("Store in", "Archive")))',
            "rule 1, action 1",
            "server-wide rules store only into a full foreign mailbox name",
        ),
        (
            '(9, a, (("Message Size", "greater than", "big")), ((Discard)))',
            "rule 1, condition 1",
            "expected a size",
        ),
        (
            '(9, a, (("Subject", "greater than", "5")), ((Discard)))',
            "rule 1, condition 1",
            "compares numbers",
        ),
        (
            '(9, a, (("Existing Mailbox", "is", "Junk")), ((Discard)))',
            "rule 1, condition 1",
            "domain and account rules only",
        ),
        ('(9, a, (), (("Fork to", "x@y")))', "rule 1, action 1", "signal rules"),
        ('(9, a, (), (("Teleport", "x")))', "rule 1, action 1", "unknown action 'Teleport'"),
        ("(12, a, (), ((Discard)))", "rule 1, priority", "invalid priority '12'"),
        ("(9, a, (), ())", "rule 1, actions", "at least one action"),
        ("((9, a, (), ((Discard))), (8, A, (), ((Discard))))", "rule 2", "used by rule 1"),
        ('(9, a, (), (("Mark", "Seen, !!")))', "rule 1, action 1", "invalid flag"),
        (
            '(9, a, (), (("Add Header", "no colon here")))',
            "rule 1, action 1",
            "invalid header line",
        ),
        (
            '(9, a, (("Preference", "is", "novalue")), ((Discard)))',
            "rule 1, condition 1",
            "name=value",
        ),
        (
            '(9, a, (("Time Of Day", "greater than", "25:00")), ((Discard)))',
            "rule 1, condition 1",
            "invalid time",
        ),
        (
            '(9, a, (("Current Date", "less than", "tomorrow")), ((Discard)))',
            "rule 1, condition 1",
            "expected a date",
        ),
    ],
)
def test_semantic_refusals(text: str, position: str, reason: str) -> None:
    err = refused(text)
    assert err.rule in ("a", "A")
    assert err.position.startswith(position)
    assert reason in err.reason


def test_route_conditions_are_server_wide_only() -> None:
    text = '(9, a, (("Any Route", "is", "SMTP*")), ((Discard)))'
    assert one(text, Level.SERVER).conditions[0].data == "Any Route"
    err = refused(text, Level.ACCOUNT)
    assert "server-wide rules only" in err.reason


def test_account_rules_may_store_into_own_mailboxes() -> None:
    rule = one('(9, a, (), (("Store in", "Archive/2024")))', Level.ACCOUNT)
    assert rule.actions[0] == Action("Store in", "Archive/2024")
    err = refused('(9, a, (), (("Store in", "Archive")))', Level.DOMAIN)
    assert "domain-wide rules store only into a full foreign mailbox" in err.reason


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('(9, "a", (("Subject", "is", "x"))', "line 1, column 34"),  # unbalanced
        ('(9, "a\n", (), ())', "line 1, column 7"),  # a line break inside a string
        ('(9, "a", (), (("Discard")) ) trailing', "line 1, column 30"),
        ("", "line 1, column 1"),
        ('(9, "unterminated', "line 1, column 5"),
    ],
)
def test_syntax_errors_give_line_and_column(text: str, where: str) -> None:
    err = refused(text)
    assert err.position == where, str(err)


def test_structure_errors_name_the_rule() -> None:
    err = refused('( (9, "short", ()) )')
    assert err.rule == "short" and "4 elements" in err.reason
    err = refused('( (9, "x", ("Subject"), ((Discard))) )')
    assert err.rule == "x" and err.position.startswith("rule 1, condition 1")


# -- JSON ------------------------------------------------------------------------------


def test_json_round_trip_and_array_form() -> None:
    rules = parse_rules(f"({COPY_OUTGOING}, {DEPT1})", Level.SERVER)
    data = rules_to_json(rules)
    assert data[0] == {
        "priority": 9,
        "name": "Copy outgoing",
        "conditions": [["Source", "in", "trusted,authenticated"]],
        "actions": [["Store in", "~security/outgoing"]],
    }
    assert rules_from_json(json.dumps(data), Level.SERVER) == rules
    assert rules_from_json(rules_to_stored(rules), Level.SERVER) == rules
    assert parse_any(json.dumps(data), Level.SERVER) == rules
    assert parse_any(format_rules(rules), Level.SERVER) == rules


def test_json_refusals_name_the_rule() -> None:
    with pytest.raises(RuleError) as info:
        rules_from_json(
            '[{"priority": 9, "name": "j", "conditions": [["Subject", "is"]],'
            ' "actions": [["Bogus"]]}]',
            Level.SERVER,
        )
    assert info.value.rule == "j" and info.value.position == "rule 1, action 1"
    with pytest.raises(RuleError) as info:
        rules_from_json("[1, 2", Level.SERVER)
    assert "invalid JSON" in info.value.reason


# -- RulesAllowed ------------------------------------------------------------------------


def test_rules_allowed_limits_what_users_may_set() -> None:
    filters = check_rules(
        [
            Rule(
                5,
                "f",
                (),
                (
                    Action("Store in", "Junk"),
                    Action("Mark", "Seen"),
                    Action("Discard"),
                    Action("Stop Processing"),
                ),
            )
        ],
        Level.ACCOUNT,
    )
    sends = check_rules([Rule(5, "s", (), (Action("Redirect to", "a@b.c"),))], Level.ACCOUNT)
    runs = check_rules([Rule(5, "x", (), (Action("Execute", "/bin/true"),))], Level.ACCOUNT)
    check_allowed(filters, "Filter Only")
    with pytest.raises(RuleError, match="RulesAllowed is 'Filter Only'"):
        check_allowed(sends, "Filter Only")
    check_allowed(sends, "All But Exec")
    with pytest.raises(RuleError, match="only server administrators"):
        check_allowed(runs, "Any")
    with pytest.raises(RuleError):
        check_allowed(filters, "None")
