"""The mail HTML sanitiser (waypost.web.sanitize): hostile markup in, a
fragment without script, loading styles or remote images out."""

from __future__ import annotations

import pytest

from waypost.web.sanitize import BLOCKED_IMAGE, clean_style, sanitize, sanitize_html

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    "<math><mtext><script>alert(1)</script></mtext></math>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<object data=\"x.swf\"></object><embed src=x>",
    "<form action=\"https://evil.example/\"><input name=p></form>",
    "<body onload=alert(1)>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<p style=\"width: expression(alert(1))\">x</p>",
    "<style>@import 'https://evil.example/x.css';</style>",
    "<link rel=stylesheet href=\"https://evil.example/x.css\">",
    "<meta http-equiv=refresh content=\"0;url=https://evil.example/\">",
    "<base href=\"https://evil.example/\">",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<!--<img src=x onerror=alert(1)>-->",
    "<img src=\"data:image/svg+xml;base64,PHN2Zz4=\">",
    "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_script_survives(attack: str) -> None:
    out = sanitize_html(attack).lower()
    for bad in ("<script", "onerror", "onload", "javascript:", "<svg", "<iframe", "<object",
                "<embed", "<form", "<style", "<link", "<meta", "<base", "expression(",
                "url(", "data:", "evil.example"):
        assert bad not in out, (attack, out)


def test_text_and_harmless_markup_stay() -> None:
    out = sanitize_html("<p>Hi <b>you</b> &amp; <i>me</i></p><ul><li>one</li></ul>")
    assert out == "<p>Hi <b>you</b> &amp; <i>me</i></p><ul><li>one</li></ul>"


def test_links_open_apart_without_referrer() -> None:
    out = sanitize_html('<a href="https://example.org/">x</a>')
    assert 'target="_blank"' in out and 'rel="noopener noreferrer"' in out


def test_remote_images_are_blocked_until_asked() -> None:
    html = '<img src="https://t.example/p.png"><img src="http://t.example/q.gif">'
    out, blocked = sanitize(html)
    assert blocked == 2 and "t.example" not in out and out.count(BLOCKED_IMAGE) == 2
    shown, blocked = sanitize(html, show_images=True)
    assert blocked == 0 and 'src="https://t.example/p.png"' in shown


def test_cid_images_go_through_the_callers_url() -> None:
    asked: list[str] = []

    def url(cid: str) -> str | None:
        asked.append(cid)
        return "Part/INBOX/7/2" if cid == "logo@x" else None

    out = sanitize_html('<img src="cid:logo@x"><img src="cid:other@x">', cid_url=url)
    assert asked == ["logo@x", "other@x"]
    assert '<img src="Part/INBOX/7/2">' in out and "other@x" not in out


@pytest.mark.parametrize(("style", "kept"), [
    ("color: red; font-weight: bold", "color: red; font-weight: bold"),
    ("color: red; background-image: url(https://t/x)", "color: red"),
    ("background: url(x)", ""),
    ("color: \\72 ed", ""),
    ("position: fixed; top: 0", ""),
    ("width: 10px /* x */", ""),
    ("font-family: a; behavior: url(x.htc)", "font-family: a"),
])
def test_styles_keep_only_plain_declarations(style: str, kept: str) -> None:
    assert clean_style(style) == kept
