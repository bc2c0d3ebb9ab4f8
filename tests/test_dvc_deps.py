"""Every project source file a DVC stage executes is a dep of that stage, so editing it re-runs the stage.

For each stage in dvc.yaml the stage script named in ``cmd`` is parsed with ``ast`` and its imports
are followed transitively through the project packages (``rewardline``, ``flows``, ``stages``),
function-level imports included. A module ``a.b.c`` also executes ``a/__init__.py`` and
``a/b/__init__.py``, so those count too. A file is covered when it is a dep itself or lies under a
folder dep.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
PROJECT_PACKAGES = ("rewardline", "flows", "stages")
STAGES: dict[str, dict] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(module: str) -> Path | None:
    """The project file that defines ``module`` (package → its ``__init__.py``), or None if not ours."""
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def with_parents(module: str) -> list[str]:
    """``a.b.c`` → ``[a, a.b, a.b.c]``: importing a module runs every enclosing package's ``__init__``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path) -> set[str]:
    """Every module name ``path`` imports anywhere (top level or inside functions), relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.update(with_parents(base))
            # `from pkg import name` imports the submodule pkg.name when there is one.
            found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
    return found


def executed_files(script: Path) -> set[Path]:
    """The stage script plus every project file reachable from it through imports."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for m in imported_modules(path) if (f := module_file(m)) is not None)
    return seen


def stage_script(stage: dict) -> Path:
    argv = shlex.split(stage["cmd"])
    scripts = [a for a in argv if a.endswith(".py")]
    assert len(scripts) == 1, f"cmd {stage['cmd']!r}: expected exactly one .py script to follow imports from"
    return ROOT / scripts[0]


def dep_paths(stage: dict) -> list[Path]:
    return [ROOT / (d if isinstance(d, str) else next(iter(d))) for d in stage.get("deps", [])]


def is_covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or (dep.is_dir() and path.is_relative_to(dep)) for dep in deps)


def test_the_import_walk_finds_function_level_and_package_imports():
    """Guards the walker itself: a stage known to import lazily must show those files."""
    files = {str(p.relative_to(ROOT)) for p in executed_files(ROOT / "stages" / "evaluate.py")}
    assert {"stages/evaluate.py", "rewardline/__init__.py", "rewardline/evaluation/__init__.py",
            "rewardline/evaluation/plots.py", "rewardline/modeling/device.py"} <= files


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_executed_source_file_is_a_dep_of_its_stage(name: str):
    stage = STAGES[name]
    deps = dep_paths(stage)
    source_deps = [d for d in deps if d.relative_to(ROOT).parts[0] in PROJECT_PACKAGES]
    missing = [str(d.relative_to(ROOT)) for d in source_deps if not d.exists()]
    assert not missing, f"stage {name}: source deps that do not exist (renamed or moved?): {missing}"
    uncovered = sorted(str(f.relative_to(ROOT)) for f in executed_files(stage_script(stage)) if not is_covered(f, deps))
    assert not uncovered, f"stage {name}: imported but not a dep in dvc.yaml (edits would not re-run it): {uncovered}"
