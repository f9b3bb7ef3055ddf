"""The import structure of the package, from a scan of every import statement (module-level and
inside functions, absolute and relative): the library never imports the application package
``register.app``, and no module imports, directly or through others, a module that imports it
back (no import cycle between modules, and none between the library's top-level packages)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "register"
APP = "register.app"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module file an import of ``name`` runs: ``name`` itself, or for ``from pkg import obj``
    the longest prefix that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over ``register`` (edges to outside packages dropped)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from pkg import sub`` imports the submodule pkg.sub when there is one.
                names = [f"{stem}.{a.name}" for a in node.names] + [stem]
            else:
                continue
            for n in names:
                if n.split(".")[0] == "register":
                    target = _resolve(n, modules)
                    if target and target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    """The top-level package (``register.io``) or module (``register.pipeline``) of a module."""
    return ".".join(module.split(".")[:2])


def test_the_scan_sees_imports_inside_functions():
    graph = import_graph()
    # register.app.run imports the pipeline inside a function only.
    assert "register.pipeline" in graph["register.app.run"]
    assert "register.app.cli" in graph["register.__main__"]


def test_the_library_never_imports_the_application():
    upward = sorted(
        f"{a} -> {b}"
        for a, bs in import_graph().items()
        if not a.startswith(APP) and a != "register.__main__"
        for b in bs
        if b.startswith(APP)
    )
    assert not upward, "library modules import the application package:\n" + "\n".join(upward)


def test_no_module_is_part_of_an_import_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_cycle_between_the_top_level_packages():
    packages: dict[str, set[str]] = {}
    for a, bs in import_graph().items():
        packages.setdefault(_package(a), set()).update(_package(b) for b in bs if _package(b) != _package(a))
    cycles = _cycles(packages)
    assert not cycles, "cycles between packages:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"a"}}, [["a", "b"]]), ({"a": {"b"}, "b": {"c"}, "c": set()}, [])],
)
def test_the_cycle_finder(graph, expected):
    assert _cycles(graph) == expected
