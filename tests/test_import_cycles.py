"""No import cycles in bridge/ and connectors/.

Every import counts: at the top of a module, under ``if TYPE_CHECKING:`` (a
type is a dependency too) and inside functions (a lazy import is a
dependency taken later). Importing ``a.b.c`` also runs the packages ``a.b``
and ``a``, so an import depends on those packages as well, unless the
importer lives inside them. A lazy import that must close a cycle goes into
LAZY_CYCLE_EDGES with the reason; today there is none.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bridge", "connectors")

# (importer, imported) -> why this lazy import may close a cycle.
LAZY_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, whether it is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The dotted names an import statement may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    pending: list[tuple[ast.AST, bool]] = [(tree, False)]
    while pending:
        node, lazy = pending.pop()
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, inner))
            pending.append((child, inner))
    return found


def import_graph(
    root: Path = ROOT, packages: tuple[str, ...] = PACKAGES
) -> dict[str, dict[str, bool]]:
    """importer -> {imported: whether every import of it is inside a function}."""
    known = modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, bool]] = {}
    for name, (path, is_package) in known.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: dict[str, bool] = {}
        for statement, lazy in _imports(ast.parse(path.read_text(), str(path))):
            for target in filter(None, map(resolve, _imported(statement, package))):
                # importing a.b.c runs the packages a and a.b first
                parts = target.split(".")
                for depth in range(1, len(parts) + 1):
                    dep = ".".join(parts[:depth])
                    if dep != name and not name.startswith(dep + ".") and dep in known:
                        edges[dep] = edges.get(dep, True) and lazy
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_there_are_no_import_cycles() -> None:
    graph = import_graph()
    for (importer, imported), reason in LAZY_CYCLE_EDGES.items():
        assert reason and graph[importer].get(imported) is True, (importer, imported)
        del graph[importer][imported]
    problems = [
        " <-> ".join(component)
        + ": "
        + "; ".join(
            f"{a} imports {b}{' (lazily)' if graph[a][b] else ''}"
            for a in component
            for b in sorted(graph[a])
            if b in component
        )
        for component in cycles(graph)
    ]
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    # The checker itself, on a package of its own: a top-level, a TYPE_CHECKING,
    # a lazy and a relative import are all edges; a submodule's import runs its package.
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg import top\n")
    (pkg / "sub" / "leaf.py").write_text("")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from pkg import typed\n"
        "if TYPE_CHECKING:\n    from pkg.lazy import X\n"
        "def f():\n    from . import only_lazy\n"
    )
    for name in ("typed", "lazy", "only_lazy"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "user.py").write_text("import pkg.sub.leaf\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.top"] == {
        "pkg.typed": False,
        "pkg.lazy": False,
        "pkg.only_lazy": True,
    }
    assert graph["pkg.user"] == {"pkg.sub": False, "pkg.sub.leaf": False}
    assert cycles(graph) == []
    # a lazy import closes a cycle as well as a top-level one does
    (pkg / "only_lazy.py").write_text("from pkg import top\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.only_lazy", "pkg.top"]]
    assert cycles({"a": {"b": False}, "b": {"c": True}, "c": {"a": False}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": False}, "b": {}}) == []


def test_leads_and_the_store_share_values_through_models_only() -> None:
    graph = import_graph()
    assert graph["bridge.leads"]["bridge.models"] is False
    assert not any(m.startswith("bridge.store") for m in graph["bridge.leads"])
