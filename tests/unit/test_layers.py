"""Imports in ``src/`` go one way: domain → strategies → store → service → runtime →
runners/feeds → api/cli/web (CONTRIBUTING.md). Every import counts, also one inside a function.

Each module of ``src/ticktape`` belongs to a layer (below); a module may import from
its own layer and the layers to its left, never from one to its right. A new
top-level module or package must be given a layer here, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: Layers, left to right, and the top-level modules and packages of ``ticktape`` in each.
LAYERS: list[tuple[str, frozenset[str]]] = [
    # the pure core, and the small helpers every layer may use
    (
        "domain",
        frozenset(
            {
                "ticktape",
                "domain",
                "ticks",
                "errors",
                "config",
                "retry",
                "redact",
                "metrics",
                "slices",
                "throttle",
                "phases",
            }
        ),
    ),
    # strategies and the fill simulator: pure computation over ticks (domain only)
    ("strategies", frozenset({"strategies"})),
    ("store", frozenset({"store", "questdb_server"})),  # questdb_server runs the store's server
    (
        "service",
        frozenset({"service", "quality", "export", "retention"}),
    ),  # quality/export: read-side reports over the store
    ("runtime", frozenset({"runtime"})),
    ("runners/feeds", frozenset({"runners", "feeds"})),
    ("api/cli/web", frozenset({"api", "cli", "web"})),
    ("testing", frozenset({"testing"})),  # test support: may use everything, used by nothing
]

#: Imports allowed against the direction, each with why. Delete an entry once its
#: import is gone (the test below fails until you do).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _rank(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    for rank, (_name, members) in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module}: its top-level name {top!r} has no layer in LAYERS")


def _imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n == "ticktape" or n.startswith("ticktape.")]


def against_the_direction(modules: dict[str, str]) -> set[tuple[str, str]]:
    """``(importer, imported)`` for every import of ``modules`` (name → source) that goes
    from a layer to one on its right."""
    found = set()
    for module, source in modules.items():
        here = _rank(module)
        for imported in _imports(source):
            if _rank(imported) > here:
                found.add((module, imported))
    return found


def _src_modules() -> dict[str, str]:
    modules = {}
    for path in sorted((SRC / "ticktape").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path.read_text(encoding="utf-8")
    return modules


def test_every_import_in_src_goes_the_one_way() -> None:
    modules = _src_modules()
    assert len(modules) > 50  # the walk found the package
    found = against_the_direction(modules)
    assert found - KNOWN_EXCEPTIONS == set(), "imports against the layer direction"
    gone = KNOWN_EXCEPTIONS - found
    assert gone == set(), f"no longer imported, delete from KNOWN_EXCEPTIONS: {gone}"


def test_the_check_finds_an_import_against_the_direction() -> None:
    modules = {
        "ticktape.service": "from ticktape.store.base import Store\n"
        "def f():\n    from ticktape.runtime.supervisor import Supervisor\n",
        "ticktape.store.rules": "import ticktape.api.app\n",
        "ticktape.runtime.leases": "from ticktape.service import SessionService\n",
    }
    assert against_the_direction(modules) == {
        ("ticktape.service", "ticktape.runtime.supervisor"),
        ("ticktape.store.rules", "ticktape.api.app"),
    }


def test_every_module_has_a_layer() -> None:
    for module in _src_modules():
        _rank(module)  # raises for a module no layer names
