"""The Router: where every address goes (router.md).

``address`` parses, ``table`` compiles the Router Table, ``view`` is what the
Router may know of the Directory and ``route`` is the pure algorithm.

Invariant: this package is pure. It imports nothing of Waypost outside itself
(no store, no I/O); ``waypost.services.routing`` beside it loads and caches the
compiled table (enforced by an import-linter contract in pyproject.toml).
"""

from waypost.services.router.route import ErrorKind, Route, RouteError, RouteResult, route
from waypost.services.router.table import CompiledTable, Kind, TableError, compile_table

__all__ = [
    "CompiledTable",
    "ErrorKind",
    "Kind",
    "Route",
    "RouteError",
    "RouteResult",
    "TableError",
    "compile_table",
    "route",
]
