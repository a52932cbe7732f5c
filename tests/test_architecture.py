"""The package's dependency direction: no import cycle between squeezebench's packages and top-level modules,
and no task-name string comparisons outside tasks/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "squeezebench"


def _node(module: str) -> str:
    """``squeezebench.methods.gptq`` -> ``methods``; ``squeezebench.runner`` -> ``runner``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only; never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            todo.append(child)


def import_graph() -> dict[str, set[str]]:
    """Package -> packages it imports (module level and inside functions alike)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = _node(".".join(rel.parts))
        if me == "__init__" or me == "__main__":
            continue
        deps = graph.setdefault(me, set())
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("squeezebench.") and _node(name) != me:
                    deps.add(_node(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_packages():
    graph = import_graph()
    assert {"methods", "runtimes", "tasks", "measures", "results"} <= set(graph)
    assert cycles(graph) == []


def test_runtimes_never_import_methods_and_results_import_nothing_above():
    graph = import_graph()
    assert "methods" not in graph["runtimes"]
    assert graph["results"] <= {"errors", "atomic"}
    assert not graph["atomic"]  # the one atomic writer is a leaf: anything may use it


def test_task_names_are_not_compared_outside_tasks():
    from squeezebench.tasks import TASKS

    names = [re.escape(name) for name in TASKS]  # every registered task (a plug-in's too), not a list kept here
    assert len(names) >= 7
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](%s)["']|task\.name\s*(==|!=|in\b)""" % "|".join(names))
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "tasks":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert offenders == []
