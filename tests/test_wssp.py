"""WSSP (spec web.md §4) on strings: every element, every function, the How To
example of §4.6, template errors logged with their line and never raised,
HTML: escaping against XSS, and raw output left raw (the §4.3 pitfall)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pytest

from waypost.web.wssp import (
    MAX_INCLUDE_DEPTH,
    STRINGS_KEY,
    Page,
    compile_page,
    encode,
    to_text,
    truth,
)

LOGGER = "waypost.web.wssp"


def render(text: str, data: dict[str, Any] | None = None, **files: str) -> str:
    """Compile and render ``text``; ``files`` are the .wssi files INCLUDE finds
    (keyword names use ``_`` for ``.``: ``login_wssi``)."""
    pages = {name.replace("_", "."): compile_page(src, name.replace("_", ".")) for name, src in files.items()}
    return compile_page(text, "t.wssp", skin="test").render(data or {}, include=pages.get)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


# --- §4.1 / §4.3 text elements -------------------------------------------------


def test_the_spec_sample_renders() -> None:
    page = (
        "<h1>Welcome to %%server%%. Your ID is %%ID%%.</h1>\n"
        "<!--%%IF EXISTS(lastLogin)-->\n"
        "Last time you visited us on %%lastLogin%%\n"
        "<!--%%ENDIF-->\n"
    )
    assert render(page, {"server": "mail.example", "ID": "bob"}) == (
        "<h1>Welcome to mail.example. Your ID is bob.</h1>\n\n"
    )
    assert render(page, {"server": "s", "ID": "b", "lastLogin": "Monday"}) == (
        "<h1>Welcome to s. Your ID is b.</h1>\n\nLast time you visited us on Monday\n\n"
    )


def test_text_without_elements_is_copied_byte_for_byte() -> None:
    text = "<html>\n<!-- a comment -->\n50% off, 100 % sure; <b>x</b>\n</html>\n"
    assert render(text) == text


def test_raw_output_is_raw_the_pitfall() -> None:
    """Plain %%expr%% must not be escaped: skins insert markup through it."""
    markup = '<a href="/x?a=1&b=2">it\'s</a>'
    assert render("%%link%%", {"link": markup}) == markup


@pytest.mark.parametrize(
    "payload",
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "' onmouseover='alert(1)",
        "</textarea><svg onload=alert(1)>",
        "&lt;script&gt;",
    ],
)
def test_html_prefix_escapes_xss_payloads(payload: str) -> None:
    out = render('<input value="%%HTML:v%%"><p>%%HTML:v%%</p>', {"v": payload})
    for ch in "<>\"'":
        assert ch not in out[len('<input value="'):-len("</p>")].replace('"><p>', "")
    assert "<script" not in out and "<img" not in out and "<svg" not in out
    assert out.count("<") == 3  # only the skin's own tags
    assert "&amp;" in render("%%HTML:v%%", {"v": "&"})
    assert render("%%HTML:v%%", {"v": "<>&\"'"}) == "&lt;&gt;&amp;&quot;&#x27;"


def test_url_prefix_encodes_for_query_strings() -> None:
    assert render("?q=%%URL:q%%", {"q": "a b&c=d/é"}) == "?q=a%20b%26c%3Dd%2F%C3%A9"
    assert render("%%URL:q%%", {"q": "../../etc"}) == "..%2F..%2Fetc"


def test_prefixes_are_case_insensitive_and_unknown_ones_are_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert render("%%html:v%%|%%Url:v%%", {"v": "<a b>"}) == "&lt;a b&gt;|%3Ca%20b%3E"
    assert render("[%%JUNK:v%%]", {"v": "x"}) == "[]"
    assert any("unknown text encoding JUNK" in m for m in errors(caplog))


def test_missing_values_print_nothing() -> None:
    assert render("[%%nothing%%|%%a.b.c%%|%%list[5]%%|%%HTML:none%%]", {"none": None}) == "[|||]"


def test_values_to_text() -> None:
    assert to_text("x") == "x"
    assert to_text(42) == "42" and to_text(-3) == "-3"
    assert to_text(2.0) == "2" and to_text(2.5) == "2.5"
    assert to_text(True) == "YES" and to_text(False) == "NO"
    assert to_text(None) == ""
    assert to_text(dt.datetime(2026, 12, 4, 17, 5, 9)) == "2026-12-04 17:05"
    assert to_text(dt.date(2026, 12, 4)) == "2026-12-04"
    # CGP textual form (cli.md §2) for arrays and dictionaries
    assert to_text(["A", "b c", 5, None]) == '(A, "b c", #5, #NULL#)'
    assert to_text({"Key1": ["A", "B"], "Third Key": "x"}) == '{Key1=(A, B);"Third Key"=x;}'
    assert to_text({"a": 'q"\\'}) == '{a="q\\"\\\\";}'
    assert to_text([b"\x1d\xca\x87"]) == "([HcqH])"
    assert to_text([dt.datetime(2011, 11, 7, 16, 53, 5)]) == "(#T07-11-2011_16:53:05)"
    assert to_text([]) == "()" and to_text({}) == "{}"


# --- §4.2 expressions -----------------------------------------------------------


DATA: dict[str, Any] = {
    "user": {"name": "Ann", "Real-Name": "Ann Lee", "boxes": ["INBOX", "Sent", "Drafts"]},
    "list": ["zero", "one", "two"],
    "n": 1,
    "Case": "upper",
    "case": "lower",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("user.name", "Ann"),
        ("user.Real-Name", "Ann Lee"),
        ("user.boxes[0]", "INBOX"),
        ("user.boxes[2]", "Drafts"),
        ("user.boxes[3]", ""),
        ("list[n]", "one"),
        ('user["name"]', "Ann"),
        ("Case", "upper"),
        ("case", "lower"),  # keys are case-sensitive
        ('"a \\"quoted\\" \\\\ text"', 'a "quoted" \\ text'),
        ("7", "7"),
        ("(user.name)", "Ann"),
        ("  user . name  ", "Ann"),
    ],
)
def test_data_keyed_indexed_and_constant_elements(expr: str, expected: str) -> None:
    assert render(f"%%{expr}%%", DATA) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("!missing", True),
        ("!list", False),
        ("yes & no", False),
        ("yes | no", True),
        ("yes ^ no", True),
        ("yes ^ yes", False),
        ("!(yes & no)", True),
        ("no | yes & yes", True),  # & binds tighter than |
        ("(no | yes) & no", False),
        ("!!yes", True),
        ('user.name == "Ann"', True),
        ('user.name != "Ann"', False),
        ('user.name == "ann"', False),  # case-sensitive [waypost]
        ("n == 1", True),
        ('missing == ""', True),
        ("n == 1 & yes", True),
    ],
)
def test_boolean_operators_and_comparison_sugar(expr: str, expected: bool) -> None:
    data = {**DATA, "yes": "YES", "no": "NO"}
    out = render(f"<!--%%IF {expr}-->T<!--%%ELSE-->F<!--%%ENDIF-->", data)
    assert out == ("T" if expected else "F")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("NO", False),
        ("no", False),
        ("FALSE", False),
        ("False", False),
        ("0", False),
        (0, False),
        (0.0, False),
        (False, False),
        ([], False),
        ("YES", True),
        ("x", True),
        (" ", True),
        ("00", True),
        (1, True),
        (True, True),
        (["a"], True),
        ({}, True),
        ({"a": 1}, True),
    ],
)
def test_truth(value: Any, expected: bool) -> None:
    assert truth(value) is expected
    assert render("<!--%%IF v-->T<!--%%ELSE-->F<!--%%ENDIF-->", {"v": value}) == "TF"[not expected]


def test_missing_value_is_false() -> None:
    assert render("<!--%%IF v-->T<!--%%ELSE-->F<!--%%ENDIF-->") == "F"


# --- functions (§4.2 table) -----------------------------------------------------


def test_exists() -> None:
    tpl = "%%EXISTS(a)%% %%EXISTS(b)%% %%EXISTS(c)%% %%EXISTS(d.e)%% %%exists(a)%%"
    assert render(tpl, {"a": "", "b": None, "d": {"e": 0}}) == "YES NO NO YES YES"


def test_equals() -> None:
    data = {"a": "x", "b": "x", "c": "X", "n": 5}
    assert render("%%EQUALS(a AND b)%% %%EQUALS(a AND c)%% %%Equals(n and \"5\")%%", data) == "YES NO YES"
    assert render("%%EQUALS(a, b)%%", data) == "YES"


def test_isindex_marks_the_current_row() -> None:
    tpl = (
        "<!--%%FOREACH rows-->"
        "<!--%%IF ISINDEX(selected IN rows)-->[%%rows[]%%]<!--%%ELSE-->%%rows[]%%<!--%%ENDIF-->"
        "<!--%%ENDFOR-->"
    )
    assert render(tpl, {"rows": ["a", "b", "c"], "selected": 1}) == "a[b]c"
    assert render(tpl, {"rows": ["a", "b", "c"], "selected": "2"}) == "ab[c]"
    assert render(tpl, {"rows": ["a", "b"], "selected": "x"}) == "ab"
    assert render("%%ISINDEX(0 IN rows)%%", {"rows": ["a"]}) == "NO"  # not inside the loop
    tpl = "<!--%%FOREACH rows-->%%ISINDEX(1 IN rows[])%%,%%IsIndex(0 in rows)%%;<!--%%ENDFOR-->"
    assert render(tpl, {"rows": ["a", "b"]}) == "NO,YES;YES,NO;"


def test_translate() -> None:
    data = {"code": "badPassword", "msgs": {"badPassword": "Wrong password"}}
    assert render("%%TRANSLATE(code USING msgs)%%", data) == "Wrong password"
    assert render("[%%TRANSLATE(other USING msgs)%%]", {**data, "other": "zzz"}) == "[]"
    assert render("[%%TRANSLATE(code USING code)%%]", data) == "[]"
    assert render('%%translate("badPassword" using msgs)%%', data) == "Wrong password"


def test_string_reads_the_skins_strings() -> None:
    data = {STRINGS_KEY: {"Subject": "Sujet", "From": "De"}, "k": "From", "d": {"k": "From"}}
    # a bare word is the key itself; any other argument is evaluated
    assert render("%%STRING(Subject)%%|%%STRING(\"Subject\")%%|%%STRING(k)%%|%%STRING(d.k)%%|%%STRING(Nope)%%", data) == (
        "Sujet|Sujet|k|De|Nope"
    )
    assert render("%%STRING(Subject)%%") == "Subject"  # no strings: the key itself
    assert render("%%$strings%%", data) == ""  # not reachable from a skin expression


def test_size() -> None:
    data = {"arr": [1, 2, 3], "d": {"a": 1}, "s": "héllo", "n": 1234}
    assert render("%%SIZE(arr)%% %%SIZE(d)%% %%SIZE(s)%% %%SIZE(n)%% %%SIZE(none)%%", data) == "3 1 5 4 0"
    assert render("<!--%%IF SIZE(arr) == 3-->three<!--%%ENDIF-->", data) == "three"


def test_istrue_isfalse() -> None:
    data = {"y": "yes", "n": "NO"}
    assert render("%%IsTrue(y)%% %%IsTrue(n)%% %%IsFalse(y)%% %%ISFALSE(n)%% %%isfalse(none)%%", data) == (
        "YES NO NO YES YES"
    )


def test_function_names_are_case_insensitive() -> None:
    assert render("%%size(a)%%%%Size(a)%%%%SIZE(a)%%", {"a": "ab"}) == "222"


# --- §4.4 structural elements --------------------------------------------------


def test_if_elif_else() -> None:
    tpl = "<!--%%IF a-->A<!--%%ELIF b-->B<!--%%ELIF c-->C<!--%%ELSE-->E<!--%%ENDIF-->"
    assert render(tpl, {"a": 1, "b": 1}) == "A"
    assert render(tpl, {"b": 1, "c": 1}) == "B"
    assert render(tpl, {"c": 1}) == "C"
    assert render(tpl, {}) == "E"
    assert render("<!--%%IF a-->A<!--%%ENDIF-->", {}) == ""


def test_keywords_are_case_insensitive_and_allow_spaces() -> None:
    tpl = "<!--%%if a -->A<!--%%Elif b  -->B<!--%%else -->E<!--%%EndIf\t-->"
    assert render(tpl, {"a": 1}) == "A"
    assert render(tpl, {"b": 1}) == "B"
    assert render(tpl, {}) == "E"
    tpl = "<!--%%foreach xs -->%%xs[]%%<!--%%endfor xs -->"
    assert render(tpl, {"xs": ["1", "2"]}) == "12"


def test_foreach_with_scanner_and_nesting() -> None:
    tpl = (
        "<!--%%FOREACH boxes-->%%boxes[].name%%("
        "<!--%%FOREACH boxes[].msgs-->%%HTML:boxes[].msgs[].subject%%;<!--%%ENDFOR boxes[].msgs-->"
        ")<!--%%ENDFOR boxes-->"
    )
    data = {
        "boxes": [
            {"name": "INBOX", "msgs": [{"subject": "hi"}, {"subject": "<b>"}]},
            {"name": "Sent", "msgs": []},
            {"name": "Junk"},
        ]
    }
    assert render(tpl, data) == "INBOX(hi;&lt;b&gt;;)Sent()Junk()"


def test_foreach_over_the_same_name_nests_and_restores() -> None:
    tpl = "<!--%%FOREACH a-->%%a[]%%<!--%%FOREACH a-->%%a[]%%<!--%%ENDFOR-->%%a[]%%|<!--%%ENDFOR-->"
    assert render(tpl, {"a": ["x", "y"]}) == "xxyx|yxyy|"


def test_foreach_over_a_non_array_loops_zero_times() -> None:
    tpl = "[<!--%%FOREACH v-->%%v[]%%<!--%%ENDFOR-->]"
    for value in (None, "abc", {"a": 1}, 5):
        assert render(tpl, {"v": value}) == "[]"
    assert render(tpl, {"v": ("a", "b")}) == "[ab]"


def test_scanner_outside_its_loop_is_missing() -> None:
    assert render("[%%a[]%%]", {"a": ["x"]}) == "[]"


def test_whole_array_is_still_reachable_inside_the_loop() -> None:
    tpl = "<!--%%FOREACH a-->%%a[]%%/%%SIZE(a)%% <!--%%ENDFOR-->"
    assert render(tpl, {"a": ["x", "y"]}) == "x/2 y/2 "


def test_include_with_the_same_dataset_and_scanners() -> None:
    tpl = '<!--%%FOREACH a--><!--%%INCLUDE "row.wssi"--><!--%%ENDFOR-->'
    assert render(tpl, {"a": ["x", "y"], "sep": ";"}, row_wssi="%%a[]%%%%sep%%") == "x;y;"


def test_include_nests() -> None:
    assert render('<!--%%INCLUDE "a.wssi" -->', {"v": "V"}, a_wssi='a<!--%%INCLUDE "b.wssi"-->', b_wssi="b%%v%%") == "abV"


def test_missing_include_is_a_comment_and_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    assert render('x<!--%%INCLUDE "login.wssi"-->y') == "x<!-- missing login.wssi -->y"
    assert any("login.wssi" in m and "line 1" in m for m in errors(caplog))
    out = compile_page('<!--%%INCLUDE "a.wssi"-->', "p.wssp").render({})
    assert out == "<!-- missing a.wssi -->"


def test_include_name_cannot_break_out_of_the_comment() -> None:
    out = render('<!--%%INCLUDE "x--!<b>--.wssi"-->')
    assert out == "<!-- missing x- -!&lt;b&gt;- -.wssi -->"


def test_include_depth_is_limited(caplog: pytest.LogCaptureFixture) -> None:
    loop = compile_page('<!--%%INCLUDE "self.wssi"-->[', "self.wssi")
    out = compile_page('<!--%%INCLUDE "self.wssi"-->', "p.wssp").render({}, include=lambda n: loop)
    assert out == "<!-- include too deep: self.wssi -->" + "[" * MAX_INCLUDE_DEPTH
    assert any("deeper than 10" in m for m in errors(caplog))


def test_includer_that_raises_is_a_missing_file(caplog: pytest.LogCaptureFixture) -> None:
    def boom(name: str) -> Page | None:
        raise OSError("disk gone")

    out = compile_page('a<!--%%INCLUDE "x.wssi"-->b', "p.wssp").render({}, include=boom)
    assert out == "a<!-- missing x.wssi -->b"
    assert any("disk gone" in m for m in errors(caplog))


def test_include_is_resolved_once_per_render() -> None:
    calls: list[str] = []
    row = compile_page("r", "row.wssi")

    def include(name: str) -> Page | None:
        calls.append(name)
        return row

    tpl = compile_page('<!--%%FOREACH a--><!--%%INCLUDE "row.wssi"--><!--%%ENDFOR-->', "p.wssp")
    assert tpl.render({"a": list(range(20))}, include=include) == "r" * 20
    assert calls == ["row.wssi"]


def test_how_to_secure_login_example() -> None:
    """§4.6: the skin's login page points clear-text visitors at the secure port."""
    login = (
        "<!--%%IF secureChannel -->\n"
        '<!--%%INCLUDE "login.wssi" -->\n'
        "<!--%%ELSE-->\n"
        '<p><a href="https://%%domainName%%:9100/">Use the secure login</a></p>\n'
        "<!--%%ENDIF-->\n"
    )
    form = '<form method="post"><input name="username" value="%%HTML:loginName%%"></form>'
    clear = render(login, {"domainName": "client.com"}, login_wssi=form)
    assert '<a href="https://client.com:9100/">Use the secure login</a>' in clear
    assert "<form" not in clear
    secure = render(login, {"domainName": "client.com", "secureChannel": True, "loginName": '"x'}, login_wssi=form)
    assert '<input name="username" value="&quot;x">' in secure
    assert "Use the secure login" not in secure


def test_issue_access_recipe_meta_refresh() -> None:
    """Issue 10 point 5: the same recipe with a META refresh to https://domain/."""
    login = (
        "<!--%%IF secureChannel -->\n"
        '<!--%%INCLUDE "login.wssi" -->\n'
        "<!--%%ELSE -->\n"
        '<META HTTP-EQUIV="REFRESH" CONTENT="0; URL=https://%%domainName%%/">\n'
        "<!--%%ENDIF-->\n"
    )
    out = render(login, {"domainName": "client.com", "secureChannel": False}, login_wssi="FORM")
    assert 'URL=https://client.com/"' in out and "FORM" not in out
    out = render(login, {"domainName": "client.com", "secureChannel": True}, login_wssi="FORM")
    assert "FORM" in out and "REFRESH" not in out


# --- errors: logged with skin, file and line; the element is left out ------------


def compile_logged(text: str, caplog: pytest.LogCaptureFixture) -> tuple[Page, list[logging.LogRecord]]:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        page = compile_page(text, "mail.wssp", skin="blue")
    return page, [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("text", "line", "fragment", "expected"),
    [
        ("a\nb\n<!--%%BOGUS x-->c\n", 3, "unknown keyword 'BOGUS'", "a\nb\nc\n"),
        ("a\n%%user.%%b", 2, "bad expression", "a\nb"),
        ("a\n\n%%NOSUCH(x)%%b", 3, "unknown function NOSUCH", "a\n\nb"),
        ('%%"unterminated%%b', 1, "bad expression", "b"),
        ("x\n<!--%%ENDIF-->y", 2, "ENDIF without IF", "x\ny"),
        ("x\n<!--%%ENDFOR-->y", 2, "ENDFOR without FOREACH", "x\ny"),
        ("x\n\n\n<!--%%ELSE-->y", 4, "ELSE without IF", "x\n\n\ny"),
        ("<!--%%ELIF a-->y", 1, "ELIF without IF", "y"),
        ("<!--%%IF a-->A<!--%%ELSE-->B\n<!--%%ELSE-->C<!--%%ENDIF-->", 2, "ELSE after ELSE", "B\nC"),
        ("<!--%%IF a-->A<!--%%ELSE-->B\n<!--%%ELIF b-->C<!--%%ENDIF-->", 2, "ELIF after ELSE", "B\nC"),
        ("<!--%%IF a-->A<!--%%ENDFOR-->B<!--%%ENDIF-->", 1, "ENDFOR without FOREACH", ""),
        ("1\n2\n<!--%%IF a-->A", 3, "IF not closed", "1\n2\n"),
        ("1\n<!--%%FOREACH a-->A", 2, "FOREACH not closed", "1\n"),
        ("<!--%%INCLUDE login.wssi-->x", 1, "quoted file name", "x"),
        ("a\n<!--%%-->b", 2, "unknown keyword", "a\nb"),
        ("<!--%%IF2 a-->b<!--%%ENDIF-->", 1, "unknown keyword 'IF2'", "b"),
        ("<!--%%IF a b-->A<!--%%ELSE-->B<!--%%ENDIF-->", 1, "bad expression in IF", "B"),
        ("<!--%%FOREACH (-->A<!--%%ENDFOR-->", 1, "bad expression in FOREACH", ""),
        ("a<!--%%IF x\n-->b", 1, "without closing '-->'", "a<!--%%IF x\n-->b"),
        ("%%EQUALS(a OR b)%%!", 1, "EQUALS expects AND", "!"),
        ("%%a[1%%!", 1, "bad expression", "!"),
        ("%%a b%%!", 1, "unexpected 'b'", "!"),
    ],
)
def test_template_errors_are_logged_with_line_and_the_element_left_out(
    caplog: pytest.LogCaptureFixture, text: str, line: int, fragment: str, expected: str
) -> None:
    page, records = compile_logged(text, caplog)
    assert records, "a template error must be logged"
    messages = [r.getMessage() for r in records]
    assert any(fragment in m and f"line {line}:" in m for m in messages), messages
    assert all('skin "blue"' in m and "file mail.wssp" in m for m in messages)
    assert any(
        (getattr(r, "wssp_line", None), getattr(r, "wssp_file", None), getattr(r, "wssp_skin", None))
        == (line, "mail.wssp", "blue")
        for r in records
    )
    assert any(e.line == line and fragment in e.message for e in page.errors)
    assert page.render({}) == expected


def test_the_rest_of_a_page_with_an_error_still_renders(caplog: pytest.LogCaptureFixture) -> None:
    text = "<h1>%%title%%</h1>\n<!--%%WHAT-->\n%%bad(%%\n<!--%%IF ok-->ok<!--%%ENDIF-->\n"
    page, records = compile_logged(text, caplog)
    assert len(records) == 2
    assert page.render({"title": "T", "ok": 1}) == "<h1>T</h1>\n\n\nok\n"


def test_unclosed_if_still_guards_its_content(caplog: pytest.LogCaptureFixture) -> None:
    page, _ = compile_logged("public<!--%%IF isAdmin-->secret", caplog)
    assert page.render({}) == "public"
    assert page.render({"isAdmin": "YES"}) == "publicsecret"


def test_a_good_page_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    page, records = compile_logged('<!--%%IF a-->%%b%%<!--%%ELSE--><!--%%INCLUDE "c.wssi"--><!--%%ENDIF-->', caplog)
    assert records == [] and page.errors == []


class Exploding(dict[str, Any]):
    """A dataset whose lookups fail, as a buggy page component might build."""

    def get(self, key: str, default: Any = None) -> Any:
        if key == "boom":
            raise RuntimeError("component bug")
        return super().get(key, default)


def test_runtime_errors_are_logged_and_the_element_dropped(caplog: pytest.LogCaptureFixture) -> None:
    page = compile_page("a\n%%boom%%b\n<!--%%IF boom-->X<!--%%ELSE-->Y<!--%%ENDIF-->\n<!--%%FOREACH boom-->Z<!--%%ENDFOR-->.", "r.wssp", skin="s")
    assert page.render(Exploding(ok=1)) == "a\nb\nY\n."
    messages = errors(caplog)
    assert any("line 2:" in m and "component bug" in m for m in messages)
    assert any("line 3:" in m for m in messages)
    assert any("line 4:" in m for m in messages)


def test_cyclic_data_does_not_crash() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    assert render("[%%c%%]", {"c": cyc}) == "[]"


def test_deep_nesting_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    text = "<!--%%IF a-->" * 200 + "x" + "<!--%%ENDIF-->" * 200
    page = compile_page(text, "deep.wssp")
    assert page.render({"a": 1}) == "x"
    assert any("nests deeper" in e.message for e in page.errors)
    expr = "(" * 5000 + "a" + ")" * 5000
    assert compile_page(f"<!--%%IF {expr}-->x<!--%%ENDIF-->", "e.wssp").render({"a": 1}) == ""
    assert compile_page("%%" + "!" * 3000 + "a%%", "e.wssp").render({}) == ""


def test_render_budget_stops_runaway_pages(caplog: pytest.LogCaptureFixture) -> None:
    tpl = "<!--%%FOREACH a--><!--%%FOREACH a--><!--%%FOREACH a-->x<!--%%ENDFOR--><!--%%ENDFOR--><!--%%ENDFOR-->"
    page = compile_page(tpl, "big.wssp")
    started = time.perf_counter()
    out = page.render({"a": list(range(1000))}, budget=100_000)
    assert time.perf_counter() - started < 2
    assert 0 < len(out) <= 100_000
    assert any("output truncated" in m for m in errors(caplog))
    # a page within budget renders whole
    assert page.render({"a": list(range(10))}) == "x" * 1000


def test_pages_are_reusable_and_not_changed_by_rendering() -> None:
    page = compile_page("<!--%%FOREACH a-->%%a[]%%<!--%%ENDFOR-->", "p.wssp")
    assert page.render({"a": ["1"]}) == "1"
    assert page.render({"a": ["2", "3"]}) == "23"
    assert page.name == "p.wssp" and page.skin == ""


def test_literal_percent_signs_outside_pairs_stay() -> None:
    assert render("width: 100%; %%v%% 5%") == "width: 100%;  5%"
    assert render("<!-- plain %comment -->") == "<!-- plain %comment -->"


def test_text_element_does_not_swallow_a_structural_element() -> None:
    assert render("%%a <!--%%IF b-->B<!--%%ENDIF-->", {"b": 1}) == "%%a B"


def test_encode_converts_to_the_dataset_charset() -> None:
    assert encode("café €", "utf-8") == "café €".encode()
    assert encode("café €", "ISO-8859-1") == b"caf\xe9 &#8364;"
    assert encode("x", "no-such-charset") == b"x"
    assert encode("x", None) == b"x"


def test_a_fifty_row_message_list_renders_fast() -> None:
    """Compile once, render fast: well under a millisecond per row."""
    tpl = compile_page(
        '<table><!--%%FOREACH messages--><tr class="<!--%%IF messages[].unread-->unread<!--%%ELSE-->read<!--%%ENDIF-->">'
        '<td><a href="Message.wssp?uid=%%URL:messages[].uid%%">%%HTML:messages[].subject%%</a></td>'
        "<td>%%HTML:messages[].from%%</td><td>%%messages[].date%%</td><td>%%messages[].size%%</td>"
        "<!--%%IF ISINDEX(selected IN messages)--><td>*</td><!--%%ENDIF--></tr><!--%%ENDFOR--></table>",
        "list.wssp",
    )
    rows = [
        {"uid": i, "subject": f"Subject <{i}>", "from": "a@b.c", "date": "2026-12-04", "size": 1234, "unread": i % 2}
        for i in range(50)
    ]
    data = {"messages": rows, "selected": 3}
    tpl.render(data)
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        out = tpl.render(data)
    per_row = (time.perf_counter() - started) / runs / 50
    assert out.count("<tr") == 50 and "Subject &lt;7&gt;" in out
    assert per_row < 0.0002, f"{per_row * 1e6:.1f} µs per row"
