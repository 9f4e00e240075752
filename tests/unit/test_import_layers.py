"""No import cycles inside ``durabletask`` or ``sidecar``.

Each module is parsed with ``ast``; every import counts, at module level, inside functions and
under ``if TYPE_CHECKING:`` alike, since an import moved into a function only to dodge a cycle
is still a cycle. ``from package import name`` points at the submodule when ``name`` is one,
else at the package's ``__init__``. The implicit import of parent packages is not an edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Cycles still present on purpose, by the set of modules in them, each with its reason.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``package``."""
    root = REPO_ROOT / package
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import's module."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imported_modules(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module)
            if source in known:  # ``from pkg import sub`` names the package too (its __init__)
                yield source
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    yield submodule


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (self-imports left out)."""
    files = module_files(package)
    known = set(files)
    return {
        module: {target for target in imported_modules(module, path, known) if target != module}
        for module, path in files.items()
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of two or more modules that reach each other (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            advanced = False
            for target in targets:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(frozenset(group))
    return groups


def one_cycle(graph: dict[str, set[str]], group: frozenset[str]) -> list[str]:
    """A concrete path through ``group`` back to its start, to name in a failure."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [start]
                    while node != start:
                        path.insert(1, node)
                        node = previous[node]
                    return [*path, start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    return sorted(group)


def describe_cycles(package: str) -> list[str]:
    """One line per import cycle in ``package`` that is not allowed."""
    graph = import_graph(package)
    return [
        " -> ".join(one_cycle(graph, group)) + f"  (all of: {', '.join(sorted(group))})"
        for group in strongly_connected(graph)
        if group not in ALLOWED_CYCLES
    ]


@pytest.mark.parametrize("package", ["durabletask", "sidecar"])
def test_no_import_cycles(package: str) -> None:
    cycles = describe_cycles(package)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_allowed_cycles_still_exist() -> None:
    found = set(strongly_connected(import_graph("durabletask"))) | set(strongly_connected(import_graph("sidecar")))
    stale = [sorted(group) for group in ALLOWED_CYCLES if group not in found]
    assert not stale, f"allowed cycles that are gone (remove them from ALLOWED_CYCLES): {stale}"


def test_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    # The analysis itself: a cycle hidden in a function and a relative import are both found.
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert strongly_connected(graph) == [frozenset({"p.a", "p.b", "p.c"})]
    assert one_cycle(graph, frozenset({"p.a", "p.b", "p.c"})) == ["p.a", "p.b", "p.c", "p.a"]
    source = tmp_path / "a.py"
    source.write_text("def f():\n    from . import b\n    from .c import thing\n", encoding="utf-8")
    assert set(imported_modules("p.a", source, {"p.a", "p.b", "p.c"})) == {"p.b", "p.c"}
