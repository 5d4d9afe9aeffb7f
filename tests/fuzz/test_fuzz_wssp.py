"""Fuzz target for WSSP (web.md §4) seeded with the stock skin's own pages
(``src/waypost/web/skins``) and tricky elements (``corpus/wssp``): mutated
real pages compile and render without raising, deterministically, within the
work budget, and the stock pages themselves compile without errors.

``tests/test_wssp_fuzz.py`` (issue 10) generates WSSP from a grammar; this
target starts from what skins really contain.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from tests.support.fuzz import TARGET, seed_ids, seeds, text_mutants

import waypost.web
from waypost.web.wssp import STRINGS_KEY, compile_page

QUIET = logging.getLogger("tests.fuzz.wssp")
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())

SKIN = Path(waypost.web.__file__).parent / "skins" / "unnamed"
STOCK = {p.name: p.read_text("utf-8") for p in sorted(SKIN.glob("*.wss[pi]"))}
PAGES = [*STOCK.values(), *(s.decode("utf-8") for s in seeds("wssp"))]
BUDGET = 20_000
TOKENS = ["%%", "<!--%%", "-->", "IF ", "ELIF ", "ELSE", "ENDIF", "FOREACH ", "ENDFOR",
          'INCLUDE "head.wssi"', "HTML:", "URL:", "[]", ".", "(", ")", "&", "|", "!", "==",
          '"', "\\", "\n", "list", "name", "rows", "EXISTS(", "SIZE(", "\x00", "é"]
DATA: dict[str, Any] = {
    "name": "<b>x</b>", "list": ["a", "<", 3, None], "rows": [{"a": 1, "b": ["x"]}, {}],
    "map": {"x": "y"}, "secureChannel": "YES", STRINGS_KEY: {"greeting": "hi"},
}  # fmt: skip


def check(text: str) -> None:
    include = {name: compile_page(page, name, log=QUIET) for name, page in STOCK.items()
               if name.endswith(".wssi")}
    first = compile_page(text, "fuzz.wssp", skin="fuzz", log=QUIET)
    second = compile_page(text, "fuzz.wssp", skin="fuzz", log=QUIET)
    assert first.errors == second.errors
    out = first.render(DATA, include=include.get, budget=BUDGET)
    assert out == second.render(DATA, include=include.get, budget=BUDGET)
    assert len(out) <= (BUDGET + 1) * max(len(text), 200, *map(len, STOCK.values()))


@pytest.mark.parametrize("name", sorted(STOCK))
def test_stock_pages_compile_cleanly(name: str) -> None:
    assert compile_page(STOCK[name], name, log=QUIET).errors == []


@pytest.mark.parametrize("text", PAGES, ids=seed_ids(PAGES))
def test_page_seeds(text: str) -> None:
    check(text)


@TARGET
@given(text_mutants(PAGES, TOKENS, most=8))
def test_pages(text: str) -> None:
    check(text)
