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
