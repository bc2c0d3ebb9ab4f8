"""Size and shape limits of the library (``rewardline/``); the import contracts live in pyproject.toml.

* at most :data:`MAX_TOP_LEVEL_MODULES` ``.py`` files directly under ``rewardline/`` (``__init__`` counts):
  new code goes into a subpackage;
* no module over :data:`MAX_MODULE_LINES` lines;
* no function or method over :data:`MAX_FUNCTION_LINES` lines (``def`` line to last line) unless its
  ``def`` line, or the line above it, carries a comment ``# long: <why>``;
* no import cycle between rewardline modules (grimp's graph: every import, function-level and
  ``TYPE_CHECKING`` ones included, since a type-level cycle still ties the two modules together).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "rewardline"
MAX_TOP_LEVEL_MODULES = 10
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_MARK = re.compile(r"#\s*long:\s*\S")  # `# long: why`, with a reason


def library_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_few_modules_sit_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules in rewardline/ (max {MAX_TOP_LEVEL_MODULES}): {top}"


def test_no_module_is_too_long():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in library_files()}
    too_long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def long_functions(path: Path, root: Path = ROOT) -> dict[str, int]:
    """``{"file:line name": length}`` for functions over the limit that carry no ``# long:`` reason."""
    source = path.read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        marked = any(LONG_MARK.search(lines[i]) for i in (node.lineno - 1, node.lineno - 2) if i >= 0)
        if length > MAX_FUNCTION_LINES and not marked:
            found[f"{path.relative_to(root)}:{node.lineno} {node.name}"] = length
    return found


def test_the_length_check_sees_long_functions_and_honours_a_reason(tmp_path: Path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def plain():\n{body}\n\n\n# long: one table of constants\ndef marked():\n{body}\n")
    assert long_functions(tmp_path / "m.py", root=tmp_path) == {"m.py:1 plain": MAX_FUNCTION_LINES + 1}


def test_no_function_is_too_long_without_a_reason():
    too_long = {name: n for path in library_files() for name, n in long_functions(path).items()}
    assert not too_long, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or put `# long: <why>` on or above "
                          f"the def line): {too_long}")


def import_cycles(graph: grimp.ImportGraph) -> set[tuple[str, ...]]:
    """Each cycle once, as a tuple of modules rotated to start at its smallest name.

    For every direct import a → b, the shortest chain b → … → a closes the shortest cycle through that edge.
    """
    cycles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycle = (importer, *back[:-1])
                start = cycle.index(min(cycle))
                cycles.add(cycle[start:] + cycle[:start])
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == {("p.a", "p.b", "p.c")}


def test_no_import_cycles_between_library_modules():
    cycles = import_cycles(grimp.build_graph("rewardline"))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join((*c, c[0])) for c in sorted(cycles))
