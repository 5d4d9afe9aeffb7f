"""The layers of design.md hold: every import-linter contract in pyproject.toml
is kept, and no two ``waypost`` modules import each other, even through others.

The import graph is read from the source with ``ast``. An import under
``if TYPE_CHECKING:`` is not an import (it never runs), as in the contracts'
``exclude_type_checking_imports``; importing ``package.module`` (in any form)
imports the package too, since its ``__init__`` runs first, unless the
importing module is inside that package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

CONTRACTS = read_configuration(str(PYPROJECT))["contracts_options"]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (not its ``else``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(root: Path = SRC, package: str = "waypost") -> dict[str, set[str]]:
    """Module -> the ``package`` modules it imports when it runs. ``from pkg import
    sub`` imports ``pkg`` (its ``__init__`` runs first) and ``pkg.sub``; a name
    that is not a module resolves to the module that defines it."""
    files = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = name.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - node.level + 1]
                    stem = ".".join([*package, node.module] if node.module else package)
                else:
                    stem = node.module or ""
                targets.add(stem)
                targets.update(f"{stem}.{alias.name}" for alias in node.names)
        own = _ancestors(name)
        resolved = set()
        for target in targets:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and target not in own:
                resolved.add(target)
                # the target's packages run their __init__ first, except those
                # this module is inside (they are being imported already)
                resolved.update(a for a in _ancestors(target) if a in files and a not in own)
        edges[name] = resolved
    return edges


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative:
    the graph may be deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_cycles_and_only_cycles() -> None:
    """The finder itself can fail: a ring of three and a chain beside it."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_waypost_modules(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_graph_reads_imports_as_python_runs_them(tmp_path: Path) -> None:
    """``from package import module`` names both; a name that is not a module
    names the module that defines it; ``if TYPE_CHECKING:`` names none; relative
    imports resolve from the importing module's package; importing a module
    names its packages (their ``__init__`` runs first) but not the importer's
    own (they are being imported already)."""
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from pkg.sub.b import THING\n",
        "pkg/sub/a.py": (
            "from typing import TYPE_CHECKING\n"
            "from pkg.sub import b\n"
            "from pkg.c import THING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg import d\n"
        ),
        "pkg/sub/b.py": "from ..c import THING\n",
        "pkg/c.py": "THING = 1\n",
        "pkg/d.py": "import pkg.sub.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.a"] == {"pkg.sub.b", "pkg.c"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.sub", "pkg.sub.a"}
    assert cycles(graph) == []
    (tmp_path / "pkg/c.py").write_text("import pkg.d\nTHING = 1\n")  # c -> d -> sub -> b -> c
    assert cycles(import_graph(tmp_path, "pkg")) == [
        ["pkg.c", "pkg.d", "pkg.sub", "pkg.sub.a", "pkg.sub.b"]
    ]


def test_the_cli_storage_contract_names_every_storage_module_but_open(
    graph: dict[str, set[str]],
) -> None:
    """A new storage backend must be forbidden to the CLI too."""
    (contract,) = [c for c in CONTRACTS if c["id"] == "cli-storage-open-only"]
    children = {m for m in graph if m.rpartition(".")[0] == "waypost.storage"}
    assert set(contract["forbidden_modules"]) == children - {"waypost.storage.open"}


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["id"] for c in CONTRACTS])
def test_import_contract_is_kept(contract: dict[str, object]) -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", str(contract["id"])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"{contract['name']}: broken\n{result.stdout}{result.stderr}"
