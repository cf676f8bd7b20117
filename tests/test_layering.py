"""The package's layers: every module imports only modules below it, at its top.

The order (lowest first) is data -> models -> extract -> convexity -> prune/finetune -> compare ->
pipeline -> book, with the pure helpers at the bottom and the command line on top. An import
inside a function is allowed only where a ``# here, not at the top: <why>`` comment (on its line
or the line before) names the cycle it breaks or the cost it avoids.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convexlab"

# lowest first; a module may import (at its top) only modules of a strictly lower layer
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_progress", "cache", "profiles", "families", "_argtypes", "distributed", "_espeak_worker", "_knn", "_paths",
     "reported", "recipes"),
    ("synth",),  # the corpora generators: data builds on them
    ("spoken",),
    ("data",),
    ("models", "objectives"),
    ("pretrain",),  # builds on models.miniature_config; models reaches it lazily (see models.py)
    ("extract", "prune"),
    ("convexity", "timing"),
    ("finetune", "tables"),  # tables: pure reshaping of the experiments' tables (convexity, timing)
    ("compare", "toys", "parallel"),  # parallel: finetune runs side by side, for frontier and pipeline
    ("frontier",),
    ("plots",),
    ("pipeline",),
    ("book",),
    ("rehearsal",),
    ("cli",),
    ("__init__", "__main__"),
)
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}
MARK = "# here, not at the top:"


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _convexlab_targets(node: ast.AST) -> list[str]:
    """The convexlab modules an import statement reaches ("convexlab" itself as "__init__")."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "convexlab":
            return [a.name for a in node.names]  # from convexlab import compare, distributed
        names = [node.module]
    else:
        return []
    return [name.split(".")[1] if "." in name else "__init__" for name in names
            if name == "convexlab" or name.startswith("convexlab.")]


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports executed when the module is imported: module body, and inside its if/try blocks."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return found


def test_every_module_has_a_layer():
    missing = sorted(p.stem for p in _modules() if p.stem not in RANK)
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"
    gone = sorted(set(RANK) - {p.stem for p in _modules()})
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_top_level_imports_go_down_the_layers(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    upward = []
    for node in _top_level_imports(tree):
        for target in _convexlab_targets(node):
            if target in RANK and RANK[target] >= RANK[path.stem]:
                upward.append(f"line {node.lineno}: {path.stem} (layer {RANK[path.stem]}) imports "
                              f"{target} (layer {RANK[target]})")
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_imports_inside_functions_say_why(path: Path):
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    top = {id(node) for node in _top_level_imports(tree)}
    unexplained = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top and _convexlab_targets(node):
            here = lines[node.lineno - 1]
            before = lines[node.lineno - 2] if node.lineno >= 2 else ""
            if MARK not in here and MARK not in before:
                unexplained.append(f"line {node.lineno}: {here.strip()}")
    assert not unexplained, (f"imports inside functions without a '{MARK} <why>' comment (move them to the "
                             "top, or name the cycle or cost):\n" + "\n".join(unexplained))
