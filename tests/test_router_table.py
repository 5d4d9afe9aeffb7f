"""Router Table text format (router.md §2, §3, §5) and the compiled index."""

from __future__ import annotations

import random

import pytest

from waypost.services.router.table import Kind, Record, TableError, compile_table, parse_line


def test_comments_blank_lines_and_spaces_are_ignored() -> None:
    table = compile_table("; a comment\n\n  www.x.com   =  x.com   ; trailing comment\n")
    (record,) = table.records
    assert (record.line, record.left, record.right) == (3, "www.x.com", "x.com")


def test_prefixes_are_case_insensitive_and_combine() -> None:
    record = parse_line("norelay: MAIL:  <a@b.com> = c@d.com", 1)
    assert record is not None
    assert record.no_relay and not record.relay
    assert record.kinds == frozenset({Kind.MAIL})
    record = parse_line("Signal:Access:x.com = y.com", 1)
    assert record is not None and record.kinds == frozenset({Kind.SIGNAL, Kind.ACCESS})
    record = parse_line("RelayAll:<report-*@main.dom> = report-*@reports.example", 1, {"main.dom"})
    assert record is not None and record.relay and record.left == "report-*"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("no equals sign here", "missing '='"),
        ("= right.com", "empty left side"),
        ("left.com =", "empty right side"),
        ("<a@b.com = c@d.com", "unbalanced angle brackets"),
        ("a@b.com = c@d.com", "must be written <in brackets>"),
        ("*.a*.com = x.com", "at most one '*'"),
        ("a.com = *@b.com", "needs a '*' on the left side"),
        ("a.com = b.com c.com", "right side must be one address"),
        ("Relay:NoRelay:a.com = b.com", "cannot be combined"),
        ("bad domain!.com = b.com", "invalid domain name"),
    ],
)
def test_bad_lines_name_the_line_and_the_reason(line: str, reason: str) -> None:
    with pytest.raises(TableError) as info:
        compile_table(f"good.com = fine.com\n; comment\n{line}\n")
    assert info.value.line == 3
    assert reason in str(info.value)
    assert str(info.value).startswith("line 3: ")


def test_exact_records_beat_wildcards_and_first_wildcard_wins() -> None:
    table = compile_table(
        "*.b.com = first.com\n*.b.com = second.com\nx*.b.com = third.com\nx.b.com = exact.com\n"
    )
    record, star = table.match("u@x.b.com", "x.b.com", Kind.MAIL, False)
    assert record.right == "exact.com" and star == ""
    record, star = table.match("u@xy.b.com", "xy.b.com", Kind.MAIL, False)
    assert record.right == "first.com" and star == "xy"


def test_wildcard_does_not_match_the_bare_suffix() -> None:
    table = compile_table("*.domain.dom = *@domain.dom\n")
    assert table.match("x@domain.dom", "domain.dom", Kind.MAIL, False) is None
    assert table.match("x@john.domain.dom", "john.domain.dom", Kind.MAIL, False)[1] == "john"


def test_kind_and_norelay_filters() -> None:
    table = compile_table("Signal:a.com = sig.com\nNoRelay:a.com = own.com\na.com = all.com\n")
    assert table.match("u@a.com", "a.com", Kind.SIGNAL, False)[0].right == "sig.com"
    assert table.match("u@a.com", "a.com", Kind.MAIL, True)[0].right == "own.com"
    assert table.match("u@a.com", "a.com", Kind.MAIL, False)[0].right == "all.com"


def _naive(records: list[Record], name: str) -> tuple[int, str] | None:
    for record in records:
        prefix, _, suffix = record.left.partition("*")
        if len(name) >= len(prefix) + len(suffix) and name.startswith(prefix) and \
                name.endswith(suffix):
            return record.line, name[len(prefix) : len(name) - len(suffix)]
    return None


def test_wildcard_index_agrees_with_a_linear_scan() -> None:
    rng = random.Random(7)
    labels = ["a", "b", "ab", "x", "mail", "dom", "co"]
    lines = []
    for _ in range(300):
        left = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 3)))
        cut = rng.randint(0, len(left))
        lines.append(f"{left[:cut]}*{left[cut:]} = target{len(lines)}.com")
    table = compile_table("\n".join(lines))
    for _ in range(2000):
        name = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 4)))
        found = table.wild_domains.match(name, lambda r: True)
        got = None if found is None else (found[0].line, found[1])
        assert got == _naive(table.records, name), name
