"""No import cycles inside ``optimum_hierarchy``.

The graph is read from the source with :mod:`ast`, without importing anything. Its edges are the
package's own imports that run when a module is imported: ``import`` and ``from ... import``
statements at module level (also inside module-level ``if`` / ``try`` / ``with`` blocks and class
bodies), relative ones resolved, and ``from package import submodule`` counted as an import of the
submodule. Importing ``a.b.c`` runs the ``__init__.py`` of ``a`` and ``a.b`` first, so the module
imported and every package above it are edges, the importing module's own package included.

Not edges: imports inside functions (they run when the function is called, not at import time) and
imports under ``if TYPE_CHECKING:`` (they never run).

A cycle means that some module runs before the modules it needs have finished, and that no module
of the cycle can be imported, tested or understood without the others.

The layers are checked a second time with every import written in a module (``every=True``): inside
functions and under ``if TYPE_CHECKING:`` too, each edge going to the module the statement names (not to
the packages above it, whose ``__init__`` runs first only at run time). A cycle there is one that was
hidden by moving an import into a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import collections
import importlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

import optimum_hierarchy

PACKAGE = optimum_hierarchy.__name__
ROOT = Path(optimum_hierarchy.__file__).parent

HOW_TO_BREAK = (
    "Break each cycle by moving what both sides need one floor down: result types and shared helpers into a "
    "light module that imports neither side (as optimum_hierarchy/cli/common.py holds what the commands share). "
    "A package's __init__.py that re-exports its submodules does so lazily, with a module __getattr__ "
    "(see optimum_hierarchy/__init__.py), or it is in a cycle with every submodule that imports a sibling. "
    "Move an import into a function only when it is optional or heavy (torch, optimum-onnx, onnxruntime), "
    "never just to hide a cycle."
)


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name (its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(body: Sequence[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported."""
    for statement in body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            yield statement
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue  # runs when called
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from import_time_imports(statement.orelse)  # the body never runs
        else:  # if / for / while / with / try / match / class bodies run at import time
            for field in ("body", "orelse", "finalbody"):
                yield from import_time_imports(getattr(statement, field, []))
            for part in (*getattr(statement, "handlers", ()), *getattr(statement, "cases", ())):
                yield from import_time_imports(part.body)


def every_import(body: Sequence[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement written in ``body``, wherever it stands (functions, ``TYPE_CHECKING``)."""
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node


def import_graph(
    modules: Mapping[str, Path], package: str = PACKAGE, *, every: bool = False
) -> dict[str, dict[str, int]]:
    """``graph[a][b]``: the line of ``a`` whose execution imports ``b`` (a module of ``modules``).

    ``every``: the line of ``a`` that names ``b`` in any import statement (see the module docstring).
    """
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}

    def add(source: str, target: str, line: int) -> None:
        if every:
            if target in modules and target != source:
                graph[source].setdefault(target, line)
            return
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # a.b.c runs a/__init__.py and a/b/__init__.py first
            name = ".".join(parts[:i])
            if name in modules and name != source:
                graph[source].setdefault(name, line)

    statements = every_import if every else import_time_imports
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for statement in statements(tree.body):
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    add(source, alias.name, statement.lineno)
                continue
            if statement.level:
                base = source.split(".") if is_package else source.split(".")[:-1]
                base = base[: len(base) - (statement.level - 1)]
                target = ".".join([*base, statement.module] if statement.module else base)
            else:
                target = statement.module or ""
            if target != package and not target.startswith(package + "."):
                continue
            submodules = [f"{target}.{a.name}" for a in statement.names if f"{target}.{a.name}" in modules]
            if not (every and len(submodules) == len(statement.names)):  # names the package's own names
                add(source, target, statement.lineno)
            for submodule in submodules:  # from package import submodule
                add(source, submodule, statement.lineno)
    return graph


def strongly_connected(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: Mapping[str, Mapping[str, int]], component: Sequence[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first, inside the component)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node]):
            if successor not in members:
                continue
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(graph: Mapping[str, Mapping[str, int]], component: Sequence[str]) -> str:
    cycle = shortest_cycle(graph, component)
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return f"cycle of {len(component)} modules ({', '.join(component)}):\n    " + "\n    ".join(steps)


def test_no_import_cycles() -> None:
    modules = module_files()
    graph = import_graph(modules)
    assert len(modules) > 20 and f"{PACKAGE}.cli.hierarchy" in modules  # the walk found the package
    assert f"{PACKAGE}.schema" in graph[f"{PACKAGE}.passes.attribute_nodes"]  # and its imports
    cycles = [describe(graph, c) for c in strongly_connected(graph)]
    assert not cycles, "import cycles in optimum_hierarchy:\n  " + "\n  ".join(cycles) + "\n" + HOW_TO_BREAK


def test_no_cycles_counting_every_import() -> None:
    """Not even through an import inside a function or under ``TYPE_CHECKING``."""
    modules = module_files()
    graph = import_graph(modules, every=True)
    assert f"{PACKAGE}.tools.profile" in graph[f"{PACKAGE}.cli.profile"]  # a function-level import is an edge
    cycles = [describe(graph, c) for c in strongly_connected(graph)]
    assert not cycles, "import cycles in optimum_hierarchy:\n  " + "\n  ".join(cycles) + "\n" + HOW_TO_BREAK


def test_the_graph_has_the_edges_that_run_and_no_others(tmp_path: Path) -> None:
    """A planted package: which imports are edges, and the cycle they make."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": (
            "from typing import TYPE_CHECKING\n"
            "from . import b\n"
            "if TYPE_CHECKING:\n    from pkg import c\n"
            "def f():\n    import pkg.d\n"
        ),
        "b.py": "try:\n    from .sub.e import x\nexcept ImportError:\n    x = None\n",
        "c.py": "",
        "d.py": "import pkg.a\n",
        "sub/__init__.py": "from pkg.sub import e\n",
        "sub/e.py": "class K:\n    from ..a import f\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    modules = module_files(root, "pkg")
    graph = import_graph(modules, "pkg")
    assert graph["pkg.a"] == {"pkg": 2, "pkg.b": 2}  # not pkg.c (TYPE_CHECKING), not pkg.d (in a function)
    assert graph["pkg.b"] == {"pkg": 2, "pkg.sub": 2, "pkg.sub.e": 2}  # the packages' __init__ run first
    assert graph["pkg.sub"] == {"pkg": 1, "pkg.sub.e": 1}
    assert graph["pkg.sub.e"] == {"pkg": 2, "pkg.a": 2}
    assert graph["pkg.d"] == {"pkg": 1, "pkg.a": 1}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.e"]]
    assert shortest_cycle(graph, ["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.e"]) == ["pkg.a", "pkg.b", "pkg.sub.e", "pkg.a"]
    every = import_graph(modules, "pkg", every=True)
    assert every["pkg.a"] == {"pkg.b": 2, "pkg.c": 4, "pkg.d": 6}  # TYPE_CHECKING and the function count
    assert every["pkg.b"] == {"pkg.sub.e": 2}  # only the module named, not the packages above it
    assert every["pkg.d"] == {"pkg.a": 1}
    assert strongly_connected(every) == [["pkg.a", "pkg.b", "pkg.d", "pkg.sub.e"]]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("optimum_hierarchy", marks=pytest.mark.optimum_onnx),
        "optimum_hierarchy.annotation",
        "optimum_hierarchy.evidence",
        "optimum_hierarchy.passes",
        "optimum_hierarchy.trees",
        pytest.param("optimum_hierarchy.exporters", marks=pytest.mark.optimum_onnx),
    ],
)
def test_lazy_package_exports_resolve(name: str) -> None:
    """Packages that re-export lazily (to stay out of cycles) still give every name they list."""
    from generation_cases import has_transformers_exporters

    from optimum_hierarchy.errors import MissingExtraError

    package = importlib.import_module(name)
    assert package.__all__
    for attribute in package.__all__:
        if attribute == "HierarchyOnnxExporter" and not has_transformers_exporters():
            with pytest.raises(MissingExtraError, match="pip install"):  # says what to install
                getattr(package, attribute)
            continue
        assert getattr(package, attribute) is not None, f"{name}.{attribute}"
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name
