"""Coverage-guided fuzzing of one hypothesis target with atheris (libFuzzer):
``make fuzz ATHERIS=tests/fuzz/test_fuzz_smtp.py::test_mail_arguments``.

atheris mutates raw bytes guided by the branch coverage of the (instrumented)
Waypost code and hands them to the target's ``fuzz_one_input``, which turns
them into the target's strategy values and runs its property; a failing
property is a crash, and libFuzzer writes the input to ``crash-*``. Replay
with ``python -m tests.fuzz.atheris_run TARGET crash-...``; then copy the
decoded value into the target's corpus (the seeds always run in ``make
test``) and fix the parser.

Targets that take pytest fixtures (the routing one) cannot run here. The
module is loaded by path, not imported, so no test module imports another.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_target(spec: str) -> Any:
    """``path/to/test_x.py::test_name`` -> the hypothesis-wrapped function."""
    path, _, name = spec.partition("::")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or module_spec.loader is None or not name:
        raise SystemExit(f"expected FILE::TEST, got {spec!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module.__name__] = module  # dataclasses look their module up
    module_spec.loader.exec_module(module)
    return getattr(module, name)


def main() -> None:
    import atheris  # optional: pip install -e '.[fuzz]'

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.atheris_run FILE::TEST [libFuzzer options]")
    with atheris.instrument_imports(include=["waypost"]):
        target = load_target(sys.argv.pop(1))
    atheris.Setup(sys.argv, target.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
