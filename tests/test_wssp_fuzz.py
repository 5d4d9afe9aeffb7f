"""Fuzz target for the WSSP engine (web.md §4, issue 10 point 3): random text
and random WSSP-looking text, with random datasets and a self-referencing
includer, never make ``compile_page(...).render(...)`` raise or hang, and the
output stays bounded by the work budget."""

from __future__ import annotations

import html
import logging
import re
import time
from typing import Any
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.web.wssp import STRINGS_KEY, Page, _lex, compile_page, to_text

QUIET = logging.getLogger("tests.wssp_fuzz")
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())

BUDGET = 20_000
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

NAMES = ["a", "b", "list", "rows", "user", "x", "secureChannel", "domainName", "$strings"]
KEYWORDS = ["IF", "ELIF", "ELSE", "ENDIF", "FOREACH", "ENDFOR", "INCLUDE", "if", "EndFor", "BOGUS", ""]
FUNCTIONS = ["EXISTS", "EQUALS", "ISINDEX", "TRANSLATE", "STRING", "SIZE", "IsTrue", "IsFalse", "NOPE"]
FILES = ["a.wssi", "b.wssi", "self.wssi", "../etc/passwd", "missing.wssi"]

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["YES", "NO", "0", "", "<script>", "a", "b"]),
    st.binary(max_size=8),
)
values = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.sampled_from([*NAMES, "name", "0"]), inner, max_size=5),
    ),
    max_leaves=30,
)
datasets = st.dictionaries(st.sampled_from(NAMES), values, max_size=8)


def expressions() -> st.SearchStrategy[str]:
    atom = st.one_of(
        st.sampled_from(NAMES),
        st.sampled_from(["0", "1", "12", '"x"', '"a\\"b"', '"\\\\"', '"', "()", "[]", ""]),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(lambda e: f"{e}[]", inner),
            st.builds(lambda e, k: f"{e}.{k}", inner, st.sampled_from([*NAMES, "0", ""])),
            st.builds(lambda e, i: f"{e}[{i}]", inner, inner),
            st.builds(lambda e: f"!{e}", inner),
            st.builds(lambda e: f"({e})", inner),
            st.builds(
                lambda a, op, b: f"{a} {op} {b}",
                inner,
                st.sampled_from(["&", "|", "^", "==", "!=", "AND", "IN", "USING", ","]),
                inner,
            ),
            st.builds(lambda f, a: f"{f}({a})", st.sampled_from(FUNCTIONS), inner),
        )

    return st.recursive(atom, extend, max_leaves=8)


def elements() -> st.SearchStrategy[str]:
    exprs = expressions()
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(["\n", "%%", "<!--", "-->", "<!--%%", "%", " "]),
        st.builds(lambda e: f"%%{e}%%", exprs),
        st.builds(lambda p, e: f"%%{p}:{e}%%", st.sampled_from(["HTML", "URL", "url", "XX"]), exprs),
        st.builds(
            lambda k, e, sp: f"<!--%%{k} {e}{sp}-->",
            st.sampled_from(KEYWORDS),
            exprs,
            st.sampled_from(["", " ", "  "]),
        ),
        st.builds(lambda f: f'<!--%%INCLUDE "{f}" -->', st.sampled_from(FILES)),
        st.builds(lambda k: f"<!--%%{k}-->", st.sampled_from(KEYWORDS)),
    )


wssp_texts = st.lists(elements(), max_size=40).map("".join)


def check(main: str, files: dict[str, str], data: dict[str, Any]) -> None:
    pages: dict[str, Page] = {}
    for name, text in files.items():
        pages[name] = compile_page(text, name, skin="fuzz", log=QUIET)
    page = compile_page(main, "main.wssp", skin="fuzz", log=QUIET)
    pages["self.wssi"] = page
    started = time.perf_counter()
    out = page.render(data, include=pages.get, budget=BUDGET)
    elapsed = time.perf_counter() - started
    assert isinstance(out, str)
    # Every node visit appends at most one template text, one value's text or one
    # constant; the budget bounds the visits.
    piece = max([len(main), *(len(t) for t in files.values()), 60])
    piece = max([piece, *(len(to_text(v)) for v in data.values())])
    assert len(out) <= (BUDGET + 1) * piece
    assert elapsed < 10, f"render took {elapsed:.1f} s"


@SETTINGS
@given(st.text(max_size=400), datasets)
def test_random_text_never_raises(text: str, data: dict[str, Any]) -> None:
    check(text, {}, data)


@SETTINGS
@given(wssp_texts, st.dictionaries(st.sampled_from(FILES[:2]), wssp_texts, max_size=2), datasets)
def test_random_wssp_never_raises_or_hangs(main: str, files: dict[str, str], data: dict[str, Any]) -> None:
    check(main, files, {**data, STRINGS_KEY: {"a": "<b>"}})


@SETTINGS
@given(wssp_texts, datasets)
def test_compiling_is_deterministic(text: str, data: dict[str, Any]) -> None:
    a = compile_page(text, "p.wssp", log=QUIET)
    b = compile_page(text, "p.wssp", log=QUIET)
    assert a.errors == b.errors
    assert a.render(data, budget=BUDGET) == b.render(data, budget=BUDGET)


def test_foreach_over_a_huge_array_is_linear() -> None:
    page = compile_page("<!--%%FOREACH a-->%%HTML:a[]%%,<!--%%ENDFOR-->", "big.wssp", log=QUIET)
    small = list(range(20_000))
    started = time.perf_counter()
    page.render({"a": small})
    t_small = time.perf_counter() - started
    big = list(range(200_000))
    started = time.perf_counter()
    out = page.render({"a": big})
    t_big = time.perf_counter() - started
    assert out.count(",") == 200_000
    assert t_big < max(40 * t_small, 0.5), (t_small, t_big)


def test_self_including_fan_out_is_bounded() -> None:
    page = compile_page('<!--%%INCLUDE "self.wssi"-->' * 8 + "x", "self.wssi", log=QUIET)
    started = time.perf_counter()
    out = page.render({}, include=lambda name: page, budget=BUDGET)
    assert time.perf_counter() - started < 5
    assert len(out) < BUDGET * 60



@SETTINGS
@given(values)
def test_html_and_url_outputs_round_trip_and_carry_no_markup(value: Any) -> None:
    text = to_text(value)
    escaped = compile_page("%%HTML:v%%", "h.wssp", log=QUIET).render({"v": value})
    assert not set("<>\"'") & set(escaped)
    assert html.unescape(escaped) == text
    encoded = compile_page("%%URL:v%%", "u.wssp", log=QUIET).render({"v": value})
    assert unquote(encoded) == text
    assert not set("<>\"' /?&#\n") & set(encoded)


# The lexer is hand-written for linear time; this regex says the same thing
# plainly (and is quadratic on long lines), so it serves as the oracle.
ORACLE = re.compile(
    r"<!--%%[ \t]*(?P<kw>[A-Za-z0-9_]*)(?P<args>[^\n]*?)-->"
    r"|(?P<open><!--%%)"
    r"|%%(?P<expr>(?:[^%\n]|%(?!%))*)(?<!<!--)%%"
)


def oracle(text: str) -> list[tuple[str, int, int, str, str]]:
    found = []
    for m in ORACLE.finditer(text):
        if m.group("expr") is not None:
            found.append(("expr", m.start(), m.end(), "", m.group("expr")))
        elif m.group("open") is not None:
            found.append(("open", m.start(), m.end(), "", ""))
        else:
            found.append(("struct", m.start(), m.end(), m.group("kw"), m.group("args")))
    return found


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["<!--", "%%", "%", "-->", "-", "<", "!", "\n", " ", "\t", "IF", "a", "x ", "2", "_"]), max_size=30).map("".join))
def test_lexer_agrees_with_the_plain_regex(text: str) -> None:
    mine = [(x.kind, x.start, x.end, x.keyword, x.args) for x in _lex(text)]
    assert mine == oracle(text)


def test_lexing_a_long_line_of_unclosed_elements_is_linear() -> None:
    started = time.perf_counter()
    page = compile_page("<!--%%IF x" * 20_000 + "%%a b" * 20_000, "long.wssp", log=QUIET)
    assert time.perf_counter() - started < 5
    assert len(page.errors) == 30_000
