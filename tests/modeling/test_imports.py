"""The modules of the model and training packages import each other without cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rewardline"
CHECKED = ("rewardline.modeling", "rewardline.training")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules named by every ``import`` / ``from … import`` (lazy ones inside functions
    included), except those under ``if TYPE_CHECKING:``, which never run."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
               for n in ast.walk(node)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of :data:`CHECKED` it imports."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    checked = {m for m in modules if m.startswith(CHECKED) and m not in CHECKED}  # packages' __init__ aside
    return {m: {n for n in _runtime_imports(ast.parse(modules[m].read_text())) if n in checked and n != m}
            for m in checked}


def test_model_and_training_modules_import_without_cycles():
    graph = import_graph()
    assert {"rewardline.modeling.model", "rewardline.modeling.tiny", "rewardline.training.loop"} <= set(graph)
    assert "rewardline.modeling.backbones" in graph["rewardline.modeling.model"]  # the graph sees real imports
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize("first", ["rewardline.modeling.tiny", "rewardline.modeling.backbones",
                                   "rewardline.modeling.model", "rewardline.training.objectives"])
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    result = subprocess.run([sys.executable, "-c", f"import {first}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
