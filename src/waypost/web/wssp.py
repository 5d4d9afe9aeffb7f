"""WSSP -- Web Server-Side Pages: compiler and renderer (spec web.md §4).

A skin file is compiled once (:func:`compile_page`) into a small tree of
Python node objects (a :class:`Page`) and rendered many times against a
dataset (:meth:`Page.render`). We compile to our own nodes rather than to
Jinja2: WSSP's truth rules, missing values, scanners and error recovery map
one-to-one onto a few classes, and there is no second escaping or
undefined-value policy to keep in step.

Invariants
----------
* Pure: no I/O. ``INCLUDE`` goes through the caller's :data:`Includer`
  (the skin search order of §5.3 lives in the pages module, not here).
* Never raises: a template error (unknown keyword, bad expression, unclosed
  block, ``ENDIF`` without ``IF``, a failing function or includer at render
  time) is logged with skin, file and line, and the page renders without
  that element (§4.4 [waypost]). Errors found at compile time are logged
  once, at compile time, and kept in :attr:`Page.errors`.
* Plain ``%%expr%%`` is RAW (§4.3 pitfall): skins rely on it for markup.
  Only ``%%HTML:expr%%`` escapes (``& < > " '``); ``%%URL:expr%%``
  percent-encodes everything but ``A-Z a-z 0-9 _ . - ~`` (also ``/``, so a
  value cannot add a path segment). Datasets must carry user-controlled
  values pre-escaped or have the skin show them through ``HTML:``.
* Bounded work: rendering counts the nodes it visits (loop bodies,
  includes); past ``budget`` (default :data:`MAX_STEPS`) it stops, logs and
  returns what it has. Includes nest at most :data:`MAX_INCLUDE_DEPTH`
  (10) deep, blocks at most :data:`MAX_NESTING` deep, so neither a
  self-including skin nor a FOREACH over a huge array can hang a worker.

Choices where the spec is open (each marked [waypost] or "unconfirmed")
-----------------------------------------------------------------------
* Lexing: a text element ``%%expr%%`` stays on one line and contains no
  ``%%``; a structural element ``<!--%%KEYWORD args-->`` too. A stray
  ``%%`` pair whose inside is not an expression is a template error and is
  removed (so a skin writes a literal ``%%`` only outside such pairs); a
  ``%%`` with no partner on its line is plain text. The lexer is
  hand-written and linear in the file size (tests check it against the
  plain regular expression).
* Text encodings: ``HTML:`` and ``URL:`` prefixes, case-insensitive.
* Values to text (§4.3): strings as they are; ``True``/``False`` as
  ``YES``/``NO`` (the CGP spelling of booleans in settings); ``None`` or a
  missing value as the empty string; ints as digits, floats as digits
  without a trailing ``.0``; ``datetime`` as ``YYYY-MM-DD HH:MM``
  (``date`` as ``YYYY-MM-DD``): pages that want the user's locale put
  preformatted strings in the dataset. Arrays and dictionaries print in the
  CGP textual form of cli.md §2 (``(a, "b c")``, ``{k=v;}``: nested
  strings quoted unless atoms, numbers ``#n``, bytes ``[base64]``).
* Truth (§4.2): missing/``None``, ``""``, ``NO``, ``FALSE`` (any case),
  ``0``, ``False``, an empty array are false; everything else is true
  (including an empty dictionary).
* Names: dataset keys and dictionary keys are case-sensitive; function
  names and the keywords ``AND``/``IN``/``USING`` are not. A name is
  letters, digits, ``_`` and ``-`` (not first); a bare run of digits is a
  number constant [waypost]. ``a[i]`` is 0-based [waypost]; on a
  dictionary, ``a["key"]`` looks the key up.
* ``FOREACH expr``: loops over an array (anything else loops zero times).
  The scanner ``expr[]`` names the current element; scanners are matched by
  the expression's text, so ``FOREACH a.b`` pairs with ``a.b[]`` and loops
  nest (``FOREACH box[].messages``). ``ENDFOR`` may repeat the name; a
  different name is logged but still closes the loop.
* Functions (§4.2 table):
  ``EXISTS(e)`` -- ``e`` has a value (not missing, not ``None``).
  ``EQUALS(a AND b)`` -- text forms equal, case-sensitive; ``a == b`` and
  ``a != b`` are sugar. ``ISINDEX(x IN s)`` -- inside ``FOREACH s``, the
  current 0-based index equals the number ``x`` (unconfirmed semantics;
  ``s`` may also be written as the scanner ``s[]``).
  ``TRANSLATE(x USING d)`` -- the value under key text-of-``x`` in the
  dictionary ``d``, missing if absent (unconfirmed semantics).
  ``STRING(key)`` -- the localised string ``key`` from the skin's strings
  dictionary, which the pages put in the dataset under
  :data:`STRINGS_KEY` (a key no WSSP expression can name); a bare word is
  the key itself (``STRING(Subject)``), any other argument is evaluated;
  an untranslated key shows as itself (unconfirmed name).
  ``SIZE(e)`` -- elements of an array or dictionary, characters of
  anything else, 0 when missing. ``ISTRUE(e)``/``ISFALSE(e)`` -- the truth
  rule above. ``,`` is accepted in place of ``AND``/``IN``/``USING``.
* Broken openers keep the structure matched: an ``IF``/``ELIF`` whose
  expression does not compile is logged and counts as false; a ``FOREACH``
  likewise loops zero times. An unclosed ``IF``/``FOREACH`` is closed at the
  end of the file (logged), so its condition still applies to its content.
  ``ELSE``/``ELIF``/``ENDIF``/``ENDFOR`` without a matching opener are
  removed (logged). A runtime failure in an expression makes its value
  missing (logged).
* ``INCLUDE "file.wssi"``: a quoted name only. A missing file, no includer,
  or an includer that raises gives ``<!-- missing file.wssi -->`` and a log
  record; deeper than 10 gives ``<!-- include too deep: file.wssi -->``.
  Includes see the same dataset and the scanners of the including loop.
  The name goes to the includer exactly as the skin wrote it: the includer
  (the skin search order) must refuse ``..``, ``/``, ``\\``, NUL and the
  like. Each name is resolved once per render.
* Charset (§4.1): :meth:`Page.render` returns ``str``; :func:`encode`
  turns it into the bytes of the dataset's ``charset`` (unencodable
  characters as HTML character references).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "MAX_INCLUDE_DEPTH",
    "MAX_NESTING",
    "MAX_STEPS",
    "STRINGS_KEY",
    "Includer",
    "Page",
    "TemplateError",
    "compile_page",
    "encode",
    "to_text",
    "truth",
]

MAX_INCLUDE_DEPTH = 10
"""INCLUDE nests at most this deep (§4.4 [waypost])."""

MAX_NESTING = 32
"""IF/FOREACH blocks nest at most this deep in one file; deeper openers are errors."""

MAX_STEPS = 2_000_000
"""Node visits per render before it stops (bounds loops and include fan-out)."""

MAX_EXPRESSION = 2000
"""Characters in one expression; longer ones are template errors (bounds parser depth)."""

STRINGS_KEY = "$strings"
"""Dataset key of the skin's strings dictionary, read by ``STRING(key)``.

``$`` is not a name character, so no skin expression can print it directly."""

_DEFAULT_LOG = logging.getLogger("waypost.web.wssp")


@dataclass(frozen=True)
class TemplateError:
    """One template error found while compiling, with its 1-based line."""

    line: int
    message: str


Includer = Callable[[str], "Page | None"]
"""``INCLUDE "file.wssi"`` -> the compiled file via the skin search order, None when missing."""


# ---------------------------------------------------------------------------
# Values: text form and truth (§4.2, §4.3)

_ATOM = re.compile(r"[A-Za-z0-9]+\Z")
_FALSE_TEXT = frozenset({"", "no", "false", "0"})


def _cgp_quote(text: str) -> str:
    if _ATOM.match(text):
        return text
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'


def _cgp_nested(value: Any) -> str:
    """A value inside an array or dictionary, in CGP textual form (cli.md §2)."""
    if value is None:
        return "#NULL#"
    if isinstance(value, str):
        return _cgp_quote(value)
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, int | float):
        return "#" + _number_text(value)
    if isinstance(value, _dt.datetime):
        return value.strftime("#T%d-%m-%Y_%H:%M:%S")
    if isinstance(value, _dt.date):
        return value.strftime("#T%d-%m-%Y")
    if isinstance(value, bytes | bytearray):
        return "[" + base64.b64encode(bytes(value)).decode("ascii") + "]"
    if isinstance(value, Mapping):
        pairs = "".join(f"{_cgp_quote(str(k))}={_cgp_nested(v)};" for k, v in value.items())
        return "{" + pairs + "}"
    if isinstance(value, Sequence):
        return "(" + ", ".join(_cgp_nested(v) for v in value) + ")"
    return _cgp_quote(str(value))


def _number_text(value: int | float) -> str:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def to_text(value: Any) -> str:
    """The text a text element prints for ``value`` (§4.3; choices in the module docstring)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, _dt.date):
        return value.strftime("%Y-%m-%d")
    return _cgp_nested(value)


def truth(value: Any) -> bool:
    """WSSP truth (§4.2): missing, "", NO, FALSE, 0, an empty array are false."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() not in _FALSE_TEXT
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, Mapping):
        return True
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return len(value) > 0
    return True


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _html(text: str) -> str:
    return html.escape(text, quote=True)


def _url(text: str) -> str:
    return quote(text, safe="", errors="replace")  # lone surrogates from mail -> "?"


def encode(text: str, charset: str | None) -> bytes:
    """Rendered text as the bytes of ``charset`` (§4.1); unknown charset -> UTF-8."""
    name = (charset or "utf-8").strip() or "utf-8"
    try:
        return text.encode(name, errors="xmlcharrefreplace")
    except LookupError:
        return text.encode("utf-8")


# ---------------------------------------------------------------------------
# Render context


class _Abort(Exception):
    """The render budget is spent; unwinds to Page.render."""


class _Ctx:
    __slots__ = ("budget", "data", "depth", "include", "included", "scanners")

    def __init__(self, data: Mapping[str, Any], include: Includer | None, budget: int) -> None:
        self.data = data
        self.include = include
        self.budget = budget
        self.depth = 0
        self.scanners: dict[str, tuple[Any, int]] = {}
        self.included: dict[str, Page | None] = {}


# ---------------------------------------------------------------------------
# Expressions (§4.2)


class _Expr:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text  # canonical text: pairs FOREACH with its scanner

    def value(self, ctx: _Ctx) -> Any:
        raise NotImplementedError


class _Const(_Expr):
    __slots__ = ("const",)

    def __init__(self, const: Any, text: str) -> None:
        super().__init__(text)
        self.const = const

    def value(self, ctx: _Ctx) -> Any:
        return self.const


class _Data(_Expr):
    __slots__ = ()

    def value(self, ctx: _Ctx) -> Any:
        return ctx.data.get(self.text)


class _Key(_Expr):
    __slots__ = ("key", "target")

    def __init__(self, target: _Expr, key: str) -> None:
        super().__init__(f"{target.text}.{key}")
        self.target = target
        self.key = key

    def value(self, ctx: _Ctx) -> Any:
        base = self.target.value(ctx)
        if isinstance(base, Mapping):
            return base.get(self.key)
        return None


class _Index(_Expr):
    __slots__ = ("index", "target")

    def __init__(self, target: _Expr, index: _Expr) -> None:
        super().__init__(f"{target.text}[{index.text}]")
        self.target = target
        self.index = index

    def value(self, ctx: _Ctx) -> Any:
        base = self.target.value(ctx)
        key = self.index.value(ctx)
        if isinstance(base, Mapping):
            return base.get(to_text(key))
        if not _is_array(base):
            return None
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            i = key
        else:
            text = to_text(key)
            if not text.isdigit():
                return None
            i = int(text)
        return base[i] if 0 <= i < len(base) else None


class _Scanner(_Expr):
    __slots__ = ("name",)

    def __init__(self, target: _Expr) -> None:
        super().__init__(f"{target.text}[]")
        self.name = target.text

    def value(self, ctx: _Ctx) -> Any:
        current = ctx.scanners.get(self.name)
        return None if current is None else current[0]


class _Not(_Expr):
    __slots__ = ("arg",)

    def __init__(self, arg: _Expr) -> None:
        super().__init__(f"!{arg.text}")
        self.arg = arg

    def value(self, ctx: _Ctx) -> Any:
        return not truth(self.arg.value(ctx))


class _Binary(_Expr):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Expr, right: _Expr) -> None:
        super().__init__(f"({left.text}{op}{right.text})")
        self.op = op
        self.left = left
        self.right = right

    def value(self, ctx: _Ctx) -> Any:
        op = self.op
        if op == "&":
            return truth(self.left.value(ctx)) and truth(self.right.value(ctx))
        if op == "|":
            return truth(self.left.value(ctx)) or truth(self.right.value(ctx))
        if op == "^":
            return truth(self.left.value(ctx)) != truth(self.right.value(ctx))
        same = to_text(self.left.value(ctx)) == to_text(self.right.value(ctx))
        return same if op == "==" else not same


class _Call(_Expr):
    __slots__ = ("args", "fn")

    def __init__(self, name: str, fn: Callable[..., Any], args: list[_Expr]) -> None:
        super().__init__(f"{name}({','.join(a.text for a in args)})")
        self.fn = fn
        self.args = args

    def value(self, ctx: _Ctx) -> Any:
        return self.fn(ctx, *self.args)


def _fn_exists(ctx: _Ctx, e: _Expr) -> bool:
    return e.value(ctx) is not None


def _fn_equals(ctx: _Ctx, a: _Expr, b: _Expr) -> bool:
    return to_text(a.value(ctx)) == to_text(b.value(ctx))


def _fn_isindex(ctx: _Ctx, x: _Expr, s: _Expr) -> bool:
    current = ctx.scanners.get(s.name if isinstance(s, _Scanner) else s.text)
    if current is None:
        return False
    want = x.value(ctx)
    if isinstance(want, bool):
        return False
    if isinstance(want, int):
        return want == current[1]
    text = to_text(want).strip()
    return text.isdigit() and int(text) == current[1]


def _fn_translate(ctx: _Ctx, x: _Expr, d: _Expr) -> Any:
    table = d.value(ctx)
    if not isinstance(table, Mapping):
        return None
    return table.get(to_text(x.value(ctx)))


def _fn_string(ctx: _Ctx, key: _Expr) -> Any:
    name = to_text(key.value(ctx))
    strings = ctx.data.get(STRINGS_KEY)
    if isinstance(strings, Mapping):
        found = strings.get(name)
        if found is not None:
            return found
    return name


def _fn_size(ctx: _Ctx, e: _Expr) -> int:
    value = e.value(ctx)
    if value is None:
        return 0
    if isinstance(value, Mapping) or _is_array(value):
        return len(value)
    return len(to_text(value))


def _fn_istrue(ctx: _Ctx, e: _Expr) -> bool:
    return truth(e.value(ctx))


def _fn_isfalse(ctx: _Ctx, e: _Expr) -> bool:
    return not truth(e.value(ctx))


# name -> (function, separator words between its arguments; () = one argument)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "EXISTS": (_fn_exists, ()),
    "EQUALS": (_fn_equals, ("AND",)),
    "ISINDEX": (_fn_isindex, ("IN",)),
    "TRANSLATE": (_fn_translate, ("USING",)),
    "STRING": (_fn_string, ()),
    "SIZE": (_fn_size, ()),
    "ISTRUE": (_fn_istrue, ()),
    "ISFALSE": (_fn_isfalse, ()),
}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>[0-9]+(?![A-Za-z_\-]))
    | (?P<name>[A-Za-z0-9_][A-Za-z0-9_\-]*)
    | (?P<op>==|!=|[()\[\].,!&|^])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


class _ExprError(Exception):
    pass


class _Parser:
    """Recursive descent over one expression; precedence ! > ==/!= > & > ^ > |."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_EXPRESSION:
            raise _ExprError("expression too long")
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        source = source.rstrip()
        while pos < len(source):
            m = _TOKEN.match(source, pos)
            if m is None or m.end() == pos:
                raise _ExprError(f"unexpected {source[pos:pos + 10].strip()!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end":
            raise _ExprError("expression ends too early")
        self.pos += 1
        return tok

    def expect(self, op: str) -> None:
        kind, text = self.take()
        if kind != "op" or text != op:
            raise _ExprError(f"expected {op!r}, found {text!r}")

    def at_op(self, *ops: str) -> bool:
        kind, text = self.peek()
        return kind == "op" and text in ops

    def whole(self) -> _Expr:
        if not self.tokens:
            raise _ExprError("empty expression")
        expr = self.expr()
        if self.pos != len(self.tokens):
            raise _ExprError(f"unexpected {self.peek()[1]!r}")
        return expr

    def expr(self) -> _Expr:
        self.depth += 1
        if self.depth > 50:
            raise _ExprError("expression nests too deep")
        try:
            return self._binary(0)
        finally:
            self.depth -= 1

    _LEVELS = (("|",), ("^",), ("&",))

    def _binary(self, level: int) -> _Expr:
        if level == len(self._LEVELS):
            return self.compare()
        left = self._binary(level + 1)
        while self.at_op(*self._LEVELS[level]):
            op = self.take()[1]
            left = _Binary(op, left, self._binary(level + 1))
        return left

    def compare(self) -> _Expr:
        left = self.unary()
        if self.at_op("==", "!="):
            op = self.take()[1]
            left = _Binary(op, left, self.unary())
        return left

    def unary(self) -> _Expr:
        if self.at_op("!"):
            self.take()
            self.depth += 1
            if self.depth > 50:
                raise _ExprError("expression nests too deep")
            try:
                return _Not(self.unary())
            finally:
                self.depth -= 1
        return self.postfix(self.primary())

    def postfix(self, expr: _Expr) -> _Expr:
        while True:
            if self.at_op("."):
                self.take()
                kind, text = self.take()
                if kind not in ("name", "num"):
                    raise _ExprError(f"key expected after '.', found {text!r}")
                expr = _Key(expr, text)
            elif self.at_op("["):
                self.take()
                if self.at_op("]"):
                    self.take()
                    expr = _Scanner(expr)
                else:
                    index = self.expr()
                    self.expect("]")
                    expr = _Index(expr, index)
            else:
                return expr

    def primary(self) -> _Expr:
        kind, text = self.take()
        if kind == "str":
            value = _ESCAPE.sub(lambda m: m.group(1), text[1:-1])
            return _Const(value, text)
        if kind == "num":
            return _Const(int(text), text)
        if kind == "name":
            if self.at_op("("):
                return self.call(text)
            return _Data(text)
        if kind == "op" and text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        raise _ExprError(f"unexpected {text!r}")

    def call(self, name: str) -> _Expr:
        upper = name.upper()
        found = _FUNCTIONS.get(upper)
        if found is None:
            raise _ExprError(f"unknown function {name}")
        fn, words = found
        self.expect("(")
        if upper == "STRING" and self.peek()[0] == "name" and self._next_is_close():
            word = self.take()[1]
            self.expect(")")
            return _Call(upper, fn, [_Const(word, word)])
        args = [self.expr()]
        for word in words:
            kind, text = self.take()
            if not ((kind == "name" and text.upper() == word) or (kind == "op" and text == ",")):
                raise _ExprError(f"{upper} expects {word}, found {text!r}")
            args.append(self.expr())
        self.expect(")")
        return _Call(upper, fn, args)

    def _next_is_close(self) -> bool:
        nxt = self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else ("end", "")
        return nxt == ("op", ")")


def _parse_expression(source: str) -> _Expr:
    try:
        return _Parser(source).whole()
    except _ExprError:
        raise
    except RecursionError as exc:  # defensive: the depth guard should come first
        raise _ExprError("expression nests too deep") from exc


# ---------------------------------------------------------------------------
# Nodes


class _Node:
    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        raise NotImplementedError


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, line: int, text: str) -> None:
        super().__init__(line)
        self.text = text

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        out.append(self.text)


class _Out(_Node):
    __slots__ = ("encoder", "expr")

    def __init__(self, line: int, expr: _Expr, encoder: Callable[[str], str] | None) -> None:
        super().__init__(line)
        self.expr = expr
        self.encoder = encoder

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        try:
            text = to_text(self.expr.value(ctx))
        except Exception as exc:  # a broken dataset object or function: element removed
            page._runtime_error(self.line, f"cannot evaluate {self.expr.text}: {exc!r}")
            return
        out.append(self.encoder(text) if self.encoder is not None else text)


def _render_body(body: list[_Node], ctx: _Ctx, out: list[str], page: Page) -> None:
    ctx.budget -= len(body)
    if ctx.budget < 0:
        raise _Abort
    for node in body:
        node.render(ctx, out, page)


def _condition(expr: _Expr | None, line: int, ctx: _Ctx, page: Page) -> bool:
    if expr is None:
        return False
    try:
        return truth(expr.value(ctx))
    except Exception as exc:
        page._runtime_error(line, f"cannot evaluate {expr.text}: {exc!r}")
        return False


class _If(_Node):
    __slots__ = ("branches", "otherwise")

    def __init__(self, line: int) -> None:
        super().__init__(line)
        # (condition or None when broken, line, body)
        self.branches: list[tuple[_Expr | None, int, list[_Node]]] = []
        self.otherwise: list[_Node] | None = None

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        for expr, line, body in self.branches:
            if _condition(expr, line, ctx, page):
                _render_body(body, ctx, out, page)
                return
        if self.otherwise is not None:
            _render_body(self.otherwise, ctx, out, page)


class _ForEach(_Node):
    __slots__ = ("body", "expr")

    def __init__(self, line: int, expr: _Expr | None) -> None:
        super().__init__(line)
        self.expr = expr
        self.body: list[_Node] = []

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        if self.expr is None:
            return
        try:
            items = self.expr.value(ctx)
        except Exception as exc:
            page._runtime_error(self.line, f"cannot evaluate {self.expr.text}: {exc!r}")
            return
        if not _is_array(items):
            return
        name = self.expr.text
        saved = ctx.scanners.get(name)
        try:
            for index, item in enumerate(items):
                ctx.scanners[name] = (item, index)
                _render_body(self.body, ctx, out, page)
        finally:
            if saved is None:
                ctx.scanners.pop(name, None)
            else:
                ctx.scanners[name] = saved


def _comment_safe(name: str) -> str:
    return name.replace("--", "- -").replace(">", "&gt;").replace("<", "&lt;")


class _Include(_Node):
    __slots__ = ("file",)

    def __init__(self, line: int, file: str) -> None:
        super().__init__(line)
        self.file = file

    def render(self, ctx: _Ctx, out: list[str], page: Page) -> None:
        if ctx.depth >= MAX_INCLUDE_DEPTH:
            page._runtime_error(self.line, f"INCLUDE {self.file!r} nests deeper than "
                                f"{MAX_INCLUDE_DEPTH}")
            out.append(f"<!-- include too deep: {_comment_safe(self.file)} -->")
            return
        target = self._resolve(ctx, page)
        if target is None:
            out.append(f"<!-- missing {_comment_safe(self.file)} -->")
            return
        ctx.depth += 1
        try:
            _render_body(target._nodes, ctx, out, target)
        finally:
            ctx.depth -= 1

    def _resolve(self, ctx: _Ctx, page: Page) -> Page | None:
        if self.file in ctx.included:
            target = ctx.included[self.file]
        else:
            target = None
            if ctx.include is None:
                page._runtime_error(self.line, f"missing include {self.file!r} (no includer)")
            else:
                try:
                    found = ctx.include(self.file)
                except Exception as exc:
                    page._runtime_error(self.line, f"include {self.file!r} failed: {exc!r}")
                else:
                    if isinstance(found, Page):
                        target = found
                    else:
                        page._runtime_error(self.line, f"missing include {self.file!r}")
            ctx.included[self.file] = target
        return target


# ---------------------------------------------------------------------------
# Lexing and compiling (§4.1, §4.4)

_KEYWORD = re.compile(r"[ \t]*([A-Za-z0-9_]*)")


@dataclass(frozen=True)
class _Lexeme:
    """One element found by :func:`_lex`: ``kind`` is "expr", "struct" or "open"."""

    kind: str
    start: int
    end: int
    keyword: str = ""
    args: str = ""


def _lex(text: str) -> Iterator[_Lexeme]:
    """The elements of ``text`` in order, in time linear in its length.

    ``<!--%%KEYWORD args-->`` must close on its line ("open" when it does not);
    ``%%expr%%`` closes at the next ``%%`` on its line, unless that ``%%`` opens
    a structural element (then the first ``%%`` is literal text). A line known
    to hold no ``-->`` after some point is not searched again, so a line of
    many unclosed ``<!--%%`` is not quadratic."""
    pos = 0
    size = len(text)
    no_close_until = -1  # no "-->" between the last failed search and this index
    while True:
        i = text.find("%%", pos)
        if i < 0:
            return
        start = i - 4
        if start >= pos and text.startswith("<!--", start):
            eol = text.find("\n", i)
            eol = size if eol < 0 else eol
            close = -1 if eol <= no_close_until else text.find("-->", i + 2, eol)
            if close < 0:
                no_close_until = eol
                yield _Lexeme("open", start, i + 2)
                pos = i + 2
                continue
            kw = _KEYWORD.match(text, i + 2, close)
            assert kw is not None  # the pattern matches the empty string
            yield _Lexeme("struct", start, close + 3, kw.group(1), text[kw.end():close])
            pos = close + 3
            continue
        j = text.find("%%", i + 2)
        if j < 0:
            return
        newline = text.find("\n", i + 2, j)
        if newline >= 0:  # no closing %% on this line: the %% is text
            pos = newline
            continue
        if j - 4 >= i + 2 and text.startswith("<!--", j - 4):  # the next %% opens an element
            pos = i + 2
            continue
        yield _Lexeme("expr", i, j + 2, args=text[i + 2:j])
        pos = j + 2


_PREFIX = re.compile(r"\s*(?P<enc>[A-Za-z]+):(?!:)")
_INCLUDE_ARG = re.compile(r'\s*"(?P<file>(?:[^"\\]|\\.)*)"\s*\Z', re.DOTALL)
_ENCODERS: dict[str, Callable[[str], str]] = {"HTML": _html, "URL": _url}


class Page:
    """A compiled WSSP file. Render it as often as needed; it is not changed by rendering."""

    __slots__ = ("_log", "_nodes", "errors", "name", "skin")

    def __init__(self, name: str, skin: str, log: logging.Logger) -> None:
        self.name = name
        self.skin = skin
        self._log = log
        self._nodes: list[_Node] = []
        self.errors: list[TemplateError] = []

    def __repr__(self) -> str:
        return f"<Page {self.skin!r}/{self.name} errors={len(self.errors)}>"

    def render(
        self,
        dataset: Mapping[str, Any],
        *,
        include: Includer | None = None,
        budget: int = MAX_STEPS,
    ) -> str:
        """The page for ``dataset``; never raises (errors are logged, elements dropped)."""
        out: list[str] = []
        ctx = _Ctx(dataset, include, budget)
        try:
            _render_body(self._nodes, ctx, out, self)
        except _Abort:
            self._runtime_error(0, f"rendering stopped after {budget} steps; output truncated")
        except Exception as exc:  # last line of defence: never a 500 for the interface
            self._runtime_error(0, f"rendering failed: {exc!r}")
        return "".join(out)

    def _error(self, line: int, message: str) -> None:
        self.errors.append(TemplateError(line, message))
        self._report(line, message)

    def _runtime_error(self, line: int, message: str) -> None:
        self._report(line, message)

    def _report(self, line: int, message: str) -> None:
        self._log.error(
            "WSSP error: skin %s, file %s, line %d: %s",
            f'"{self.skin}"', self.name, line, message,
            extra={"wssp_skin": self.skin, "wssp_file": self.name, "wssp_line": line},
        )


class _Open:
    """A block being compiled: the node and the list new nodes go into."""

    __slots__ = ("body", "keyword", "node")

    def __init__(self, keyword: str, node: _If | _ForEach, body: list[_Node]) -> None:
        self.keyword = keyword
        self.node = node
        self.body = body


def _compile(page: Page, text: str) -> None:
    root: list[_Node] = page._nodes
    stack: list[_Open] = []
    body = root
    line = 1
    last = 0

    def add_text(chunk: str, at: int) -> None:
        if not chunk:
            return
        if body and isinstance(body[-1], _Text):
            body[-1].text += chunk
        else:
            body.append(_Text(at, chunk))

    def expression(source: str, at: int, what: str) -> _Expr | None:
        try:
            return _parse_expression(source)
        except _ExprError as exc:
            page._error(at, f"bad expression in {what} {source.strip()!r}: {exc}")
            return None

    for m in _lex(text):
        start = m.start
        add_text(text[last:start], line)
        line += text.count("\n", last, start)
        last = m.end
        at = line
        if m.kind == "expr":
            source = m.args
            encoder = None
            prefix = _PREFIX.match(source)
            if prefix is not None:
                encoder = _ENCODERS.get(prefix.group("enc").upper())
                if encoder is None:
                    page._error(at, f"unknown text encoding {prefix.group('enc')}:")
                    continue
                source = source[prefix.end():]
            expr = expression(source, at, "text element")
            if expr is not None:
                body.append(_Out(at, expr, encoder))
            continue
        if m.kind == "open":
            page._error(at, "structural element without closing '-->'")
            add_text(text[m.start:m.end], at)
            continue
        keyword = m.keyword.upper()
        args = m.args
        if keyword in ("IF", "FOREACH"):
            if len(stack) >= MAX_NESTING:
                page._error(at, f"{keyword} nests deeper than {MAX_NESTING}; element removed")
                continue
            cond = expression(args, at, keyword)
            node: _If | _ForEach
            if keyword == "IF":
                node = _If(at)
                node.branches.append((cond, at, []))
                inner = node.branches[0][2]
            else:
                node = _ForEach(at, cond)
                inner = node.body
            body.append(node)
            stack.append(_Open(keyword, node, inner))
            body = inner
        elif keyword in ("ELIF", "ELSE"):
            top = stack[-1] if stack else None
            if top is None or not isinstance(top.node, _If):
                page._error(at, f"{keyword} without IF; element removed")
                continue
            if top.node.otherwise is not None:
                page._error(at, f"{keyword} after ELSE; element removed")
                continue
            if keyword == "ELIF":
                cond = expression(args, at, "ELIF")
                top.node.branches.append((cond, at, []))
                body = top.body = top.node.branches[-1][2]
            else:
                if args.strip():
                    page._error(at, f"ELSE takes no arguments: {args.strip()!r} ignored")
                top.node.otherwise = []
                body = top.body = top.node.otherwise
        elif keyword in ("ENDIF", "ENDFOR"):
            opener = "IF" if keyword == "ENDIF" else "FOREACH"
            top = stack[-1] if stack else None
            if top is None or top.keyword != opener:
                page._error(at, f"{keyword} without {opener}; element removed")
                continue
            if keyword == "ENDFOR":
                name = args.strip()
                node_expr = top.node.expr if isinstance(top.node, _ForEach) else None
                if name and node_expr is not None and name.replace(" ", "") != node_expr.text:
                    page._error(at, f"ENDFOR {name} closes FOREACH {node_expr.text}")
            elif args.strip():
                page._error(at, f"ENDIF takes no arguments: {args.strip()!r} ignored")
            stack.pop()
            body = stack[-1].body if stack else root
        elif keyword == "INCLUDE":
            arg = _INCLUDE_ARG.match(args)
            if arg is None:
                page._error(at, f'INCLUDE needs a quoted file name, found {args.strip()!r}')
                continue
            body.append(_Include(at, _ESCAPE.sub(lambda e: e.group(1), arg.group("file"))))
        else:
            page._error(at, f"unknown keyword {m.keyword or '(none)'!r}; element removed")
    add_text(text[last:], line)
    for block in reversed(stack):
        page._error(block.node.line, f"{block.keyword} not closed; closed at end of file")


def compile_page(
    text: str, name: str, *, skin: str = "", log: logging.Logger | None = None
) -> Page:
    """Compile WSSP ``text`` (the file ``name`` of ``skin``, for log records); never raises.

    Template errors are logged to ``log`` (default ``waypost.web.wssp``) with skin,
    file and line, and listed in :attr:`Page.errors`; the element is left out."""
    page = Page(name, skin, log or _DEFAULT_LOG)
    try:
        _compile(page, text)
    except Exception as exc:  # defensive: a compiler bug must not take the interface down
        page._nodes.clear()
        page._error(0, f"compilation failed: {exc!r}")
    return page
