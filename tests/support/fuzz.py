"""The fuzz targets' shared machinery (issue 13 point 7): the seed corpus and
a mutating strategy over it.

Layout: one test module per parser family in ``tests/fuzz/``
(``test_fuzz_<family>.py``) and its seeds in ``tests/fuzz/corpus/<family>/``.
A seed file ``*.lines`` holds one seed per line (``#`` starts a comment
line; ``\\r``, ``\\n``, ``\\t``, ``\\xHH`` and ``\\\\`` are the only escapes,
so CRLF, NUL and 8-bit bytes can be written); any other file is one seed,
byte for byte (messages, router tables, rule sets). Every target runs
each seed as it is (a parametrised test, so the known-hard inputs always
run) and then hypothesis examples that mutate the seeds.

How many examples: ``FUZZ_EXAMPLES`` per target, 300 by default (about
a minute for every target on two cores: the bounded run of ``make test``);
``make fuzz`` raises it (and loads the ``fuzz`` profile of
``tests/conftest.py``). :data:`TARGET` also lifts the health checks that
big seeds trip.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"

TARGET = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
"""Settings of every fuzz target: ``FUZZ_EXAMPLES`` examples, no
deadline (a shared two-core machine makes timings meaningless)."""

_ESCAPE = re.compile(rb"\\(?:x([0-9A-Fa-f]{2})|(.))")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


def _unescape(line: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return bytes([int(m.group(1), 16)])
        if m.group(2) not in _SIMPLE:
            raise ValueError(f"unknown escape {m.group()!r} in a seed")
        return _SIMPLE[m.group(2)]

    return _ESCAPE.sub(one, line)


def seeds(target: str) -> list[bytes]:
    """Every seed of ``corpus/<target>`` (a folder, or one file in it), in
    file then line order."""
    folder = CORPUS / target
    found: list[bytes] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else [folder]:
        data = path.read_bytes()
        if path.suffix != ".lines":
            found.append(data)
            continue
        for line in data.split(b"\n"):
            if line and not line.startswith(b"#"):
                found.append(_unescape(line))
    if not found:
        raise FileNotFoundError(f"no seeds in {folder}")
    return found


def text_seeds(target: str) -> list[str]:
    """The seeds as text (8-bit bytes kept as surrogates, as mime.py does)."""
    return [s.decode("utf-8", "surrogateescape") for s in seeds(target)]


def cut(data: bytes, draw: st.DataObject, most: int = 8) -> list[bytes]:
    """``data`` cut at up to ``most`` drawn places (as a socket may deliver it)."""
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=most), label="cuts"))
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


def seed_ids(items: Sequence[bytes | str]) -> list[str]:
    """Short readable ids for parametrised seeds."""
    return [f"{i}:{item[:30]!r}" for i, item in enumerate(items)]


@st.composite
def _mutate(draw: st.DrawFn, pool: Sequence[bytes], tokens: Sequence[bytes], most: int) -> bytes:
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(0, most))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and tokens:  # a token of the grammar
            data[pos:pos] = draw(st.sampled_from(tokens))
        elif op == 1:  # drop a few bytes
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == 2 and data:  # change one byte
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 3:  # repeat a slice (nesting, long runs)
            piece = data[pos : pos + draw(st.integers(1, 40))]
            data[pos:pos] = piece * draw(st.integers(1, 20))
        elif op == 4:  # random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == 5:  # cut short
            del data[pos:]
        else:  # splice the tail of another seed in
            other = draw(st.sampled_from(pool))
            data[pos:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


def mutants(pool: Sequence[bytes], tokens: Sequence[bytes | str] = (), *, most: int = 6,
            ) -> st.SearchStrategy[bytes]:
    """Seeds with up to ``most`` mutations (tokens inserted, bytes dropped,
    changed or repeated, cut short, spliced with another seed), and now and
    then plain random bytes or a run of tokens."""
    toks = [t.encode("utf-8") if isinstance(t, str) else t for t in tokens]
    strategies = [_mutate(list(pool), toks, most), st.binary(max_size=200)]
    if toks:
        strategies.append(st.lists(st.sampled_from(toks), max_size=30).map(b"".join))
    return st.one_of(*strategies)


def text_mutants(pool: Sequence[str], tokens: Sequence[str] = (), *, most: int = 6,
                 errors: str = "replace") -> st.SearchStrategy[str]:
    """:func:`mutants` for text parsers, plus random text. The bytes are read
    as UTF-8 with ``errors``: ``replace`` where the text comes from a decoded
    line or a form, ``surrogateescape`` where it comes from a message (the
    form mime.py hands on)."""
    raw = [p.encode("utf-8", "surrogateescape") for p in pool]
    as_text: Callable[[bytes], str] = lambda b: b.decode("utf-8", errors)  # noqa: E731
    return st.one_of(mutants(raw, tokens, most=most).map(as_text), st.text(max_size=120))
