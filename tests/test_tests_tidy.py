"""The suite's own house rules (issue 9): one import root, and no test module
importing another (shared helpers live in ``tests/support``)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_helpers_come_from_tests_support_only() -> None:
    bad = [
        f"{path.relative_to(TESTS)}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in ("support", "conftest")
        or name.startswith("test_")
        or name.startswith("tests.test_")
        or name.startswith("tests.conftest")
    ]
    assert not bad, "import shared helpers from tests.support:\n" + "\n".join(bad)
