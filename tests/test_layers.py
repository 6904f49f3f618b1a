"""The package's import graph, built with ast: no circles, nothing importing
upward through the layers of docs/architecture.md.

Every ``import`` counts, at module level or inside a function, but those
under ``if TYPE_CHECKING:`` (annotations only: nothing runs them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import eventstore

ROOT = Path(eventstore.__file__).parent

# Lowest first; a module may import its own layer and those below it. A
# name ending in ".*" stands for the package and every module in it. Keep
# in step with docs/architecture.md.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundations", ["errors", "events", "keys", "values", "_leveldb", "forks", "manifest"]),
    ("ids and records", ["ids", "records", "dcb"]),
    ("tiers", ["hot", "esdb.*"]),
    ("archive, views, appends", [
        "archive", "segments", "compaction", "view", "prepare", "retention", "counters",
        "sealing",
    ]),
    ("writer and tier operations", [
        "writer", "tiering", "transfer", "repair", "erasure", "scavenge", "subscriptions",
    ]),
    ("facade", ["store"]),
    ("on the facade", [
        "eventstore", "aggregates", "aio", "deletion", "shredding", "contrib.*",
    ]),
    ("server", ["server.*"]),
    ("command line", ["cli.*"]),
]
# Beside each other in one layer, and neither knows the other.
APART = [("hot", "esdb.*")]


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "eventstore"] = path
    return found


MODULES = _modules()


def _walk(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _walk(child)


def _inner(target: str) -> str:
    """``eventstore.esdb.reader`` as this test names it: ``esdb.reader``."""
    return target.removeprefix("eventstore").removeprefix(".") or "eventstore"


def imports_of(name: str) -> set[str]:
    """The package's modules ``name`` imports (relative to the package)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            module = node.module or ""
            if node.level:
                full = "eventstore" if package in ("", "eventstore") else f"eventstore.{package}"
                base = full.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            # "from pkg import x": module pkg.x if there is one, else a name in pkg.
            targets = [
                f"{module}.{alias.name}" if _inner(f"{module}.{alias.name}") in MODULES else module
                for alias in node.names
            ]
        for target in targets:
            if target == "eventstore" or target.startswith("eventstore."):
                out.add(_inner(target))
    return out - {name}


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".*"):
        stem = pattern[:-2]
        return name == stem or name.startswith(stem + ".")
    return name == pattern


def layer_of(name: str) -> int:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(_pattern_matches(p, name) for p in patterns):
            return rank
    raise AssertionError(f"module {name} is in no layer: add it to LAYERS and docs/architecture.md")


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in MODULES}


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
        for name, deps in edges.items()
        for dep in deps
        if layer_of(dep) > layer_of(name)
    )


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "prepare" in edges["writer"] and "writer" in edges["store"]
    assert "esdb.format" in edges["esdb.reader"] and "subscriptions" in edges["store"]
    assert "cli.reading" in edges["cli"] and "store" in edges["server"]
    # from .. import __version__ in cli/__init__.py is the package itself
    assert "eventstore" in edges["cli"]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_no_circles() -> None:
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_import_runs_upward() -> None:
    assert upward(graph()) == []


def test_the_hot_tier_and_esdb_files_do_not_know_each_other() -> None:
    edges = graph()
    for one, other in APART:
        for a, b in ((one, other), (other, one)):
            for name, deps in edges.items():
                if _pattern_matches(a, name):
                    assert not [d for d in deps if _pattern_matches(b, d)], f"{name} imports {b}"


def test_the_checks_catch_what_they_look_for() -> None:
    # A circle and an upward import, made up: each check finds its own.
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None
    assert upward({"errors": {"store"}}) == ["errors (foundations) imports store (facade)"]
    assert upward({"store": {"errors"}}) == []


def test_layers_match_docs_architecture() -> None:
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    for title, patterns in LAYERS:
        assert title in text, f"layer {title!r} is not in docs/architecture.md"
        for pattern in patterns:
            shown = pattern.removesuffix(".*").replace(".", "/")
            assert shown in text, f"{pattern} is not in docs/architecture.md"
