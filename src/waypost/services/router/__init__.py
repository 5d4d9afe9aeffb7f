"""The Router: where every address goes (router.md).

``address`` parses, ``table`` compiles the Router Table, ``route`` is the
pure algorithm and ``service`` keeps the compiled table current.
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
