"""Static import graph of the package, imports inside functions included.

Usage: python tools/import_graph.py [--cycles] [--ui]
Prints cycles (strongly connected components with more than one module) and, for --ui, every
module outside ``freeze_widgets/ui`` that imports a widget library or the UI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "freeze_widgets"
WIDGET_LIBRARIES = ("ipywidgets", "anywidget", "IPython", "traitlets")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, here: str, is_package: bool) -> set[str]:
    """Every module an import statement names, resolved to absolute dotted names."""
    package = here if is_package else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def build_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        names = imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in files and n != name} | {
            n for n in names if n.split(".")[0] in WIDGET_LIBRARIES
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1 (package modules only)."""
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
            if w not in graph:
                continue
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def ui_leaks(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, import) pairs where a module outside ui/ reaches a widget library or the UI."""
    ui = f"{PACKAGE}.ui"
    return sorted(
        (module, target)
        for module, targets in graph.items()
        if not (module == ui or module.startswith(ui + "."))
        for target in targets
        if target.split(".")[0] in WIDGET_LIBRARIES or target == ui or target.startswith(ui + ".")
    )


def main() -> int:
    graph = build_graph(Path(__file__).resolve().parent.parent)
    bad = False
    for component in cycles(graph):
        bad = True
        print("cycle:", " <-> ".join(component))
    for module, target in ui_leaks(graph):
        bad = True
        print(f"ui import outside ui/: {module} -> {target}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
