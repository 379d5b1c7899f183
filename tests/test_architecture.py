"""Keeps the one-way flow of data true: io, models and metrics do not import each other;
the CLI commands hold no segmentation logic beyond calling library functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "medseg"

# package -> medseg packages it must never import
FORBIDDEN = {
    "io": {"models", "metrics", "inference", "training", "bundle", "batch", "report", "transforms"},
    "models": {"io", "metrics", "inference", "training", "bundle", "batch", "report", "data"},
    "metrics": {"io", "models", "inference", "training", "bundle", "batch", "report", "transforms"},
    "transforms": {"models", "metrics", "inference", "training", "bundle", "batch", "report"},
    "inference": {"training", "bundle", "batch", "report", "metrics"},
    "data": {"models", "metrics", "inference", "training", "bundle", "batch", "report"},
    "evaluation": {"models", "inference", "training", "bundle", "batch", "report", "transforms"},
    "training": {"bundle", "batch", "report", "evaluation"},
}


def _medseg_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "medseg" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_rule(package):
    bad = []
    for py in sorted((ROOT / package).rglob("*.py")):
        hit = _medseg_imports(py) & FORBIDDEN[package]
        if hit:
            bad.append(f"{py.relative_to(ROOT)} imports medseg.{sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_no_bare_except_or_assert_checks():
    offenders = []
    for py in ROOT.rglob("*.py"):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is None:
                offenders.append(f"{py.relative_to(ROOT)}:{node.lineno} bare except")
            if isinstance(node, ast.Assert):
                offenders.append(f"{py.relative_to(ROOT)}:{node.lineno} assert used as a check")
    assert not offenders, "\n".join(offenders)


def _module_name(py: Path) -> str:
    parts = list(py.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, at module level or inside a function."""
    modules = {_module_name(py): py for py in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, py in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


#: packages whose modules still import each other in a circle (not yet untangled)
_KNOWN_CYCLES = {"batch", "bundle", "classical", "inference", "metrics"}


@pytest.mark.parametrize("package", sorted(p.name for p in ROOT.iterdir()
                                           if (p / "__init__.py").is_file() and p.name not in _KNOWN_CYCLES))
def test_no_import_cycle_inside_a_package(package):
    """No module of a package imports, directly or through others of it, a module that imports it
    back (lazy imports inside functions count: they only hide a cycle)."""
    cycles = _cycles(_import_graph(package))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_known_cycles_are_still_cycles():
    """When one of them is untangled, drop it from _KNOWN_CYCLES so the rule keeps it so."""
    assert all(_cycles(_import_graph(p)) for p in _KNOWN_CYCLES)
