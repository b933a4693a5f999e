"""No import cycle among sam3dlib's modules, counting deferred (in-function) and type-only imports too.

A cycle hidden by moving one import into a function still ties the two modules together; the
layers (docs/DESIGN.md) allow deferring an import only for an optional or heavy outside package.
Implicit parent-package imports (importing ``a.b.c`` runs ``a/b/__init__``) are not edges.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sam3dlib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The sam3dlib modules ``path`` imports anywhere (in functions and ``if TYPE_CHECKING`` too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    out.add(target)
                elif base in modules:
                    out.add(base)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    modules = {"sam3dlib.x": tmp_path / "x.py", "sam3dlib.y": tmp_path / "y.py"}
    (tmp_path / "x.py").write_text("from sam3dlib.y import f\n")
    (tmp_path / "y.py").write_text("def f():\n    from sam3dlib import x\n    return x\n")
    graph = {n: imported(p, n, modules) for n, p in modules.items()}
    assert graph == {"sam3dlib.x": {"sam3dlib.y"}, "sam3dlib.y": {"sam3dlib.x"}}
    assert find_cycles(graph) == [["sam3dlib.x", "sam3dlib.y"]]


def test_no_import_cycle_among_sam3dlib_modules():
    graph = import_graph()
    assert len(graph) > 50 and graph["sam3dlib.modeling.build"]  # the graph is really read
    assert find_cycles(graph) == []
