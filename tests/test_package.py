"""The package as a newcomer meets it: every module says what it exports, one version string, and
one home for each shared constant (dtype names, the sample rate, the task list).

The "one home" checks read the source (AST), so that a second copy of a constant fails here
instead of drifting silently from the first.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import tomllib
from pathlib import Path

import pytest
import torch

import convexlab
from convexlab import cli, families, models, timing

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "convexlab"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def _tree(stem: str) -> ast.Module:
    path = PACKAGE / f"{stem}.py"
    return ast.parse(path.read_text(), filename=str(path))


# -- __all__ -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", MODULES)
def test_every_module_declares_its_exports(stem):
    assigned = [node for node in _tree(stem).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                and any(isinstance(t, ast.Name) and t.id == "__all__"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert assigned, f"convexlab/{stem}.py has no __all__"
    module = importlib.import_module("convexlab" if stem == "__init__" else f"convexlab.{stem}")
    names = list(module.__all__)
    assert len(names) == len(set(names)), f"{stem}.__all__ lists a name twice"
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == [], f"{stem}.__all__ lists names the module does not have: {missing}"


def test_the_curated_api_is_exactly_what_init_imports():
    """Everything ``convexlab/__init__.py`` imports is public and listed, and nothing else is."""
    imported = set()
    for node in _tree("__init__").body:
        if isinstance(node, ast.ImportFrom):
            imported.update(alias.asname or alias.name for alias in node.names)
    assert set(convexlab.__all__) == imported | {"__version__"}
    # the library's one pruning rule is part of the curated API
    assert {"best_layer", "pruning_depth"} <= set(convexlab.__all__)


# -- the version ---------------------------------------------------------------------------------


def test_the_version_lives_in_the_package_and_pyproject_reads_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml must not hold a second version string"
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "convexlab.__version__"
    # what the build backend will write into the metadata, read the way it reads it
    from setuptools.config.expand import read_attr

    assert read_attr(attr, root_dir=ROOT) == convexlab.__version__


def test_installed_metadata_agrees_with_the_package():
    try:
        installed = importlib.metadata.version("convexlab")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("convexlab is not installed (only on PYTHONPATH)")
    assert installed == convexlab.__version__, "reinstall: `pip install -e .` (or `make venv`)"


# -- one home per constant ---------------------------------------------------------------------


def _int_constants(tree: ast.AST, value: int) -> list[int]:
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value == value]


def _string_sequences(tree: ast.AST, wanted: set[str]) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            if {e.value for e in node.elts} == wanted:
                found.append(node.lineno)
    return found


def test_the_sample_rate_is_written_once():
    where = {stem: _int_constants(_tree(stem), 16_000) for stem in MODULES}
    where = {stem: lines for stem, lines in where.items() if lines}
    assert where == {"families": where.get("families", [])} and len(where["families"]) == 1, where
    assert families.CLIP_SAMPLES == families.SAMPLE_RATE  # clips are one second
    from convexlab import data, spoken, synth

    assert data.CLIP_SAMPLES is synth.CLIP_SAMPLES is spoken.CLIP_SAMPLES is families.CLIP_SAMPLES


def test_the_task_list_is_written_once():
    where = {stem: _string_sequences(_tree(stem), {"word", "speaker"}) for stem in MODULES}
    where = {stem: lines for stem, lines in where.items() if lines}
    assert list(where) == ["families"] and len(where["families"]) == 1, where
    extract = cli.build_parser()._subparsers._group_actions[0].choices["extract"]
    task = next(a for a in extract._actions if a.dest == "task")
    assert tuple(task.choices) == families.TASKS


def test_dtype_names_are_parsed_in_one_place():
    dtype_maps = []
    for stem in MODULES:
        for node in ast.walk(_tree(stem)):
            if isinstance(node, ast.Dict) and {getattr(k, "value", None) for k in node.keys} >= {"float32", "bfloat16"}:
                dtype_maps.append((stem, node.lineno))
    assert [stem for stem, _ in dtype_maps] == ["models"], dtype_maps
    assert not hasattr(timing, "resolve_dtype"), "timing parses dtypes through convexlab.models.torch_dtype"
    extract = cli.build_parser()._subparsers._group_actions[0].choices["extract"]
    dtype = next(a for a in extract._actions if a.dest == "dtype")
    assert list(dtype.choices) == list(models.DTYPES)


@pytest.mark.parametrize("spelling, expected", [
    ("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16),
    ("torch.bfloat16", torch.bfloat16), (torch.float16, torch.float16),
])
def test_torch_dtype_accepts_names_and_dtypes(spelling, expected):
    assert models.torch_dtype(spelling) is expected
    assert models.dtype_name(spelling) == str(expected).removeprefix("torch.")


@pytest.mark.parametrize("bad", ["float8", "fp16", "", torch.float64, torch.int8])
def test_torch_dtype_names_the_accepted_dtypes(bad):
    with pytest.raises(ValueError, match=r"Unsupported dtype .*use one of \['float32', 'bfloat16', 'float16'\]"):
        models.torch_dtype(bad)
