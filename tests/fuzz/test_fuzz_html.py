"""Fuzz target for the webmail's HTML sanitiser (``web/sanitize.py``, which
parses the message's HTML with nh3) seeded with XSS vectors, and for SORT's
base-subject extraction (RFC 5256 §2.1), a small parser of its own.

Properties: whatever the HTML, what comes out, read by an independent HTML
parser (the standard library's), holds only the allowed tags and attributes,
no event handler, no script URL, no style the style filter refuses, and
remote images only as the blocked placeholder; sanitising is stable (the
output sanitises to itself). The base subject is a fixed point of its own
extraction.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.fuzz import TARGET, seed_ids, text_mutants, text_seeds

from waypost.services.mailaccess.sort import base_subject
from waypost.web.sanitize import (
    ATTRIBUTES,
    BLOCKED_IMAGE,
    GENERIC_ATTRIBUTES,
    TAGS,
    clean_style,
    sanitize,
)

PAGES = text_seeds("html")
TOKENS = ["<", ">", "</", "/>", "=", '"', "'", "`", " ", "&#", "&#x", ";", "javascript:",
          "on", "onerror=", "style=", "href=", "src=", "url(", "expression(", "<script>",
          "<img ", "<a ", "<svg", "<style>", "<!--", "-->", "<![CDATA[", "\x00", "\t", "\n"]
# What nh3 adds itself: rel on links, target=_blank.
ADDED = {"a": {"rel", "target"}}


class Walk(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def check(html: str) -> None:
    out, blocked = sanitize(html, cid_url=lambda cid: f"Part/{len(cid)}")
    assert blocked >= 0
    walk = Walk()
    walk.feed(out)
    walk.close()
    for tag, attrs in walk.found:
        assert tag in TAGS, tag
        allowed = GENERIC_ATTRIBUTES | ATTRIBUTES.get(tag, set()) | ADDED.get(tag, set())
        for name, value in attrs:
            assert name in allowed and not name.startswith("on"), (tag, name)
            text = (value or "").strip().lower()
            assert not text.startswith(("javascript:", "vbscript:", "data:text")), (tag, value)
            if name == "style":
                assert clean_style(value or "") == value, value
            if tag == "img" and name == "src":
                assert value == BLOCKED_IMAGE or (value or "").startswith("Part/"), value
    # Stable: sanitised again, the same elements (our own img src rewrites aside).
    again = Walk()
    again.feed(sanitize(out)[0])
    again.close()
    assert shape(again.found) == shape(walk.found)


def shape(found: list[tuple[str, list[tuple[str, str | None]]]]) -> list[object]:
    return [(tag, sorted((n, v or "") for n, v in attrs if not (tag == "img" and n == "src")))
            for tag, attrs in found]


@pytest.mark.parametrize("html", PAGES, ids=seed_ids(PAGES))
def test_html_seeds(html: str) -> None:
    check(html)


@TARGET
@given(text_mutants(PAGES, TOKENS, most=8))
def test_html(html: str) -> None:
    check(html)


SUBJECTS = ["Re: Fwd: [list] Hello (fwd)", "[fwd: re: x]", "RE:re: [a][b] c", "  \t", "[x]",
            "Fw: [fwd: [y] z] (fwd) (fwd)", "réponse: été", "[]", "[fwd:]", "Re:", "((fwd))"]


@TARGET
@given(text_mutants(SUBJECTS, ["Re:", "Fwd:", "fw:", "[", "]", "(fwd)", " ", "\t", ":", "x"]))
def test_base_subject_is_a_fixed_point(subject: str) -> None:
    base, _ = base_subject(subject)
    assert base_subject(base)[0] == base
    assert base == base.strip(" ") or not base.strip(" ")


@TARGET
@given(st.text(max_size=30))
def test_base_subject_of_any_text(subject: str) -> None:
    base, reply = base_subject(subject)
    assert isinstance(base, str) and isinstance(reply, bool)
