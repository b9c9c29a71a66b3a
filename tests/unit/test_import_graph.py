"""The modules of ``consumer/`` import each other without circles.

A circle means two modules cannot be read, tested or replaced one without the other, and it is
how a pure module ends up importing I/O by a detour. The graph is read from the source with
``ast``, not by importing anything, and counts every ``import`` statement of a module:

- at module level, including ``if TYPE_CHECKING:`` blocks (a type-only import is still a
  dependency a reader has to follow, and the usual way a circle is hidden rather than removed);
- inside functions and classes (a deferred import is the other way to hide one).

Only the consumer's own modules are nodes; a ``from package import name`` counts as an import of
``package.name`` when that is a module, else of ``package``. Importing a submodule does not add an
edge to its parent packages (their ``__init__`` files hold no code that imports back).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "consumer"

#: Circles still in the code, each as the set of modules tangled in it, with who removes it. An
#: entry must name a real circle (a test fails once it is gone, so the entry goes too).
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted((ROOT / PACKAGE).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The consumer modules that the module ``name`` at ``path`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    yield target
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: {target for target in imported(name, path, known) if target != name}
        for name, path in found.items()
    }


def tangles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan): each module of one
    reaches every other, so each holds at least one circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def circle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """A shortest circle through the component's first module (breadth first), as the modules
    along it, the first repeated at the end."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # pragma: no cover


def describe(graph: dict[str, set[str]], component: frozenset[str]) -> str:
    return f"{' -> '.join(circle(graph, component))} (tangled: {', '.join(sorted(component))})"


class TestImportGraph:
    def test_the_graph_is_read_from_every_module(self) -> None:
        """The graph has every module of the package and sees the imports of the entry
        point, so an empty graph cannot pass the circle check by accident."""
        graph = import_graph()
        assert "consumer.app" in graph
        assert "consumer.config" in graph["consumer.app"]
        assert len(graph) >= 60

    def test_type_checking_and_deferred_imports_count(self, tmp_path: Path) -> None:
        """An import under ``if TYPE_CHECKING:`` or inside a function is an edge too, and a
        relative ``from . import x`` resolves to the sibling module."""
        package = tmp_path / "pkg"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "a.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.b import B\n"
            "def f():\n    from . import c\n"
        )
        known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
        assert set(imported("pkg.a", package / "a.py", known)) == {"pkg.b", "pkg.c"}

    def test_circles_are_found_and_named(self) -> None:
        """A circle is reported as the path around it; a graph without one reports none."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert tangles(graph) == [frozenset("abc")]
        assert circle(graph, frozenset("abc")) == ["a", "b", "c", "a"]
        assert tangles({"a": {"b"}, "b": set()}) == []

    def test_consumer_has_no_import_circles(self) -> None:
        """No module of ``consumer/`` imports itself by a detour, except the circles listed
        in ALLOWED_CIRCLES with who removes them."""
        graph = import_graph()
        unexpected = [
            describe(graph, component)
            for component in tangles(graph)
            if component not in ALLOWED_CIRCLES
        ]
        assert not unexpected, "import circles:\n" + "\n".join(unexpected)

    def test_every_allowed_circle_still_exists(self) -> None:
        """An allow-list entry whose circle is gone is removed, so the list stays true."""
        found = tangles(import_graph())
        stale = [sorted(modules) for modules in ALLOWED_CIRCLES if modules not in found]
        assert not stale, f"circles no longer there, remove from ALLOWED_CIRCLES: {stale}"
