"""Mail HTML made safe to show inside a WebUser page (issue 10 point 6).

The HTML part of a message is attacker-chosen markup. It is cleaned with
``nh3`` (the Ammonia sanitiser: an allow-list HTML5 parser, so no regular
expression games with broken markup) before it reaches a dataset.

Invariants of :func:`sanitize_html`'s output:

* no script of any kind: no ``<script>``, ``<svg>``, ``<math>``, ``<iframe>``,
  ``<object>``, ``<form>``, ``<style>`` or ``<link>`` (their content is dropped
  for ``script`` and ``style``), no event-handler attributes, no URL scheme but
  ``http``, ``https``, ``mailto`` and ``cid`` (so no ``javascript:`` or
  ``data:``);
* no style that loads anything: ``style`` attributes keep only the
  declarations of :data:`STYLE_PROPERTIES` whose values hold no ``(``,
  ``\\``, ``@``, ``/*`` or ``url`` (so no ``url()``, ``image-set()``,
  ``expression()``, escapes or imports);
* every link gets ``rel="noopener noreferrer"`` and ``target="_blank"``;
* an image whose ``src`` is remote (``http:``/``https:``) is replaced by the
  placeholder :data:`BLOCKED_IMAGE` unless the caller allows remote images
  [waypost: the original address is kept in ``data-blocked-src`` nowhere; a
  reader who wants it asks for ``ShowImages=1``]; a ``cid:`` image becomes the
  URL the caller's ``cid_url`` returns for that Content-ID (None drops it).

The Content-Security-Policy of the page is the second wall: it forbids inline
script, so even a sanitiser bug cannot run code (webuser.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import nh3

BLOCKED_IMAGE = (
    "data:image/svg+xml,%3Csvg xmlns='http%3A//www.w3.org/2000/svg' width='48' height='32'%3E"
    "%3Crect x='1' y='1' width='46' height='30' fill='%23eef1f5' stroke='%23c8ced8'/%3E"
    "%3Cpath d='M6 6l36 20' stroke='%23a4161a' stroke-width='2'/%3E%3C/svg%3E"
)
"""[waypost] What a remote image shows until the reader asks for images: a
small crossed-out frame as a ``data:`` URL (the page's policy allows
``data:`` images; a skin file would need an SVG namespace URL, which the stock
skin's no-``http://`` rule forbids)."""

TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
    "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul",
})
GENERIC_ATTRIBUTES = frozenset({"style", "title", "align", "dir", "lang"})
ATTRIBUTES = {
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border"},
    "font": {"color", "size", "face"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor", "nowrap"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor", "nowrap"},
    "tr": {"valign", "bgcolor"},
    "col": {"width", "span"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid"})
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font-weight", "font-style", "font-size", "font-family",
    "text-align", "text-decoration", "line-height", "margin", "margin-top", "margin-bottom",
    "margin-left", "margin-right", "padding", "padding-top", "padding-bottom",
    "padding-left", "padding-right", "border", "border-collapse", "width", "height",
    "vertical-align", "white-space",
})
_BAD_STYLE_VALUE = re.compile(r"[(\\@]|/\*|url|expression|image", re.IGNORECASE)
_REMOTE = re.compile(r"\s*https?:", re.IGNORECASE)
_CID = re.compile(r"\s*cid:", re.IGNORECASE)


def clean_style(value: str) -> str:
    """Only plain declarations of the allowed properties; nothing that loads."""
    kept = []
    for declaration in value.split(";"):
        prop, colon, val = declaration.partition(":")
        prop = prop.strip().lower()
        if colon and prop in STYLE_PROPERTIES and not _BAD_STYLE_VALUE.search(val):
            kept.append(f"{prop}: {val.strip()}")
    return "; ".join(kept)


def sanitize_html(html: str, *, show_images: bool = False,
                  cid_url: Callable[[str], str | None] = lambda cid: None) -> str:
    """``html`` (a whole document or a fragment) as a safe fragment."""
    return sanitize(html, show_images=show_images, cid_url=cid_url)[0]


def sanitize(html: str, *, show_images: bool = False,
             cid_url: Callable[[str], str | None] = lambda cid: None) -> tuple[str, int]:
    """The safe fragment and how many remote images it blocked (so a page
    offers "show images" only when there are some)."""
    blocked = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        if name == "style":
            return clean_style(value) or None
        if tag == "img" and name == "src":
            if _CID.match(value):
                return cid_url(value.strip()[4:])
            if _REMOTE.match(value):
                if show_images:
                    return value
                nonlocal blocked
                blocked += 1
                return BLOCKED_IMAGE
            return None  # relative or other: nothing of ours to load
        return value

    cleaned = nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags={"script", "style", "title", "head"},
        attributes={"*": set(GENERIC_ATTRIBUTES), **{k: set(v) for k, v in ATTRIBUTES.items()}},
        attribute_filter=attribute,
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return cleaned, blocked

