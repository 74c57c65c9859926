"""The project's own import graph, read from its source (ast): which first-party modules a file imports."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

FIRST_PARTY = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}


def module_file(name: str) -> Path | None:
    """The file of first-party module ``name`` (a package's __init__.py), if there is one."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: Path) -> set[str]:
    """The first-party modules a file imports, at any depth of its code (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {n for n in names if n.split(".")[0] in FIRST_PARTY and module_file(n)}
    return found


def closure(modules: set[str]) -> set[str]:
    """``modules`` and every first-party module they import, transitively (packages' __init__ included)."""
    seen, todo = set(), list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if parent not in seen and module_file(parent):
                seen.add(parent)
                todo.extend(imported_modules(module_file(parent)))
    return seen
