"""environment.yml (conda, for JupyterHub/Binder) must mirror pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PYPI = {"pysoundfile": "soundfile", "pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "nodejs"}  # the interpreter and build-time tools, not Python packages


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    requirements = [Requirement(line) for line in lines]
    return {_normalise(r.name): r.specifier for r in requirements}


def environment_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, SpecifierSet] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                if line.startswith("-e"):
                    continue
                requirement = Requirement(line)
                found[_normalise(requirement.name)] = requirement.specifier
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.strip())
        name, spec = match.group(1), match.group(2).replace(" ", "")
        if name in CONDA_ONLY:
            continue
        found[_normalise(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec)
    return found


def test_same_packages():
    pyproject, environment = pyproject_requirements(), environment_requirements()
    assert sorted(set(pyproject) - set(environment)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(environment) - set(pyproject)) == [], "in environment.yml but not in pyproject.toml"


def test_same_version_ranges():
    pyproject, environment = pyproject_requirements(), environment_requirements()
    mismatched = {
        name: (str(pyproject[name]), str(environment[name]))
        for name in pyproject
        if name in environment and pyproject[name] != environment[name]
    }
    assert mismatched == {}


def test_required_pins():
    pyproject = pyproject_requirements()
    assert "2.11.0" in pyproject["torch"] and "2.12.0" not in pyproject["torch"]
    assert "2.11.3" in pyproject["torchaudio"]
    assert "5.17.0" in pyproject["transformers"] and "6.0" not in pyproject["transformers"]
    assert "1.0.4.post1" in pyproject["jupyter-book"] and "2.0.0" not in pyproject["jupyter-book"]
    for name in ["jupytext", "papermill", "nbval", "pytest", "scipy", "networkx", "seaborn", "soundfile", "tqdm"]:
        assert name in pyproject, name
